"""The simulated world: pipelines and their runs, advanced on a (usually fast) clock.

The API faces (`airflow_api`, `prefect_api`) only read this structure; `World.advance` is the one
place that moves it. States are kept as `RunState`; each face maps them back to its scheduler's words.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sentinel.model import RunState

if TYPE_CHECKING:
    from sentinel.sim.dynamics import DynamicsState

System = Literal["airflow", "prefect"]


@dataclass
class SimTask:
    task: str
    state: RunState = RunState.SCHEDULED
    try_number: int = 0
    max_tries: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    updated_at: datetime | None = None
    pool: str = "default_pool"
    id: str = ""


@dataclass
class SimRun:
    id: str  # Airflow dag_run_id / Prefect flow run UUID
    pipeline: str  # dag_id, or Prefect "flow/deployment"
    system: System
    scheduled_for: datetime
    state: RunState
    updated_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    run_type: str = "scheduled"
    message: str | None = None
    tasks: list[SimTask] = field(default_factory=list)
    seq: int = 0  # ever-increasing change counter; ties in updated_at are broken by it


@dataclass
class SimPipeline:
    name: str
    system: System
    schedule: str  # cron, evaluated in the pipeline's timezone
    timezone: str = "America/New_York"
    tasks: tuple[str, ...] = ("extract", "transform", "load")
    tags: tuple[str, ...] = ()
    paused: bool = False
    mean_task_seconds: float = 60.0
    fail_probability: float = 0.0
    slow_probability: float = 0.0
    upstreams: tuple[str, ...] = ()
    work_pool: str = "default"
    retries: int = 1  # Airflow `retries` / Prefect task retries: extra tries after a failed one
    retry_probability: float = 0.0  # chance a task's first try fails and a retry then succeeds
    retry_delay_seconds: float = 60.0


@dataclass
class SimHealth:
    scheduler_alive: bool = True
    dag_processor_alive: bool = True
    triggerer_alive: bool | None = None
    workers_online: dict[str, bool] = field(default_factory=dict)  # Prefect work pool -> online
    api_up: bool = True


@dataclass
class SimImportError:
    filename: str
    message: str
    timestamp: datetime


class World:
    """Holds pipelines and runs, with runs indexed by (updated_at, seq) per system for cheap change feeds."""

    def __init__(self, max_runs_per_pipeline: int = 200, seed: int = 0) -> None:
        self.pipelines: dict[str, SimPipeline] = {}
        self.runs: dict[str, SimRun] = {}
        self.health = SimHealth()
        self.import_errors: list[SimImportError] = []
        self.max_runs_per_pipeline = max_runs_per_pipeline
        # Every random draw in sim.dynamics is keyed by this, so the same world replays identically.
        self.seed = seed
        # Owned by sim.dynamics (schedules, active runs, event queue); created on the first advance.
        self.dynamics: DynamicsState | None = None
        self._seq = 0
        # Runs per pipeline in creation order, so API faces and history bounds never scan every run.
        self._by_pipeline: dict[str, dict[str, SimRun]] = {}
        # (updated_at, seq, run_id) per system, append-only in time order; stale entries are skipped on read.
        self._changes: dict[System, list[tuple[datetime, int, str]]] = {"airflow": [], "prefect": []}

    def add_pipeline(self, p: SimPipeline) -> None:
        self.pipelines[p.name] = p

    def touch(self, run: SimRun, now: datetime) -> None:
        """Record that `run` changed at `now`; the change feeds rely on every mutation calling this."""
        self._seq += 1
        run.updated_at = now
        run.seq = self._seq
        self.runs[run.id] = run
        self._by_pipeline.setdefault(run.pipeline, {})[run.id] = run
        self._changes[run.system].append((now, self._seq, run.id))

    def changed_since(self, system: System, since: datetime | None) -> list[SimRun]:
        """Runs whose last change is at or after `since`, oldest change first."""
        feed = self._changes[system]
        start = 0 if since is None else bisect.bisect_left(feed, (since, -1, ""))
        out: list[SimRun] = []
        for _, seq, run_id in feed[start:]:
            run = self.runs.get(run_id)
            if run is not None and run.seq == seq:
                out.append(run)
        return out

    def changed_between(self, system: System, lo: datetime | None, hi: datetime | None) -> list[SimRun]:
        """Runs whose last change is in [lo, hi] (either end open when None), oldest change first.

        Both ends are bisected, so a window costs what changed inside it, not everything after `lo`.
        """
        feed = self._changes[system]
        start = 0 if lo is None else bisect.bisect_left(feed, lo, key=_at)
        stop = len(feed) if hi is None else bisect.bisect_right(feed, hi, key=_at)
        runs = self.runs
        out: list[SimRun] = []
        for _, seq, run_id in feed[start:stop]:
            run = runs.get(run_id)
            if run is not None and run.seq == seq:
                out.append(run)
        return out

    @property
    def version(self) -> int:
        """Grows with every change to a run (not with removals), so readers can cache derived views."""
        return self._seq

    def compact(self) -> None:
        """Drop superseded change entries so the feed stays bounded on long demos and benchmarks."""
        for system, feed in self._changes.items():
            self._changes[system] = [e for e in feed if (r := self.runs.get(e[2])) is not None and r.seq == e[1]]

    def runs_of(self, pipeline: str) -> list[SimRun]:
        """Runs of one pipeline, oldest first."""
        return list(self._by_pipeline.get(pipeline, {}).values())

    def remove_run(self, run_id: str) -> None:
        """Forget a run; its change-feed entries go stale and are skipped, then dropped by `compact`."""
        run = self.runs.pop(run_id, None)
        if run is None:
            return
        of_pipeline = self._by_pipeline.get(run.pipeline)
        if of_pipeline is not None:
            of_pipeline.pop(run_id, None)
            if not of_pipeline:
                del self._by_pipeline[run.pipeline]

    def advance(self, now: datetime) -> None:
        """Move the world to `now`: schedule due runs, progress tasks, inject failures. See sim.dynamics."""
        from sentinel.sim.dynamics import advance

        advance(self, now)


def _at(entry: tuple[datetime, int, str]) -> datetime:
    return entry[0]
