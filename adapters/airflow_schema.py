"""The parts of Airflow's REST responses Sentinel reads, for API v1 (Airflow 2.x) and v2 (Airflow 3.x).

Field names were checked against real 2.10.5 and 3.3.2 servers. Neither version returns a row's
`updated_at`, although both filter on it: change detection therefore compares row content, not stamps.
Extra fields are ignored so a newer Airflow adding fields does not break parsing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sentinel.clock import utc

Stamp = Annotated[datetime, AfterValidator(utc)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class VersionInfo(_Lenient):
    version: str
    git_version: str | None = None


class TokenResponse(_Lenient):
    access_token: str = Field(min_length=1)


class _Component(_Lenient):
    status: str | None = None


class SchedulerHealth(_Component):
    latest_scheduler_heartbeat: Stamp | None = None


class TriggererHealth(_Component):
    latest_triggerer_heartbeat: Stamp | None = None


class DagProcessorHealth(_Component):
    latest_dag_processor_heartbeat: Stamp | None = None


class HealthInfo(_Lenient):
    metadatabase: _Component | None = None
    scheduler: SchedulerHealth
    triggerer: TriggererHealth | None = None
    dag_processor: DagProcessorHealth | None = None  # 2.10 reports it too, with status null unless standalone


class _DagVersion(_Lenient):
    version_number: int | None = None


class DagRun(_Lenient):
    dag_run_id: str
    dag_id: str
    state: str | None = None
    logical_date: Stamp | None = None
    execution_date: Stamp | None = None  # v1 only
    run_after: Stamp | None = None  # v2 only; the time to measure manual runs by (logical_date is null)
    queued_at: Stamp | None = None  # v2 only
    start_date: Stamp | None = None
    end_date: Stamp | None = None
    last_scheduling_decision: Stamp | None = None
    run_type: str | None = None
    note: str | None = None
    dag_versions: list[_DagVersion] = Field(default_factory=list)


class _Paged(_Lenient):
    total_entries: int | None = None
    total_entries_limit: int | None = None  # set only in Airflow 3.3+ cursor mode
    next_cursor: str | None = None

    @property
    def keyset(self) -> bool:
        return self.total_entries_limit is not None or self.next_cursor is not None


class DagRunList(_Paged):
    dag_runs: list[DagRun]


class TaskInstance(_Lenient):
    task_id: str
    dag_id: str
    dag_run_id: str
    map_index: int = -1
    state: str | None = None
    try_number: int = 0
    max_tries: int | None = None
    start_date: Stamp | None = None
    end_date: Stamp | None = None
    queued_when: Stamp | None = None
    scheduled_when: Stamp | None = None  # v2 only
    pool: str | None = None
    queue: str | None = None
    note: str | None = None


class TaskInstanceList(_Paged):
    task_instances: list[TaskInstance]


class _Tag(_Lenient):
    name: str


class Dag(_Lenient):
    dag_id: str
    is_paused: bool | None = None
    tags: list[_Tag] | None = None
    timetable_summary: str | None = None  # v2
    schedule_interval: Any = None  # v1: {"__type": "CronExpression", "value": "*/2 * * * *"} or null
    timetable_description: str | None = None
    next_dagrun_run_after: Stamp | None = None  # v2
    next_dagrun_create_after: Stamp | None = None  # v1

    @property
    def schedule(self) -> str | None:
        if self.timetable_summary:
            return self.timetable_summary
        si = self.schedule_interval
        if isinstance(si, dict):
            value = si.get("value")
            if isinstance(value, str) and value:
                return value
            if si.get("__type") == "TimeDelta":
                return f"every {si.get('days', 0)}d {si.get('seconds', 0)}s"
        return None


class DagList(_Lenient):
    dags: list[Dag]
    total_entries: int | None = None


class ImportErrorItem(_Lenient):
    filename: str
    stack_trace: str = ""
    timestamp: Stamp | None = None
    bundle_name: str | None = None


class ImportErrorList(_Lenient):
    import_errors: list[ImportErrorItem]
    total_entries: int | None = None


class _DagRef(_Lenient):
    dag_id: str


class _TaskRef(_Lenient):
    dag_id: str
    task_id: str | None = None


class Asset(_Lenient):
    """An Airflow 3 asset or an Airflow 2 dataset: which DAGs produce it and which are scheduled on it."""

    uri: str | None = None
    scheduled_dags: list[_DagRef] = Field(default_factory=list)  # v2
    consuming_dags: list[_DagRef] = Field(default_factory=list)  # v1
    producing_tasks: list[_TaskRef] = Field(default_factory=list)

    @property
    def consumers(self) -> list[str]:
        return [d.dag_id for d in (*self.scheduled_dags, *self.consuming_dags)]


class AssetList(_Paged):  # v2: GET /api/v2/assets
    assets: list[Asset]


class DatasetList(_Paged):  # v1: GET /api/v1/datasets
    datasets: list[Asset]
