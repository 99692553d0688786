"""Per-pipeline baselines of run features: bounded, segmented, and reset when the pipeline's version changes.

The rule engine's `History` keeps only the last `max_runs` runs of a pipeline (100 by default), while a
baseline wants hundreds; so a `BaselineStore` remembers the features of every finished run it has seen, up
to `max_samples` per pipeline (task), oldest dropped first. It learns from the history each time a pipeline
changes and lives as long as the `History` it reads (held weakly: a new history, as after a reload or in a
`sentinel test` case, starts afresh). The daemon saves them and loads them back after a restart
(`persist.py`); elsewhere they start from the runs in the history.

A run joins its pipeline's baseline once a newer successful run exists, never while it is the newest: the
newest run is the one being judged (a run never sets its own bar), and by then its tasks have all been read.
"""

from __future__ import annotations

import math
import weakref
from array import array
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from sentinel.anomaly.detectors import ModelCache
from sentinel.anomaly.features import FEATURES, extract
from sentinel.calendars import Calendar
from sentinel.model import RunState, RunUpdate, TaskUpdate
from sentinel.observe.history import History, PipelineHistory, run_order

MAX_SAMPLES = 1000
# Task baselines (only for rules with `tasks:`): fewer runs each, and at most this many tasks per pipeline,
# so a 500-task DAG costs ~1.3 MB rather than 500 pipelines' worth.
MAX_TASK_SAMPLES = 200
MAX_TASKS = 100
_NAN = math.nan


class Baseline:
    """One pipeline's (or task's) newest `max_samples` runs, all of one `version`.

    Stored as columns of doubles in a ring (8 bytes a value, NaN where a run lacks a feature): 500 runs
    cost about 30 KB however many pipelines there are, where Python objects per run would cost ten times that.
    """

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.max_samples = max_samples
        self.version: str | None = None
        # Grows on every change: caches of statistics and fitted models compare it to know they are stale.
        self.generation = 0
        self.next_seq = 0
        self._reset()

    def _reset(self) -> None:
        self.at = array("d")  # epoch seconds of the period each run is for
        # Learning order, never reused (not even across a version reset): "how many runs since the model
        # was fitted" compares these.
        self.seq = array("q")
        self.cols = {f: array("d") for f in FEATURES}
        self.head = 0  # position of the oldest run once the ring is full
        # (segment_by, calendar, tz) -> per position, (seq, segment): a timezone conversion per run per
        # evaluation would dominate the cost of judging a run.
        self.segments: dict[tuple[Any, ...], list[tuple[int, tuple[str, ...]] | None]] = {}

    def __len__(self) -> int:
        return len(self.at)

    def add(self, at: datetime, features: Mapping[str, float], version: str | None) -> None:
        if version is not None and version != self.version:
            # A new DAG/deployment version is a new pipeline as far as its timings go: learn again.
            if len(self):
                self._reset()
            self.version = version
        values = [features.get(f, _NAN) for f in FEATURES]
        if len(self) < self.max_samples:
            self.at.append(at.timestamp())
            self.seq.append(self.next_seq)
            for f, v in zip(FEATURES, values, strict=True):
                self.cols[f].append(v)
        else:
            pos = self.head
            self.head = (pos + 1) % self.max_samples
            self.at[pos] = at.timestamp()
            self.seq[pos] = self.next_seq
            for f, v in zip(FEATURES, values, strict=True):
                self.cols[f][pos] = v
        self.next_seq += 1
        self.generation += 1

    def positions(self) -> list[int]:
        """Ring positions, oldest run first."""
        n = len(self)
        return list(range(self.head, n)) + list(range(self.head)) if self.head else list(range(n))

    def matches(self, version: str | None) -> bool:
        """Whether a run of `version` may be judged against this baseline (unknown versions always may)."""
        return version is None or self.version is None or version == self.version

    def window(self, positions: Sequence[int]) -> Window:
        return Window(self, list(positions))


class Window:
    """Some of a baseline's runs (one segment, the newest `history` of them), oldest first."""

    def __init__(self, baseline: Baseline, positions: list[int]) -> None:
        self.baseline = baseline
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    def newest(self, n: int) -> Window:
        return Window(self.baseline, self.positions[-n:])

    def column(self, feature: str) -> list[float]:
        col = self.baseline.cols[feature]
        return [v for p in self.positions if not math.isnan(v := col[p])]

    def rows(self, features: Sequence[str]) -> list[list[float]]:
        cols = [self.baseline.cols[f] for f in features]
        rows = ([c[p] for c in cols] for p in self.positions)
        return [r for r in rows if not any(math.isnan(v) for v in r)]

    def seqs(self) -> list[int]:
        seq = self.baseline.seq
        return [seq[p] for p in self.positions]


