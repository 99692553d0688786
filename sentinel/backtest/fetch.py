"""Read a stretch of history from every configured source, through the real adapters.

The adapters are the daemon's: they read incrementally from a cursor, a first poll reaching back
`initial_lookback` — here set to the backtest's start — and a catch-up spreading over as many poll cycles
as their per-cycle request budgets need, each request through the source's PoliteClient (its rate limit
and concurrency cap hold, so a backtest never hurts the scheduler). Cycles follow each other at once:
the rate limiter, not poll_interval, sets the pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

import httpx

from adapters.http import PoliteClient
from adapters.registry import adapter_for
from sentinel.clock import Clock
from sentinel.model import PipelineInfo, RunUpdate, SourceSpec, TaskUpdate

MAX_CYCLES = 100_000  # a source that never says it caught up must not loop forever


class FetchError(Exception):
    pass


@dataclass
class SourceHistory:
    source: str
    runs: dict[tuple[str, str], RunUpdate] = field(default_factory=dict)  # (pipeline, run_id) -> newest view
    tasks: dict[tuple[str, str, str], TaskUpdate] = field(default_factory=dict)
    pipelines: dict[str, PipelineInfo] = field(default_factory=dict)
    requests: int = 0
    cycles: int = 0

    def add_run(self, run: RunUpdate) -> None:
        key = (run.pipeline, run.run_id)
        old = self.runs.get(key)
        if old is None or _not_older(run.updated_at, old.updated_at):
            self.runs[key] = run

    def add_task(self, task: TaskUpdate) -> None:
        key = (task.pipeline, task.run_id, task.task)
        old = self.tasks.get(key)
        if old is None or _not_older(task.updated_at, old.updated_at):
            self.tasks[key] = task

    def latest(self) -> datetime | None:
        times = [r.updated_at for r in self.runs.values() if r.updated_at is not None]
        return max(times) if times else None


def _not_older(new: datetime | None, old: datetime | None) -> bool:
    return new is None or old is None or new >= old


Progress = Callable[[str, SourceHistory, float], None]  # source, what is read so far, fraction done


async def fetch_source(
    spec: SourceSpec,
    start: datetime,
    clock: Clock,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Progress | None = None,
) -> SourceHistory:
    now = clock.now()
    lookback = max(now - start, spec.poll_interval)
    polite = spec.model_copy(update={"initial_lookback": lookback})
    client = PoliteClient(polite, transport=transport)
    adapter = adapter_for(spec.kind)(polite, clock, client)
    out = SourceHistory(spec.name)
    cursor: dict[str, object] = {}
    try:
        for _ in range(MAX_CYCLES):
            result = await adapter.poll(cursor)
            out.cycles += 1
            out.requests += result.requests
            if not result.health.reachable:
                raise FetchError(f"source {spec.name} is unreachable: {result.health.error or 'unknown error'}")
            for run in result.runs:
                out.add_run(run)
            for task in result.tasks:
                out.add_task(task)
            for info in (*(result.pipelines or ()), *result.pipelines_partial):
                out.pipelines[info.pipeline] = info
            cursor = result.cursor
            if progress is not None:
                progress(spec.name, out, _fraction(out, start, now, result.caught_up))
            # Twice caught up: the first poll's upper bound is the server's clock to the second (as the daemon).
            if result.caught_up and out.cycles >= 2:
                break
    finally:
        await client.aclose()
    return out


def _fraction(h: SourceHistory, start: datetime, now: datetime, caught_up: bool) -> float:
    if caught_up:
        return 1.0
    latest = h.latest()
    span = (now - start).total_seconds()
    if latest is None or span <= 0:
        return 0.0
    return min(0.99, max(0.0, (latest - start).total_seconds() / span))


class ProgressBar:
    """One line on stderr per source: redrawn in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream: TextIO, tty: bool, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = tty
        self.every = every
        self._last = 0.0

    def __call__(self, source: str, h: SourceHistory, fraction: float) -> None:
        done = fraction >= 1.0
        now = time.monotonic()
        if not self.tty and not done and now - self._last < self.every:
            return
        self._last = now
        width = 24
        filled = int(width * fraction)
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"reading {source} [{bar}] {fraction * 100:5.1f}%  {len(h.runs)} runs, {len(h.tasks)} tasks, "
            f"{h.requests} requests"
        )
        self.stream.write(("\r" + line + ("\n" if done else "")) if self.tty else line + "\n")
        self.stream.flush()


async def fetch_all(
    sources: Sequence[SourceSpec],
    start: datetime,
    clock: Clock,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Progress | None = None,
) -> dict[str, SourceHistory]:
    """Every source read concurrently (each under its own rate limit); the first failure fails the backtest."""
    results = await asyncio.gather(
        *(fetch_source(s, start, clock, transport=transport, progress=progress) for s in sources)
    )
    return {h.source: h for h in results}
