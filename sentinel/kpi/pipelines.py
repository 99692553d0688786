"""Pipeline reliability series: runs by state, success ratio by day window, freshness, recovery time, paused.

Counts are updated as runs finish (the daemon calls `run_finished`); values that age with the clock —
freshness, the day windows — are computed when Prometheus scrapes, in the render thread, from a few
numbers per pipeline, so a scrape costs the loop nothing and a value is never a tick stale. The page text
of these families comes from `sentinel.exposition` (fast at 10,000+ pipelines).

`sentinel_pipeline_runs_total{state="success"}` and `{state="failed"}` exist at 0 from the moment a
pipeline is first seen (listed, or a run of it read), so `increase()` sees its first run finish rather
than a series appearing at 1.

Everything counted here is saved in the store and restored on start, so `sentinel_pipeline_runs_total`
continues across restarts rather than dropping to 0 (which `rate()` would read as a reset it must
compensate for, and `increase()` over a restart would undercount).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from sentinel.clock import Clock
from sentinel.exposition import GaugeSpec, HistogramFamily, fmt, label_text, pieces
from sentinel.kpi.days import DayTally, day_number, ratios
from sentinel.metrics import Metrics
from sentinel.model import PipelineKey, RunState, RunUpdate
from sentinel.observe.history import History

NAMESPACE = "kpi.pipeline"
# A failure to the next success: minutes (a retry) to days (a weekend).
_RECOVERY_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
ZERO_STATES = ("success", "failed")  # the states whose counters exist before the first run of a pipeline
_LABELS = ("source", "pipeline")
_LAST = GaugeSpec(
    "sentinel_pipeline_last_success_timestamp_seconds", "Unix time at which the newest successful run ended.", _LABELS
)
_FRESH = GaugeSpec(
    "sentinel_pipeline_freshness_seconds",
    "Seconds since the newest successful run ended (now minus last success).",
    _LABELS,
)
_RATIO = GaugeSpec(
    "sentinel_pipeline_success_ratio",
    "Successful / (successful + failed or crashed) runs that ended in the last N UTC days, "
    "today included. Absent when no run ended in the window.",
    (*_LABELS, "window"),
)
_PAUSED = GaugeSpec("sentinel_pipeline_paused", "1 if the DAG / deployment is paused in its scheduler.", _LABELS)


@dataclass(slots=True)
class PipelineTally:
    runs: dict[str, int] = field(default_factory=dict)  # state -> finished runs, since Sentinel first saw it
    last_success: float | None = None  # end of the newest success, unix seconds
    failing_since: float | None = None  # end of the first failure not yet followed by a success
    days: DayTally = field(default_factory=DayTally)  # (successes, failures) by the day runs ended

    def dump(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "last_success": self.last_success,
            "failing_since": self.failing_since,
            "days": self.days.dump(),
        }

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> PipelineTally:
        return cls(
            runs={str(k): int(v) for k, v in (d.get("runs") or {}).items()},
            last_success=d.get("last_success"),
            failing_since=d.get("failing_since"),
            days=DayTally.load(d.get("days")),
        )


def key_of(k: PipelineKey) -> str:
    return f"{k.source}\t{k.pipeline}"


class PipelineKpis:
    def __init__(self, metrics: Metrics, clock: Clock, history: History) -> None:
        self.metrics = metrics
        self.clock = clock
        self.history = history
        self.tallies: dict[PipelineKey, PipelineTally] = {}
        self.dirty: set[PipelineKey] = set()
        self.recovery = HistogramFamily(
            "sentinel_pipeline_recovery_seconds",
            "From a pipeline's first failed run to its next successful run (the input of MTTR).",
            _LABELS,
            buckets=_RECOVERY_BUCKETS,
        )
        metrics.registry.register(self.recovery)
        metrics.registry.register(self)
        self._labels: dict[PipelineKey, str] = {}  # escaped label text, made once per pipeline
        self._seen: set[PipelineKey] = set()  # pipelines whose zero counters exist

    def see_pipelines(self) -> None:
        """Create the zero counters of pipelines the history learnt of since the last call. The history
        never forgets a pipeline, so an unchanged count means nothing new (a dict length, per poll)."""
        if len(self._seen) == len(self.history.pipelines):
            return
        for key in list(self.history.pipelines):
            self._see(key)

    def _see(self, key: PipelineKey) -> None:
        if key not in self._seen:
            self._seen.add(key)
            for state in ZERO_STATES:
                self.metrics.pipeline_runs.labels(key.source, key.pipeline, state)

    # -- facts -------------------------------------------------------------------------------------
    def run_finished(self, run: RunUpdate) -> None:
        """Count one run that just became terminal (each run once: History reports a run finishing once)."""
        key = run.key
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = PipelineTally()
        self._see(key)
        state = run.state.value
        tally.runs[state] = tally.runs.get(state, 0) + 1
        self.metrics.pipeline_runs.labels(run.source, run.pipeline, state).inc()
        if run.duration_seconds is not None:
            self.metrics.pipeline_run_duration.labels(run.source, run.pipeline).observe(run.duration_seconds)
        ended = run.ended_at or run.updated_at or self.clock.now()
        at = ended.timestamp()
        if run.state is RunState.SUCCESS:
            tally.days.add(day_number(ended), good=True)
            if tally.last_success is None or at > tally.last_success:
                tally.last_success = at
            if tally.failing_since is not None and at >= tally.failing_since:
                self.recovery.labels(run.source, run.pipeline).observe(at - tally.failing_since)
                tally.failing_since = None
        elif run.state.failure:
            tally.days.add(day_number(ended), good=False)
            # A failure older than the last success (a late-read backfill) opens no outage.
            if tally.failing_since is None and (tally.last_success is None or at > tally.last_success):
                tally.failing_since = at
        self.dirty.add(key)

    # -- persistence -------------------------------------------------------------------------------
    def restore(self, saved: Mapping[str, Any]) -> None:
        for k, d in saved.items():
            source, _, pipeline = k.partition("\t")
            tally = self.tallies[PipelineKey(source, pipeline)] = PipelineTally.load(d)
            self._see(PipelineKey(source, pipeline))
            for state, n in tally.runs.items():
                if n > 0:
                    self.metrics.pipeline_runs.labels(source, pipeline, state).inc(n)
        # Pipelines known to the history but not yet tallied (state from before these series existed):
        # their last success is still known.
        for key, ph in self.history.pipelines.items():
            if key in self.tallies:
                continue
            ends = [r.ended_at or r.updated_at for r in ph.runs.values() if r.state is RunState.SUCCESS]
            last = max((e for e in ends if e is not None), default=None)
            if last is not None:
                self.tallies[key] = PipelineTally(last_success=last.timestamp())
                self.dirty.add(key)
        self.see_pipelines()

    def take_changes(self) -> dict[str, Any]:
        changed = {key_of(k): self.tallies[k].dump() for k in self.dirty if k in self.tallies}
        self.dirty.clear()
        return changed

    # -- scrape (render thread) ----------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        for spec in (_LAST, _FRESH, _RATIO, _PAUSED):
            yield spec.family()

    def collect(self) -> Iterator[Metric]:
        """The same values as `exposition`, as metric families (for `registry.collect()`; not the page)."""
        fams = [spec.family() for spec in (_LAST, _FRESH, _RATIO, _PAUSED)]
        for i, key, window, value in self._values():
            labels = [key.source, key.pipeline] if window is None else [key.source, key.pipeline, window]
            fams[i].add_metric(labels, value)
        yield from fams

    def exposition(self) -> Iterator[str]:
        specs = (_LAST, _FRESH, _RATIO, _PAUSED)
        prefixes = [spec.prefix for spec in specs]
        lines: list[list[str]] = [[], [], [], []]
        texts = self._labels
        for i, key, window, value in self._values():
            labels = texts.get(key)
            if labels is None:
                labels = texts[key] = label_text(_LABELS, key)
            if window is not None:
                labels = f'{labels},window="{window}"'
            lines[i].append(f"{prefixes[i]}{labels}}} {fmt(value)}\n")
        for spec, rows in zip(specs, lines, strict=True):
            yield spec.header
            yield from pieces(rows)

    def _values(self) -> Iterator[tuple[int, PipelineKey, str | None, float]]:
        """(family index, pipeline, window, value): 0 last success, 1 freshness, 2 success ratio, 3 paused."""
        now = self.clock.now()
        today, now_ts = day_number(now), now.timestamp()
        # list(): the loop may add a pipeline while this thread iterates.
        for key, tally in list(self.tallies.items()):
            if tally.last_success is not None:
                yield 0, key, None, tally.last_success
                yield 1, key, None, max(0.0, now_ts - tally.last_success)
            for window, value in ratios(tally.days, today):
                yield 2, key, window, value
        for key, ph in list(self.history.pipelines.items()):
            info = ph.info
            if info is not None:
                yield 3, key, None, 1.0 if info.paused else 0.0
