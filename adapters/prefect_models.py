"""Pydantic models of the Prefect REST responses the adapter reads.

Only the fields Sentinel uses are declared and everything else is ignored, so a newer server that adds
fields keeps working. State types are plain strings, not an enum: a state type this code does not know
must reach the mapper (which reports it and says UNKNOWN) instead of failing the whole response.
Field names were checked against a real Prefect 3.9.1 server and `shared/api-samples/prefect`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sentinel.model import UtcDatetime


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class State(_Model):
    id: str | None = None
    type: str
    name: str | None = None
    timestamp: UtcDatetime | None = None
    message: str | None = None


class EmpiricalPolicy(_Model):
    # Prefect 3 fills `retries`; `max_retries` is the deprecated Prefect 2 spelling, still sent as 0.
    retries: int | None = None
    max_retries: int | None = None


class CreatedBy(_Model):
    type: str | None = None


class FlowRun(_Model):
    id: str
    name: str | None = None
    flow_id: str
    deployment_id: str | None = None
    deployment_version: str | None = None
    flow_version: str | None = None
    state_id: str | None = None
    state_type: str | None = None
    state_name: str | None = None
    state: State | None = None
    run_count: int = 0
    expected_start_time: UtcDatetime | None = None
    start_time: UtcDatetime | None = None
    end_time: UtcDatetime | None = None
    updated: UtcDatetime | None = None
    auto_scheduled: bool | None = None
    created_by: CreatedBy | None = None
    parent_task_run_id: str | None = None
    work_pool_name: str | None = None
    work_queue_name: str | None = None

    @property
    def type(self) -> str:
        return self.state.type if self.state is not None else (self.state_type or "")

    @property
    def state_label(self) -> str | None:
        return self.state.name if self.state is not None and self.state.name else self.state_name

    @property
    def state_time(self) -> UtcDatetime | None:
        return self.state.timestamp if self.state is not None else self.updated

    @property
    def state_key(self) -> str:
        """Identity of the run's current state: Prefect gives every state transition a new state id."""
        if self.state_id:
            return self.state_id
        if self.state is not None and self.state.id:
            return self.state.id
        stamp = self.state_time.isoformat() if self.state_time else ""
        return f"{self.type}/{self.state_label}/{stamp}"


class TaskRun(_Model):
    id: str
    name: str = ""
    flow_run_id: str | None = None
    task_key: str = ""
    dynamic_key: str = ""
    state_id: str | None = None
    state_type: str | None = None
    state_name: str | None = None
    state: State | None = None
    run_count: int = 0
    start_time: UtcDatetime | None = None
    end_time: UtcDatetime | None = None
    updated: UtcDatetime | None = None
    empirical_policy: EmpiricalPolicy = Field(default_factory=EmpiricalPolicy)

    @property
    def type(self) -> str:
        return self.state.type if self.state is not None else (self.state_type or "")

    @property
    def state_label(self) -> str | None:
        return self.state.name if self.state is not None and self.state.name else self.state_name

    @property
    def state_key(self) -> str:
        if self.state_id:
            return self.state_id
        stamp = self.state.timestamp.isoformat() if self.state and self.state.timestamp else ""
        return f"{self.type}/{self.state_label}/{stamp}/{self.run_count}"


class Flow(_Model):
    id: str
    name: str


class Schedule(_Model):
    cron: str | None = None
    interval: float | None = None
    rrule: str | None = None
    timezone: str | None = None


class DeploymentSchedule(_Model):
    schedule: Schedule
    active: bool = True


class Deployment(_Model):
    id: str
    name: str
    flow_id: str
    paused: bool = False
    schedules: list[DeploymentSchedule] = Field(default_factory=list)
    # Prefect 2 servers before multiple schedules: one schedule plus an on/off switch.
    schedule: Schedule | None = None
    is_schedule_active: bool | None = None
    tags: list[str] = Field(default_factory=list)
    work_pool_name: str | None = None


class WorkPool(_Model):
    name: str
    type: str = ""
    is_paused: bool = False
    status: str | None = None


class Worker(_Model):
    name: str = ""
    last_heartbeat_time: UtcDatetime | None = None
    heartbeat_interval_seconds: int | None = None
    status: str | None = None


FLOW_RUNS: TypeAdapter[list[FlowRun]] = TypeAdapter(list[FlowRun])
TASK_RUNS: TypeAdapter[list[TaskRun]] = TypeAdapter(list[TaskRun])
FLOWS: TypeAdapter[list[Flow]] = TypeAdapter(list[Flow])
DEPLOYMENTS: TypeAdapter[list[Deployment]] = TypeAdapter(list[Deployment])
WORK_POOLS: TypeAdapter[list[WorkPool]] = TypeAdapter(list[WorkPool])
WORKERS: TypeAdapter[list[Worker]] = TypeAdapter(list[Worker])
HEALTH: TypeAdapter[bool] = TypeAdapter(bool)
VERSION: TypeAdapter[str] = TypeAdapter(str)
