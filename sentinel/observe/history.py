"""Bounded per-pipeline history, fed by poll results; the only input rules read.

Memory is bounded per pipeline (`max_runs` runs, `max_tasks` task entries per run) and nothing here
talks to a scheduler or the store: the poller persists what `apply` reports as changed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sentinel.model import (
    ImportErrorInfo,
    PipelineInfo,
    PipelineKey,
    PollResult,
    RunUpdate,
    SourceHealth,
    TaskUpdate,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


def run_order(run: RunUpdate) -> datetime:
    """Runs are ordered by the period they are for, falling back to when they actually happened."""
    return run.scheduled_for or run.started_at or run.queued_at or run.updated_at or _EPOCH


class PipelineHistory:
    """One pipeline's bounded run history.

    `version` grows whenever anything a rule can read changes (a run, a task, the pipeline's info), so
    callers may cache whatever they derive from a pipeline for as long as its version stays the same
    (the rule engine does, per rule and pipeline, since most pipelines do not change between ticks).
    Mutate only through `add_run`, `add_task` and `info`: a direct write to `runs`/`tasks` is not seen.
    """

    def __init__(
        self, key: PipelineKey, max_runs: int = 100, max_tasks: int = 500, info: PipelineInfo | None = None
    ) -> None:
        self.key = key
        self.max_runs = max_runs
        self.max_tasks = max_tasks
        self.runs: dict[str, RunUpdate] = {}
        self.tasks: dict[str, dict[str, TaskUpdate]] = {}
        self.version = 0
        # Bumped on info changes only: selecting pipelines by tags depends on info, never on runs.
        self.info_version = 0
        self._info = info
        self._sorted: list[RunUpdate] | None = None
        self._derived: dict[str, Any] = {}
        self._runs_derived: dict[str, Any] = {}  # like `_derived`, but kept across task and info changes
        self._watchers: weakref.WeakSet[ChangeLog] | None = None  # set by `History.pipeline`

    def __repr__(self) -> str:
        return f"PipelineHistory({self.key!r}, runs={len(self.runs)}, version={self.version})"

    @property
    def info(self) -> PipelineInfo | None:
        return self._info

    @info.setter
    def info(self, info: PipelineInfo | None) -> None:
        # A full pipeline refresh re-sends every pipeline: an equal value is no change, keep caches.
        if info == self._info:
            return
        self._info = info
        self.info_version += 1
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._derived.clear()
        if self._watchers:
            for log in self._watchers:
                log.pipelines.add(self)

    def add_run(self, run: RunUpdate) -> bool:
        """Keep the newest view of a run. Returns True if anything changed."""
        old = self.runs.get(run.run_id)
        if old is not None and old == run:
            return False
        if old is not None and _older(run.updated_at, old.updated_at):
            return False  # an overlap re-read of an older state must not roll the run back
        self.runs[run.run_id] = run
        self._sorted = _resorted(self._sorted, old, run)
        self._runs_derived.clear()
        if len(self.runs) > self.max_runs:
            ordered = self.ordered()
            excess = len(self.runs) - self.max_runs
            for victim in ordered[:excess]:
                self.runs.pop(victim.run_id, None)
                self.tasks.pop(victim.run_id, None)
            self._sorted = ordered[excess:]  # what is left, still in order
        self._changed()
        return True

    def add_task(self, task: TaskUpdate) -> bool:
        per_run = self.tasks.setdefault(task.run_id, {})
        old = per_run.get(task.task)
        if old is not None and (old == task or _older(task.updated_at, old.updated_at)):
            return False
        if old is None and len(per_run) >= self.max_tasks:
            return False
        per_run[task.task] = task
        self._changed()
        return True

    def ordered(self) -> list[RunUpdate]:
        """Runs oldest period first. The same list object until the runs change: do not mutate it."""
        if self._sorted is None:
            self._sorted = sorted(self.runs.values(), key=run_order)
        return self._sorted

    def derived(self, name: str, compute: Callable[[PipelineHistory], T]) -> T:
        """`compute(self)`, memoised until this pipeline's next change.

        For summaries every tick needs but only a change can alter (the terminal runs, the runs waiting
        to start): conditions read them for every pipeline on every tick, and nearly no pipeline changes
        between two ticks. Bounded by the number of distinct `name`s. Results are shared: do not mutate.
        """
        try:
            return cast(T, self._derived[name])
        except KeyError:
            value = self._derived[name] = compute(self)
            return value

    def runs_derived(self, name: str, compute: Callable[[PipelineHistory], T]) -> T:
        """Like `derived`, for what `compute` reads from the runs alone (never tasks or info): memoised
        until a run changes, so the task updates of a running pipeline do not recompute it."""
        try:
            return cast(T, self._runs_derived[name])
        except KeyError:
            value = self._runs_derived[name] = compute(self)
            return value

    def terminal(self) -> list[RunUpdate]:
        """Terminal runs, oldest period first (shared until a run changes: do not mutate)."""
        return self.runs_derived("terminal", _terminal)

    def last_terminal(self) -> RunUpdate | None:
        for r in reversed(self.ordered()):
            if r.state.terminal:
                return r
        return None

    def tasks_of(self, run_id: str) -> list[TaskUpdate]:
        return list(self.tasks.get(run_id, {}).values())


def _resorted(ordered: list[RunUpdate] | None, old: RunUpdate | None, run: RunUpdate) -> list[RunUpdate] | None:
    """`ordered` after `run` replaced `old` (or arrived), as a new list; None when only a sort can tell.

    Sorting a hundred runs on every state change of one was most of what a replay's rules cost. A sort is
    stable and the runs dict keeps a replaced run's place, so a run whose period did not move keeps its
    index, and a new run (last in the dict) whose period is the latest goes last."""
    if ordered is None:
        return None
    key = run_order(run)
    if old is not None:
        if run_order(old) != key:
            return None
        for i in range(len(ordered) - 1, -1, -1):
            if ordered[i] is old:
                out = ordered.copy()  # the old list may still be held by a caller: never mutate it
                out[i] = run
                return out
        return None
    if not ordered or run_order(ordered[-1]) <= key:
        return [*ordered, run]
    return None


def _terminal(ph: PipelineHistory) -> list[RunUpdate]:
    return [r for r in ph.ordered() if r.state.terminal]


class ChangeLog:
    """The pipelines (made by `History.pipeline`) that changed since the owner last cleared `pipelines`:
    lets a caller find what changed among 10,000s of pipelines without comparing every version."""

    __slots__ = ("__weakref__", "pipelines")

    def __init__(self) -> None:
        self.pipelines: set[PipelineHistory] = set()


@dataclass
class Changes:
    runs: list[RunUpdate] = field(default_factory=list)  # runs whose state changed
    finished: list[RunUpdate] = field(default_factory=list)  # runs that became terminal in this result
    tasks: list[TaskUpdate] = field(default_factory=list)
    health_changed: bool = False


class History:
    def __init__(self, max_runs: int = 100) -> None:
        self.max_runs = max_runs
        self.pipelines: dict[PipelineKey, PipelineHistory] = {}
        self.health: dict[str, SourceHealth] = {}
        self.import_errors: dict[str, tuple[ImportErrorInfo, ...]] = {}
        self.polled_once: set[str] = set()
        self._watchers: weakref.WeakSet[ChangeLog] = weakref.WeakSet()

    def pipeline(self, key: PipelineKey) -> PipelineHistory:
        ph = self.pipelines.get(key)
        if ph is None:
            ph = self.pipelines[key] = PipelineHistory(key, self.max_runs)
            ph._watchers = self._watchers
        return ph

    def watch(self) -> ChangeLog:
        """A new log of the pipelines that change from now on; it lives as long as the caller keeps it."""
        log = ChangeLog()
        self._watchers.add(log)
        return log

    def watches(self, ph: PipelineHistory) -> bool:
        """Whether `ph`'s changes reach this history's logs (not so for a pipeline made elsewhere)."""
        return ph._watchers is self._watchers

    def of_source(self, source: str) -> Iterator[PipelineHistory]:
        return (ph for k, ph in self.pipelines.items() if k.source == source)

    def apply(self, result: PollResult) -> Changes:
        ch = Changes()
        prev = self.health.get(result.source)
        self.health[result.source] = result.health
        ch.health_changed = prev is None or _health_sig(prev) != _health_sig(result.health)
        if not result.health.reachable:
            return ch
        self.polled_once.add(result.source)
        for run in result.runs:
            ph = self.pipeline(run.key)
            before = ph.runs.get(run.run_id)
            if ph.add_run(run):  # True only when `run` differs from `before`
                ch.runs.append(run)
                if run.state.terminal and (before is None or not before.state.terminal):
                    ch.finished.append(run)
        for task in result.tasks:
            if self.pipeline(task.key).add_task(task):
                ch.tasks.append(task)
        for info in result.pipelines_partial or ():
            self.pipeline(PipelineKey(info.source, info.pipeline)).info = info
        if result.pipelines is not None:
            for info in result.pipelines:
                self.pipeline(PipelineKey(info.source, info.pipeline)).info = info
        if result.import_errors is not None:
            self.import_errors[result.source] = result.import_errors
        return ch

    def load_run(self, run: RunUpdate, tasks: list[TaskUpdate]) -> None:
        ph = self.pipeline(run.key)
        ph.add_run(run)
        for t in tasks:
            ph.add_task(t)


def _health_sig(h: SourceHealth) -> tuple[object, ...]:
    return (h.reachable, tuple((c.name, c.healthy) for c in h.components))


def _older(new: datetime | None, old: datetime | None) -> bool:
    return new is not None and old is not None and new < old
