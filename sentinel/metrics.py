"""Sentinel's Prometheus metrics. Labels are bounded: no run ids, no timestamps, no free text.

A scrape never queries a scheduler: everything here is updated as facts arrive, and the page is
serialized in a worker thread, chunk by chunk, so a large registry cannot stall the event loop. Families
with a series per pipeline use `sentinel.exposition` (fast text, see there); the rest use prometheus_client.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

import sentinel
from sentinel.exposition import CounterFamily, HistogramFamily, Streamed

# Buckets suited to HTTP calls against a scheduler (ms to a timeout).
_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Pipeline runs last seconds to hours.
_RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_ACKED_MAX = 10_000
# Page chunk size: each chunk is encoded (and gzipped) in one call, so this bounds a GIL-holding C call.
CHUNK_BYTES = 64 * 1024


class Registry(CollectorRegistry):
    """prometheus_client's registry, holding every family (so `collect()` and `get_sample_value` see them
    all), which keeps the collectors with their own exposition (`sentinel.exposition.Streamed`) apart: the
    page renders those with their fast path and the rest with `generate_latest`."""

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self.plain = CollectorRegistry(auto_describe=True)
        self.streamed: list[Streamed] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        if isinstance(collector, Streamed):
            self.streamed.append(collector)
        else:
            self.plain.register(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        if any(c is collector for c in self.streamed):
            self.streamed = [c for c in self.streamed if c is not collector]
        else:
            self.plain.unregister(collector)


class Metrics:
    def __init__(self) -> None:
        # `_created` series double the page for no benefit here; drop them.
        from prometheus_client import disable_created_metrics

        disable_created_metrics()
        r = self.registry = Registry()
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
        self.pipeline_runs = CounterFamily(
            "sentinel_pipeline_runs_total", "Finished pipeline runs, by final state.", ["source", "pipeline", "state"]
        )
        r.register(self.pipeline_runs)
        self.pipeline_run_duration = HistogramFamily(
            "sentinel_pipeline_run_duration_seconds",
            "Duration of finished pipeline runs.",
            ["source", "pipeline"],
            buckets=_RUN_BUCKETS,
        )
        r.register(self.pipeline_run_duration)
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
        self.acked: OrderedDict[str, None] = OrderedDict()  # recently acknowledged fingerprints, bounded
        self.config_last_reload_successful = Gauge(
            "sentinel_config_last_reload_successful", "1 if the last configuration reload succeeded.", registry=r
        )
        self.alerts_suppressed = Counter(
            "sentinel_alerts_suppressed_total",
            "Times an alert started being held back from notifications, by reason.",
            ["reason"],  # inhibited | silenced | time_interval
            registry=r,
        )
        for reason in ("inhibited", "silenced", "time_interval"):  # present at 0, so rate() sees the first one
            self.alerts_suppressed.labels(reason)
        # On-call health (docs/metrics.md#on-call-health).
        self.incidents = Counter(
            "sentinel_incidents", "Incidents opened (alerts grouped under one root cause).", registry=r
        )
        self.acknowledgements = Counter(
            "sentinel_acknowledgements", "Alerts acknowledged by a person (API, CLI or a chat action).", registry=r
        )
        self.alerts_resolved = Counter(
            "sentinel_alerts_resolved", "Firing alerts that resolved, by any path.", registry=r
        )
        self.alerts_resolved_unacked_fast = Counter(
            "sentinel_alerts_resolved_unacked_fast",
            "Firing alerts that resolved unacknowledged within their route's group_wait (noise: it paged "
            "for nothing or would have); divide by sentinel_alerts_resolved_total for the noise ratio.",
            registry=r,
        )

    def acknowledged(self, n: int = 1, fingerprints: Iterable[str] = ()) -> None:
        """Count `n` acknowledgements; the acknowledge endpoint / command calls this. Passing the alerts'
        fingerprints keeps them out of `sentinel_alerts_resolved_unacked_fast_total`."""
        self.acknowledgements.inc(n)
        for fp in fingerprints:
            self.acked[fp] = None
            if len(self.acked) > _ACKED_MAX:
                self.acked.popitem(last=False)

    def page(self, gzip: bool = False) -> Iterator[bytes]:
        """The page as chunks of about CHUNK_BYTES (gzip-compressed if asked). Pull it from a worker thread,
        one chunk per `next_chunk`: each family's series are read as they are when it is reached."""
        return _gzipped(self._chunks()) if gzip else self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        yield generate_latest(self.registry.plain)
        buf: list[str] = []
        size = 0
        for collector in list(self.registry.streamed):
            for piece in collector.exposition():
                buf.append(piece)
                size += len(piece)
                if size >= CHUNK_BYTES:
                    yield "".join(buf).encode()
                    buf, size = [], 0
        if buf:
            yield "".join(buf).encode()

    def render(self) -> bytes:
        with _gc_paused:
            return b"".join(self._chunks())

    async def render_async(self) -> bytes:
        return await asyncio.to_thread(self.render)


def next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    """The next chunk of a page, None at its end; call in a worker thread."""
    with _gc_paused:
        return next(chunks, None)


def _gzipped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # Level 1: the page is repetitive enough that it still shrinks ~10x, at a fraction of level 6's CPU.
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        out = z.compress(chunk)
        if out:
            yield out
    yield z.flush()


class _GcPause:
    """No cyclic GC while a page renders. At 10,000 pipelines a page allocates ~10^6 short-lived objects,
    which trigger full collections over the whole heap (the run history): each holds the GIL, so the event
    loop stalls for seconds (bench/kpi.py: 0.6-5 s with GC, 0.2-0.4 s without, on a loaded machine). A
    page makes no reference cycles; anything else allocated meanwhile is collected once it is done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._renders = 0
        self._was_enabled = True

    def __enter__(self) -> None:
        with self._lock:
            if self._renders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._renders += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._renders -= 1
            if self._renders == 0 and self._was_enabled:
                gc.enable()


_gc_paused = _GcPause()
