"""Sentinel's Prometheus metrics. Labels are bounded: no run ids, no timestamps, no free text.

A scrape never queries a scheduler: everything here is updated as facts arrive, and the page is
serialized in a worker thread so a large registry cannot stall the event loop.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

import sentinel

# Buckets suited to HTTP calls against a scheduler (ms to a timeout).
_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Pipeline runs last seconds to hours.
_RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        # `_created` series double the page for no benefit here; drop them.
        from prometheus_client import disable_created_metrics

        disable_created_metrics()
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.build_info = Info("sentinel_build", "Sentinel version.", registry=r)
        self.build_info.info({"version": sentinel.__version__})
        self.source_up = Gauge(
            "sentinel_source_up", "1 if the last poll of the source succeeded.", ["source"], registry=r
        )
        self.source_requests = Counter(
            "sentinel_source_requests_total",
            "Requests made to a scheduler API, by outcome.",
            ["source", "outcome"],
            registry=r,
        )
        self.source_poll_duration = Histogram(
            "sentinel_source_poll_duration_seconds",
            "Wall time of one poll cycle of a source.",
            ["source"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.pipeline_runs = Counter(
            "sentinel_pipeline_runs_total",
            "Finished pipeline runs, by final state.",
            ["source", "pipeline", "state"],
            registry=r,
        )
        self.pipeline_run_duration = Histogram(
            "sentinel_pipeline_run_duration_seconds",
            "Duration of finished pipeline runs.",
            ["source", "pipeline"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.alerts = Gauge(
            "sentinel_alerts",
            "Alert instances by state (pending, firing).",
            ["alertname", "severity", "state"],
            registry=r,
        )
        self.notifications = Counter(
            "sentinel_notifications_total",
            "Notification attempts by receiver and outcome.",
            ["receiver", "outcome"],
            registry=r,
        )
        self.notification_latency = Histogram(
            "sentinel_notification_latency_seconds",
            "Time to deliver one notification, retries included.",
            ["receiver"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.config_last_reload_successful = Gauge(
            "sentinel_config_last_reload_successful", "1 if the last configuration reload succeeded.", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        return await asyncio.to_thread(self.render)
