"""The cost ledger: what each finished task and run cost, per pipeline and per day, and the month's forecast.

Charges:
- a task, once, when it reaches a terminal state: its duration in hours × the `per_task_hour` price of the
  first rate matching (source, pipeline, task's pool, task's queue). Airflow gives each task instance's
  pool and queue; Prefect gives the flow run's work pool and work queue. A retried task is charged for the
  attempt that ended it (the duration the scheduler reports).
- a run, once, when it finishes: the `per_run` price of the first matching rate, read with the run's pool
  (Prefect's work pool) or else its first task's pool and queue.

Month to date is the sum of this UTC month's days. The forecast projects it linearly to the end of the
month at the trailing run rate: spend over the last 7 days (or since the ledger's first charge, if more
recent, but never less than one hour) divided by that time, times the time left in the month, plus month to
date. A 7-day trailing rate keeps a quiet weekend or one expensive backfill from swinging the projection,
and works from the first day of a month (which a "month to date ÷ days elapsed" rule does not).

Totals and the per-day amounts (31 days, enough for any month) are saved in the store.
"""

from __future__ import annotations

import calendar as pycal
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from sentinel.clock import Clock, utc
from sentinel.config import CostConfig
from sentinel.cost.rates import run_price, task_hour_price
from sentinel.exposition import CounterFamily
from sentinel.kpi.days import KEEP_DAYS, day_number
from sentinel.metrics import Metrics
from sentinel.model import PipelineKey, RunUpdate, TaskUpdate

NAMESPACE = "kpi.cost"
_DAYS_KEY = "\t__days__"  # a tab cannot start a pipeline key ("source\tpipeline" with a non-empty source)
TRAILING = timedelta(days=7)
_MIN_SPAN = timedelta(hours=1)
_CHARGED_MAX = 100_000


def month_start(now: datetime) -> datetime:
    n = utc(now)
    return datetime(n.year, n.month, 1, tzinfo=UTC)


def month_end(now: datetime) -> datetime:
    n = utc(now)
    return datetime(n.year, n.month, pycal.monthrange(n.year, n.month)[1], tzinfo=UTC) + timedelta(days=1)


class CostLedger:
    def __init__(self, config: CostConfig, metrics: Metrics, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.totals: dict[PipelineKey, float] = {}
        self.days: dict[int, float] = {}  # UTC day ordinal -> dollars charged that day
        self.first_charge: float | None = None  # unix seconds; the forecast's rate needs a known span
        self.dirty: set[PipelineKey] = set()
        self._days_dirty = False
        # (source, pipeline, run_id, task) already charged: a re-read of a finished task must not pay twice.
        self._charged: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()
        # A series per pipeline: rendered by sentinel.exposition's fast path.
        self.dollars = CounterFamily(
            "sentinel_cost_dollars",
            "Cost charged for finished tasks and runs, in the configured currency (cost.currency).",
            ["source", "pipeline"],
        )
        metrics.registry.register(self.dollars)
        metrics.registry.register(self)

    def configure(self, config: CostConfig) -> None:
        """A reload: new rates apply to charges from now on; what was charged stays charged."""
        self.config = config

    # -- charging ----------------------------------------------------------------------------------
    def task_finished(self, task: TaskUpdate) -> float:
        if not task.state.terminal or task.duration_seconds is None:
            return 0.0
        ident = (task.source, task.pipeline, task.run_id, task.task)
        if ident in self._charged:
            return 0.0
        self._charged[ident] = None
        if len(self._charged) > _CHARGED_MAX:
            self._charged.popitem(last=False)
        price = task_hour_price(self.config.rates, task.source, task.pipeline, task.pool, task.queue)
        amount = price * task.duration_seconds / 3600.0
        self._charge(task.key, amount, task.ended_at or self.clock.now())
        return amount

    def run_finished(self, run: RunUpdate, tasks: list[TaskUpdate]) -> float:
        first = next((t for t in tasks if t.pool is not None or t.queue is not None), None)
        pool = run.pool if run.pool is not None else (first.pool if first is not None else None)
        queue = first.queue if first is not None else None
        amount = run_price(self.config.rates, run.source, run.pipeline, pool, queue)
        self._charge(run.key, amount, run.ended_at or run.updated_at or self.clock.now())
        return amount

    def _charge(self, key: PipelineKey, amount: float, at: datetime) -> None:
        if amount <= 0:
            return
        self.totals[key] = self.totals.get(key, 0.0) + amount
        self.dollars.labels(key.source, key.pipeline).inc(amount)
        day = day_number(at)
        self.days[day] = self.days.get(day, 0.0) + amount
        for d in [d for d in self.days if d <= max(self.days) - KEEP_DAYS]:
            del self.days[d]
        ts = at.timestamp()
        if self.first_charge is None or ts < self.first_charge:
            self.first_charge = ts
        self.dirty.add(key)
        self._days_dirty = True

    # -- the month ---------------------------------------------------------------------------------
    def month_to_date(self, now: datetime) -> float:
        start, today = day_number(month_start(now)), day_number(now)
        return sum(v for d, v in list(self.days.items()) if start <= d <= today)

    def forecast(self, now: datetime) -> float:
        mtd = self.month_to_date(now)
        if self.first_charge is None:
            return mtd
        # Day buckets: the window is the 6 whole days before today plus today so far.
        first_day = day_number(now - TRAILING) + 1
        window_start = datetime.fromordinal(first_day).replace(tzinfo=UTC)
        since = max(window_start, datetime.fromtimestamp(self.first_charge, UTC))
        span = max(utc(now) - since, _MIN_SPAN)
        spent = sum(v for d, v in list(self.days.items()) if first_day <= d <= day_number(now))
        left = month_end(now) - utc(now)
        return mtd + spent / span.total_seconds() * left.total_seconds()

    @property
    def budget(self) -> float | None:
        return self.config.monthly_budget

    # -- persistence -------------------------------------------------------------------------------
    def restore(self, saved: Mapping[str, Any]) -> None:
        for k, d in saved.items():
            if k == _DAYS_KEY:
                self.days = {int(day): float(v) for day, v in (d.get("days") or {}).items()}
                self.first_charge = d.get("first_charge")
                continue
            source, _, pipeline = k.partition("\t")
            total = float(d.get("total", 0.0))
            self.totals[PipelineKey(source, pipeline)] = total
            if total > 0:
                self.dollars.labels(source, pipeline).inc(total)

    def take_changes(self) -> dict[str, Any]:
        changed: dict[str, Any] = {f"{k.source}\t{k.pipeline}": {"total": self.totals[k]} for k in self.dirty}
        if self._days_dirty:
            changed[_DAYS_KEY] = {"days": {str(d): v for d, v in self.days.items()}, "first_charge": self.first_charge}
        self.dirty.clear()
        self._days_dirty = False
        return changed

    # -- scrape (render thread) ----------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        mtd, forecast, budget = self._families()
        mtd.add_metric([], self.month_to_date(now))
        forecast.add_metric([], self.forecast(now))
        if self.budget is not None:
            budget.add_metric([], self.budget)
        yield from (mtd, forecast, budget)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("sentinel_cost_month_to_date_dollars", "Cost charged since the start of this UTC month."),
            GaugeMetricFamily(
                "sentinel_cost_month_forecast_dollars",
                "Month to date plus the trailing 7-day run rate projected to the end of this UTC month.",
            ),
            GaugeMetricFamily("sentinel_cost_budget_dollars", "cost.monthly_budget from sentinel.yaml."),
        )
