"""Delivery scheduling and restart safety: what repeat-on-its-own-timer and group persistence cost and buy.

1. Repeat lateness and wake-ups, on a frozen clock over one simulated day: Sentinel's dispatcher (a settled
   group sleeps until its repeat) against the same dispatcher without a notification log to consult, which
   schedules like Alertmanager (wake every group_interval, repeat on the first tick past it).
2. Persistence cost: put N alerts into N groups and write them to SQLite, against the same without a store,
   medians of several runs measured in this invocation. The machine is shared with other agents: absolute
   times wander; the ratio from the same invocation less so.

    python bench/delivery.py [--groups 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel.alerting.alert import Alert
from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.stage import FlushContext
from sentinel.clock import FrozenClock
from sentinel.config import RouteConfig
from sentinel.store import Store

T0 = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)


class Counter:
    kind, name, send_resolved = "webhook", "count", True

    def __init__(self) -> None:
        self.sent: list[datetime] = []

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        self.sent.append(ctx.now)


def alert(i: int) -> Alert:
    return Alert.of({"alertname": "PipelineFailed", "pipeline": f"p{i}"}, starts_at=T0)


async def one_day(with_log: bool, repeat: str, interval: str) -> tuple[list[float], int]:
    clock = FrozenClock(T0)
    rec = Counter()
    nflog = NotificationLog()
    route = Route.build(
        RouteConfig.model_validate(
            {"receiver": "r", "group_by": ["pipeline"], "group_wait": "30s", "group_interval": interval,
             "repeat_interval": repeat}
        )
    )  # fmt: skip
    d = Dispatcher(route, build_pipelines({"r": [rec]}, nflog), clock, nflog=nflog if with_log else None)
    d.put([alert(0)])
    flushes = 0
    while clock.now() < T0 + timedelta(days=1):
        nxt = min(g.next_flush for g in d.groups.values())
        clock.set(max(nxt, clock.now()))
        flushes += await d.flush_due()
    gaps = [(b - a).total_seconds() for a, b in zip(rec.sent, rec.sent[1:], strict=False)]
    return gaps, flushes


async def persist(n: int, with_store: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store(Path(tmp) / "s.db").open() if with_store else None
        route = Route.build(RouteConfig.model_validate({"receiver": "r", "group_by": ["pipeline"]}))
        d = Dispatcher(route, {}, FrozenClock(T0), store=store)
        alerts = [alert(i) for i in range(n)]
        started = time.perf_counter()
        d.put(alerts)
        await d.save()
        elapsed = time.perf_counter() - started
        if store is not None:
            await store.close()
        return elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    print("1. one group firing for a day (group_wait 30s)")
    print(f"{'repeat / interval':>20} {'scheduler':>14} {'repeat gap s (want)':>22} {'flushes/day':>12}")
    for repeat, interval, want in (("4h2m", "5m", 4 * 3600 + 120), ("1h", "7m", 3600), ("4h", "5m", 4 * 3600)):
        for name, with_log in (("alertmanager", False), ("sentinel", True)):
            gaps, flushes = await one_day(with_log, repeat, interval)
            gap = f"{statistics.median(gaps):.0f} ({want})"
            print(f"{repeat + ' / ' + interval:>20} {name:>14} {gap:>22} {flushes:>12}")

    print(f"\n2. put {args.groups} alerts into {args.groups} groups, then save ({args.runs} runs, medians)")
    base = [await persist(args.groups, False) for _ in range(args.runs)]
    disk = [await persist(args.groups, True) for _ in range(args.runs)]
    b, s = statistics.median(base), statistics.median(disk)
    print(f"  in memory only: {b * 1000:.1f} ms   with SQLite: {s * 1000:.1f} ms   ratio {s / b:.1f}x   "
          f"({s / args.groups * 1e6:.0f} µs per group persisted)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