class PipelineBaselines:
    """The baselines of one pipeline: the pipeline's own, and one per task name."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self.runs = Baseline(max_samples)
        self.tasks: dict[str, Baseline] = {}
        # Task baselines cost memory per task: kept only once a rule with `tasks:` asked for them.
        self.learn_tasks = False
        self.seen_version = -1
        self.latest: RunUpdate | None = None  # the newest successful run: the one rules judge
        # Verdicts of rules that cannot use the engine's per-version cache (PyOD: a new model may arrive
        # between two changes of the pipeline): rule key -> ((history version, fits completed), findings).
        self.memo: dict[Any, tuple[Any, Any]] = {}
        # Ids already learned, bounded: a run dropped from the baseline but still in the history must not
        # come back. The history holds at most its max_runs runs, so twice that many recent ids suffice.
        self.learned: dict[str, None] = {}

    def task(self, name: str) -> Baseline | None:
        b = self.tasks.get(name)
        if b is None and len(self.tasks) < MAX_TASKS:
            b = self.tasks[name] = Baseline(MAX_TASK_SAMPLES)
        return b

    def sync(self, ph: PipelineHistory, tasks: bool = False) -> None:
        if tasks and not self.learn_tasks:
            # The first rule judging tasks: start their baselines from the runs the history still holds.
            self.learn_tasks = True
            for run in _done(ph)[:-1]:
                if run.run_id in self.learned:
                    self._learn_tasks(ph, run)
        if ph.version == self.seen_version:
            return
        self.seen_version = ph.version
        done = _done(ph)
        self.latest = done[-1] if done else None
        for run in done[:-1]:
            if run.run_id not in self.learned:
                self._learn(ph, run)

    def _learn(self, ph: PipelineHistory, run: RunUpdate) -> None:
        self.learned[run.run_id] = None
        if len(self.learned) > 2 * ph.max_runs:
            del self.learned[next(iter(self.learned))]
        self.runs.add(sample_time(run), extract(run, ph.tasks_of(run.run_id), volume_of(run)), run.version)
        if self.learn_tasks:
            self._learn_tasks(ph, run)

    def _learn_tasks(self, ph: PipelineHistory, run: RunUpdate) -> None:
        at = sample_time(run)
        for t in ph.tasks_of(run.run_id):
            b = self.task(t.task) if t.state is RunState.SUCCESS else None
            if b is not None:
                b.add(at, task_features(run, t), run.version)


def _done(ph: PipelineHistory) -> list[RunUpdate]:
    return [r for r in ph.ordered() if r.state is RunState.SUCCESS and r.started_at and r.ended_at]


def task_features(run: RunUpdate, task: TaskUpdate) -> dict[str, float]:
    """A task's own features: its duration, how long after the run started it began, its retries."""
    out: dict[str, float] = {}
    if task.started_at is not None and task.ended_at is not None:
        out["duration"] = max(0.0, (task.ended_at - task.started_at).total_seconds())
    if task.started_at is not None and run.started_at is not None:
        out["start_delay"] = max(0.0, (task.started_at - run.started_at).total_seconds())
    out["retries"] = float(max(task.try_number - 1, 0))
    return out


def volume_of(run: RunUpdate) -> float | None:
    """The run's data volume when its adapter read one (the source's `volume:`); None otherwise."""
    value = getattr(run, "volume", None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def segment_window(
    baseline: Baseline, segment_by: Sequence[str], calendar: Calendar, tz: tzinfo, segment: tuple[str, ...]
) -> Window:
    """The baseline's runs in `segment`, oldest first."""
    order = baseline.positions()
    if not segment_by:
        return baseline.window(order)
    params = (tuple(segment_by), calendar.name, str(tz))
    memo = baseline.segments.get(params)
    if memo is None:
        if len(baseline.segments) >= 8:  # many rules with different segmentations: start over
            baseline.segments.clear()
        memo = baseline.segments[params] = [None] * baseline.max_samples
    picked: list[int] = []
    for p in order:
        seq = baseline.seq[p]
        hit = memo[p]
        if hit is None or hit[0] != seq:
            hit = memo[p] = (seq, segment_of(datetime.fromtimestamp(baseline.at[p], UTC), segment_by, calendar, tz))
        if hit[1] == segment:
            picked.append(p)
    return baseline.window(picked)


def sample_time(run: RunUpdate) -> datetime:
    return run.scheduled_for or run.started_at or run_order(run)


def segment_of(at: datetime, segment_by: Sequence[str], calendar: Calendar, tz: tzinfo) -> tuple[str, ...]:
    """The segment a run belongs to: runs are only compared with runs of the same segment. Weekday and
    hour are read in `tz`; a session is the calendar's, for the run's date in the calendar's timezone."""
    if not segment_by:
        return ()
    local = at.astimezone(tz)
    out: list[str] = []
    for s in segment_by:
        if s in ("weekend", "weekday"):
            out.append("weekend" if local.weekday() >= 5 else "weekday")
        elif s == "trading_day":
            out.append("session" if calendar.is_session(calendar.date_of(at)) else "no-session")
        elif s == "hour":
            out.append(f"{local.hour:02d}h")
    return tuple(out)


class BaselineStore:
    """Every pipeline's baselines for one `History`."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.max_samples = max_samples
        self.pipelines: dict[tuple[str, str], PipelineBaselines] = {}
        self.models = ModelCache()  # PyOD models fitted on these baselines

    def of(self, ph: PipelineHistory, tasks: bool = False) -> PipelineBaselines:
        """The pipeline's baselines, caught up with its history (`tasks`: with per-task baselines too)."""
        pb = self.pipelines.get(ph.key)
        if pb is None:
            pb = self.pipelines[ph.key] = PipelineBaselines(self.max_samples)
        pb.sync(ph, tasks)
        return pb

    def __iter__(self) -> Iterator[PipelineBaselines]:
        return iter(self.pipelines.values())


_STORES: weakref.WeakKeyDictionary[History, BaselineStore] = weakref.WeakKeyDictionary()


def store_for(history: History) -> BaselineStore:
    """The baselines learned from `history`, created on first use and dropped with it."""
    store = _STORES.get(history)
    if store is None:
        store = _STORES[history] = BaselineStore()
    return store
