"""A labelled, seeded history of run features to measure detectors with (`bench/anomaly.py`).

Four pipelines shaped like the demo's investment ones, over `days` days:

- `market_data_ingest` (Airflow): runs after each XNYS close (holidays skipped, early closes run shorter);
  slow drift of +30% a year as the universe grows; occasional single retries that are normal.
- `portfolio_risk` (Airflow): every day at 02:00 UTC; weekend runs price fewer books (a third of the time).
- `eod_reporting` (Airflow): hourly; business hours (13–21 UTC) take 2.5× as long.
- `risk/daily-var` (Prefect): daily, no queue time; a new deployment version every ~90 days changes how
  long it takes (×1.5 or ×0.7), which a baseline must learn again rather than page on.

Noise is multiplicative (about 8% on durations), delays are gamma-distributed seconds. About
`anomaly_rate` of runs get one injected, labelled problem: much slower, suspiciously fast, a late start,
a long queue, a retry storm, or missing tasks. Everything comes from one `random.Random(seed)`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sentinel.calendars import lookup
from sentinel.model import RunState, RunUpdate, TaskUpdate

KINDS = ("slow", "fast", "late_start", "queued", "retries", "missing_tasks")


@dataclass(frozen=True)
class Case:
    run: RunUpdate
    tasks: tuple[TaskUpdate, ...]
    anomaly: str | None  # the injected problem, None for a normal run


@dataclass(frozen=True)
class PipelineSpec:
    source: str
    pipeline: str
    segment_by: tuple[str, ...]  # what the bench's rule segments by for it
    calendar: str | None = None


PIPELINES = (
    PipelineSpec("airflow-prod", "market_data_ingest", ("trading_day",), "XNYS"),
    PipelineSpec("airflow-prod", "portfolio_risk", ("weekend",)),
    PipelineSpec("airflow-prod", "eod_reporting", ("hour",)),
    PipelineSpec("prefect-prod", "risk/daily-var", ()),
)


def generate(seed: int, days: int = 365, anomaly_rate: float = 0.02) -> dict[str, list[Case]]:
    """Runs per pipeline name, oldest first."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return {
        "market_data_ingest": list(_market_data(rng, start, days, anomaly_rate)),
        "portfolio_risk": list(_portfolio_risk(rng, start, days, anomaly_rate)),
        "eod_reporting": list(_eod_reporting(rng, start, days, anomaly_rate)),
        "risk/daily-var": list(_daily_var(rng, start, days, anomaly_rate)),
    }


def _market_data(rng: random.Random, start: datetime, days: int, rate: float) -> Iterator[Case]:
    xnys = lookup({}, "XNYS")
    for i, session in enumerate(xnys.sessions_between(start.date(), (start + timedelta(days=days)).date())):
        drift = 1 + 0.3 * (session.day - start.date()).days / 365
        base = 13 * 60 * drift * (0.8 if session.early_close else 1.0)
        yield _case(
            rng, rate, "airflow-prod", "market_data_ingest", i, session.close + timedelta(minutes=45), base,
            tasks=("extract", "validate", "transform", "load", "publish"), queued=True, retry_rate=0.03,
        )  # fmt: skip


def _portfolio_risk(rng: random.Random, start: datetime, days: int, rate: float) -> Iterator[Case]:
    for i in range(days):
        at = start + timedelta(days=i, hours=2)
        drift = 1 + 0.2 * i / 365
        base = 40 * 60 * drift * (0.3 if at.weekday() >= 5 else 1.0)
        yield _case(
            rng, rate, "airflow-prod", "portfolio_risk", i, at, base,
            tasks=("positions", "prices", "var", "stress", "report"), queued=True, retry_rate=0.01,
        )  # fmt: skip


def _eod_reporting(rng: random.Random, start: datetime, days: int, rate: float) -> Iterator[Case]:
    for i in range(days * 24):
        at = start + timedelta(hours=i)
        base = 4 * 60 * (2.5 if 13 <= at.hour < 21 else 1.0)
        yield _case(
            rng, rate, "airflow-prod", "eod_reporting", i, at, base,
            tasks=("gather", "render", "send"), queued=True, retry_rate=0.01,
        )  # fmt: skip


def _daily_var(rng: random.Random, start: datetime, days: int, rate: float) -> Iterator[Case]:
    version, factor = 1, 1.0
    for i in range(days):
        if i and i % 90 == 0:
            version += 1
            factor *= rng.choice((1.5, 0.7))
        at = start + timedelta(days=i, hours=5)
        yield _case(
            rng, rate, "prefect-prod", "risk/daily-var", i, at, 25 * 60 * factor,
            tasks=("load-book", "simulate", "aggregate"), queued=False, retry_rate=0.02, version=f"v{version}",
        )  # fmt: skip


def _case(
    rng: random.Random,
    rate: float,
    source: str,
    pipeline: str,
    i: int,
    scheduled: datetime,
    base_seconds: float,
    *,
    tasks: tuple[str, ...],
    queued: bool,
    retry_rate: float,
    version: str | None = None,
) -> Case:
    duration = base_seconds * math.exp(rng.gauss(0, 0.08))
    queue = rng.gammavariate(2, 8) if queued else 0.0
    delay = 5 + rng.gammavariate(2, 10) + queue
    tries = {t: 2 if rng.random() < retry_rate else 1 for t in tasks}
    names = list(tasks)
    kind = rng.choice([k for k in KINDS if queued or k != "queued"]) if rng.random() < rate else None
    if kind == "slow":
        duration *= rng.uniform(2.5, 5)
    elif kind == "fast":
        duration *= rng.uniform(0.05, 0.25)
    elif kind == "late_start":
        delay += rng.uniform(15, 90) * 60
    elif kind == "queued":
        extra = rng.uniform(10, 60) * 60
        queue += extra
        delay += extra
    elif kind == "retries":
        for t in rng.sample(names, 2):
            tries[t] += rng.randint(2, 4)
        duration *= 1.2
    elif kind == "missing_tasks":
        names = names[: max(1, len(names) // 2)]
    started = scheduled + timedelta(seconds=delay)
    ended = started + timedelta(seconds=duration)
    run_id = f"{pipeline}-{i}"
    run = RunUpdate(
        source=source,
        pipeline=pipeline,
        run_id=run_id,
        state=RunState.SUCCESS,
        scheduled_for=scheduled,
        queued_at=started - timedelta(seconds=queue) if queued else None,
        started_at=started,
        ended_at=ended,
        updated_at=ended,
        run_type="scheduled",
        version=version,
    )
    task_updates = tuple(
        TaskUpdate(
            source=source,
            pipeline=pipeline,
            run_id=run_id,
            task=t,
            state=RunState.SUCCESS,
            try_number=tries[t],
            started_at=started,
            ended_at=ended,
            updated_at=ended,
        )
        for t in names
    )
    return Case(run, task_updates, kind)
