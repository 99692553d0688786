"""Normalised facts that adapters produce and everything downstream consumes.

All times are timezone-aware UTC. Adapters map each scheduler's own states onto `RunState`; the
scheduler's original word is kept in `raw_state` for messages, never for decisions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from sentinel.clock import Clock, FrozenClock, SystemClock, utc
from sentinel.durations import Duration

__all__ = [
    "ACTIVE",
    "FAILURE",
    "TERMINAL",
    "Clock",
    "ComponentHealth",
    "FrozenClock",
    "ImportErrorInfo",
    "PipelineInfo",
    "PipelineKey",
    "PollResult",
    "RunState",
    "RunUpdate",
    "SourceHealth",
    "SourceSpec",
    "SystemClock",
    "TaskUpdate",
    "UtcDatetime",
    "VolumeSpec",
]


def _aware(dt: datetime) -> datetime:
    return utc(dt)


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]


class RunState(StrEnum):
    SCHEDULED = "scheduled"
    LATE = "late"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    PAUSED = "paused"
    SUCCESS = "success"
    SKIPPED = "skipped"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def failure(self) -> bool:
        return self in FAILURE


TERMINAL = frozenset({RunState.SUCCESS, RunState.SKIPPED, RunState.FAILED, RunState.CRASHED, RunState.CANCELLED})
# CRASHED is infrastructure dying under a run, FAILED is the run's own code: both are failures to page on,
# but they stay distinct states so rules and messages can tell them apart.
FAILURE = frozenset({RunState.FAILED, RunState.CRASHED})
ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.RETRYING})


class PipelineKey(NamedTuple):
    source: str
    pipeline: str


class _Fact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunUpdate(_Fact):
    """One pipeline run as last seen. A newer update for the same run_id replaces an older one."""

    source: str
    pipeline: str
    run_id: str
    state: RunState
    raw_state: str | None = None
    # The period the run is *for*: Airflow logical date / run_after, Prefect expected start.
    scheduled_for: UtcDatetime | None = None
    queued_at: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None
    run_type: str | None = None  # scheduled | manual | backfill | asset_triggered ...
    pool: str | None = None  # Prefect work pool the run was sent to, for the cost model
    version: str | None = None  # DAG version / deployment version, for baselines
    message: str | None = None
    url: str | None = None  # link into the scheduler's UI
    volume: float | None = None  # data volume of a successful run, read as the source's `volume:` says

    @property
    def key(self) -> PipelineKey:
        return PipelineKey(self.source, self.pipeline)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


class TaskUpdate(_Fact):
    source: str
    pipeline: str
    run_id: str
    task: str  # Airflow task_id (mapped instances folded) or Prefect task name
    state: RunState
    raw_state: str | None = None
    try_number: int = 0
    max_tries: int | None = None
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None
    pool: str | None = None  # Airflow pool / Prefect work pool, for the cost model
    queue: str | None = None
    map_count: int = 1
    message: str | None = None

    @property
    def key(self) -> PipelineKey:
        return PipelineKey(self.source, self.pipeline)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


class ComponentHealth(_Fact):
    """A scheduler part that must be alive: scheduler, dag_processor, triggerer, a work pool."""

    name: str
    healthy: bool
    last_heartbeat: UtcDatetime | None = None
    detail: str | None = None
    # When this component was read, if not with the rest of the source's health: some (work pools) are
    # read a few per poll, and a heartbeat must be aged as of its own read, not of a later poll.
    observed_at: UtcDatetime | None = None


class SourceHealth(_Fact):
    source: str
    reachable: bool
    observed_at: UtcDatetime
    error: str | None = None  # why unreachable; never contains credentials
    version: str | None = None
    api: str | None = None  # e.g. "airflow-v2", "airflow-v1", "prefect"
    components: tuple[ComponentHealth, ...] = ()


class PipelineInfo(_Fact):
    """Metadata of a DAG or deployment: what is paused, tagged, next due."""

    source: str
    pipeline: str
    paused: bool = False
    tags: tuple[str, ...] = ()
    schedule: str | None = None
    next_run: UtcDatetime | None = None
    upstreams: tuple[str, ...] = ()  # pipelines this one waits for (Airflow assets/datasets)
    url: str | None = None


class ImportErrorInfo(_Fact):
    source: str
    filename: str
    message: str
    timestamp: UtcDatetime | None = None


class PollResult(_Fact):
    """What one poll cycle of one source saw.

    `pipelines` / `import_errors` are None when this cycle did not refresh them (they are read on a
    slower cadence or a page at a time); a list means "this is the complete, current set".
    `pipelines_partial` lists pipelines refreshed this cycle when only a page was read.
    """

    source: str
    health: SourceHealth
    runs: tuple[RunUpdate, ...] = ()
    tasks: tuple[TaskUpdate, ...] = ()
    pipelines: tuple[PipelineInfo, ...] | None = None
    pipelines_partial: tuple[PipelineInfo, ...] = ()
    import_errors: tuple[ImportErrorInfo, ...] | None = None
    cursor: dict[str, Any] = Field(default_factory=dict)
    requests: int = 0
    # False while a backlog (the first poll's lookback, or a burst) is still being read over several cycles
    caught_up: bool = True


class VolumeSpec(BaseModel):
    """Where a source's successful runs report their data volume (`volume:` of a source).

    Airflow: the XCom `key` pushed by task `task_id`. Prefect: the newest artifact with key `key` of the run.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipelines: Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(min_length=1)] = Field(
        default_factory=lambda: ["*"]
    )  # globs over DAG ids / flow names (deployment-qualified as Sentinel names them)
    key: Annotated[str, Field(min_length=1, max_length=256)]
    task_id: Annotated[str, Field(min_length=1, max_length=250)] | None = None


class SourceSpec(BaseModel):
    """One scheduler to watch, as written under `sources:` in sentinel.yaml.

    It lives here, not in config, because adapters receive it and adapters may only import the model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$", max_length=64)]
    kind: str
    url: str
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None  # Prefect Cloud
    auth_string: SecretStr | None = None  # self-hosted Prefect with basic auth, "user:pass"
    poll_interval: Duration = timedelta(seconds=15)
    timeout: Duration = timedelta(seconds=10)
    max_requests_per_second: Annotated[float, Field(gt=0, le=100)] = 1.0
    burst: Annotated[int, Field(ge=1, le=100)] = 5
    max_concurrency: Annotated[int, Field(ge=1, le=16)] = 2
    overlap: Duration = timedelta(seconds=60)  # re-read this much before the cursor: late commits
    # How far back the very first poll reads (no cursor yet): enough to see today's runs, so a deadline or
    # freshness rule does not page for a success that happened before Sentinel started.
    initial_lookback: Duration = timedelta(days=1)
    verify_tls: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    volume: VolumeSpec | None = None

    @model_validator(mode="after")
    def _volume_fits_kind(self) -> SourceSpec:
        if self.volume is None:
            return self
        if self.kind == "airflow" and self.volume.task_id is None:
            raise ValueError("volume: an airflow source needs 'task_id' (the task that pushes the XCom 'key')")
        if self.kind == "prefect" and self.volume.task_id is not None:
            raise ValueError("volume: 'task_id' is for airflow; a prefect source reads the run's artifact 'key'")
        return self
