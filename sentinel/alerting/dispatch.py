"""Routes alerts into aggregation groups and flushes each group on its own timer.

A group's first flush waits `group_wait` (to batch a burst), later flushes come every `group_interval`;
whether a flush actually notifies is the dedup stage's decision, as in Alertmanager. Nothing is flushed
until `ready` is set (every source polled once), so a restart cannot leak an alert that a fuller
picture would have suppressed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loguru import logger

from sentinel.alerting.alert import Alert, fingerprint, labelset
from sentinel.alerting.route import Route
from sentinel.alerting.stage import FlushContext, Stage
from sentinel.clock import Clock

MAX_FLUSHES_IN_FLIGHT = 64


@dataclass
class AggregationGroup:
    key: str
    route: Route
    labels: dict[str, str]
    next_flush: datetime
    alerts: dict[str, Alert] = field(default_factory=dict)
    flushing: bool = False
    flushes: int = 0


class Dispatcher:
    def __init__(self, route: Route, pipelines: Mapping[str, Stage], clock: Clock) -> None:
        self.route = route
        self.pipelines = dict(pipelines)
        self.clock = clock
        self.groups: dict[str, AggregationGroup] = {}
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_FLUSHES_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        # fingerprint -> ends_at of resolutions already flushed; rules keep re-offering resolved alerts
        # for a while, and a flushed resolution must not start a new group.
        self._resolved_done: dict[str, datetime] = {}

    def put(self, alerts: list[Alert]) -> None:
        now = self.clock.now()
        for a in alerts:
            if a.ends_at is not None and self._resolved_done.get(a.fingerprint) == a.ends_at:
                continue
            labels = a.label_map
            for route in self.route.match(labels):
                glabels = route.group_labels(labels)
                gkey = f"{route.key}:{fingerprint(labelset(glabels))}"
                group = self.groups.get(gkey)
                if group is None:
                    wait = route.opts.group_wait
                    # Alertmanager flushes at once when the alert's own group_wait is already over.
                    first = now if a.starts_at is not None and a.starts_at + wait < now else now + wait
                    group = self.groups[gkey] = AggregationGroup(gkey, route, glabels, first)
                group.alerts[a.fingerprint] = a
        self._wake.set()

    def set_routes(self, route: Route, pipelines: Mapping[str, Stage]) -> None:
        self.route = route
        self.pipelines = dict(pipelines)

    async def run(self) -> None:
        await self.ready.wait()
        while True:
            self._wake.clear()
            now = self.clock.now()
            upcoming: datetime | None = None
            for group in list(self.groups.values()):
                if group.flushing:
                    continue
                if group.next_flush <= now:
                    group.flushing = True
                    task = asyncio.create_task(self._flush(group))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif upcoming is None or group.next_flush < upcoming:
                    upcoming = group.next_flush
            timeout = None if upcoming is None else max(0.01, (upcoming - now).total_seconds())
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that arrives just as the
            # event is set, and the daemon's stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _flush(self, group: AggregationGroup) -> None:
        async with self._slots:
            now = self.clock.now()
            alerts = list(group.alerts.values())
            opts = group.route.opts
            ctx = FlushContext(
                now=now,
                group_key=group.key,
                group_labels=group.labels,
                receiver=opts.receiver,
                repeat_interval=opts.repeat_interval,
                deadline=now + max(opts.group_interval, timedelta(seconds=1)),
            )
            ok = False
            try:
                pipeline = self.pipelines.get(opts.receiver)
                if pipeline is None:
                    logger.error("no pipeline for receiver {}", opts.receiver)
                else:
                    await pipeline(ctx, alerts)
                    ok = True
            except Exception as exc:  # one group's failure must not stop the others
                logger.opt(exception=exc).debug("flush of group {} failed", group.key)
            finally:
                self._after_flush(group, alerts, now, ok)

    def _after_flush(self, group: AggregationGroup, sent: list[Alert], now: datetime, ok: bool) -> None:
        group.flushes += 1
        if ok:
            for a in sent:
                if a.resolved_at(now) and group.alerts.get(a.fingerprint) is a:
                    del group.alerts[a.fingerprint]
                    assert a.ends_at is not None
                    self._resolved_done[a.fingerprint] = a.ends_at
        cutoff = now - timedelta(hours=1)
        if len(self._resolved_done) > 10_000:
            self._resolved_done = {k: v for k, v in self._resolved_done.items() if v > cutoff}
        group.next_flush = now + group.route.opts.group_interval
        group.flushing = False
        if not group.alerts:
            self.groups.pop(group.key, None)
        self._wake.set()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
