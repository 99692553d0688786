"""Prefect objects → Sentinel facts: state mapping, task names, pipeline metadata, work-pool health.

States are mapped by *type*; a state *name* refines the type only where Prefect encodes a distinct
situation in the name alone (Late, AwaitingRetry, Retrying, AwaitingConcurrencySlot). Names are
free-form (users and integrations can invent them), types are a closed enum — so a renamed state still
maps correctly and an unknown type is visible as UNKNOWN instead of being guessed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from adapters.prefect_models import Deployment, FlowRun, TaskRun, Worker, WorkPool
from sentinel.durations import format_duration
from sentinel.model import ComponentHealth, PipelineInfo, RunState, RunUpdate, TaskUpdate

_BY_TYPE: dict[str, RunState] = {
    "SCHEDULED": RunState.SCHEDULED,
    # Accepted by a worker / the engine, infrastructure starting: waiting for resources, i.e. queued.
    "PENDING": RunState.QUEUED,
    "RUNNING": RunState.RUNNING,
    "COMPLETED": RunState.SUCCESS,
    "FAILED": RunState.FAILED,
    # Infrastructure died under the run (SIGTERM, OOM, lost worker): not the code's failure. Kept apart
    # from FAILED so alerts and runbooks can point at the platform instead of the pipeline's author.
    "CRASHED": RunState.CRASHED,
    "CANCELLED": RunState.CANCELLED,
    # Cancellation was requested but the run's infrastructure is still being torn down and may still be
    # doing work; it can yet end CANCELLED or CRASHED. A terminal RunState must be final, so this stays
    # RUNNING (raw_state keeps "Cancelling" for messages) and the real end arrives as its own update.
    "CANCELLING": RunState.RUNNING,
    "PAUSED": RunState.PAUSED,
}

_BY_TYPE_AND_NAME: dict[tuple[str, str], RunState] = {
    # Set by the server's late-runs service ~15 s after the expected start passed without a start.
    ("SCHEDULED", "Late"): RunState.LATE,
    # A failed attempt is waiting for its retry delay: the run is between attempts, not merely scheduled.
    ("SCHEDULED", "AwaitingRetry"): RunState.RETRYING,
    # Due but held back by a deployment concurrency limit: it waits in line like a queued run, which
    # is what a "stuck in queue" rule should see.
    ("SCHEDULED", "AwaitingConcurrencySlot"): RunState.QUEUED,
    ("RUNNING", "Retrying"): RunState.RETRYING,
}

NO_WORKER_POOL_TYPES = ("prefect:managed",)  # Prefect Cloud runs these itself: no worker to watch


def map_state(state_type: str, state_name: str | None) -> RunState | None:
    """The RunState for a Prefect state, or None when the type is unknown (the caller reports it)."""
    key = (state_type.upper(), state_name or "")
    if key in _BY_TYPE_AND_NAME:
        return _BY_TYPE_AND_NAME[key]
    return _BY_TYPE.get(key[0])


def task_name(tr: TaskRun) -> str:
    """The task's name without the per-run suffix Prefect appends.

    Task runs are named `<task name>-<first 3 chars of dynamic_key>` (e.g. "Load Prices-026"), and
    `task_key` is `<function qualname>-<code hash>`. Stripping the dynamic suffix keeps a custom
    `@task(name=...)`; a custom `task_run_name` does not end in that suffix, so fall back to the qualname.
    """
    suffix = f"-{tr.dynamic_key[:3]}" if tr.dynamic_key else ""
    if suffix and tr.name.endswith(suffix) and len(tr.name) > len(suffix):
        return tr.name[: -len(suffix)]
    m = re.fullmatch(r"(.+)-(?:[0-9a-f]{8}|unknown)", tr.task_key)
    if m:
        return m.group(1)
    return tr.name or tr.task_key or tr.id


def run_type(fr: FlowRun) -> str:
    if fr.auto_scheduled or (fr.created_by is not None and fr.created_by.type == "SCHEDULE"):
        return "scheduled"
    if fr.parent_task_run_id:
        return "subflow"
    if fr.created_by is not None and fr.created_by.type == "AUTOMATION":
        return "automation"
    return "manual"


def run_update(source: str, pipeline: str, fr: FlowRun, state: RunState, url: str | None) -> RunUpdate:
    label = fr.state_label
    message = fr.state.message if fr.state is not None else None
    return RunUpdate(
        source=source,
        pipeline=pipeline,
        run_id=fr.id,
        state=state,
        raw_state=label or fr.type or None,
        scheduled_for=fr.expected_start_time,
        # Prefect keeps no "queued at"; the PENDING state's own timestamp is the closest truth we have.
        queued_at=fr.state_time if fr.type == "PENDING" else None,
        started_at=fr.start_time,
        ended_at=fr.end_time if state.terminal else None,
        updated_at=fr.state_time or fr.updated,
        run_type=run_type(fr),
        pool=fr.work_pool_name,
        version=fr.deployment_version or fr.flow_version,
        message=message or None,
        url=url,
    )


def task_update(source: str, pipeline: str, fr: FlowRun | None, tr: TaskRun, state: RunState) -> TaskUpdate:
    policy = tr.empirical_policy
    retries = policy.retries if policy.retries is not None else policy.max_retries
    message = tr.state.message if tr.state is not None else None
    return TaskUpdate(
        source=source,
        pipeline=pipeline,
        run_id=tr.flow_run_id or "",
        task=task_name(tr),
        state=state,
        raw_state=tr.state_label or tr.type or None,
        try_number=tr.run_count,
        # Airflow's meaning, which the Airflow adapter and the simulator use: retries allowed after the
        # first try (so try_number may reach max_tries + 1), not the total number of tries.
        max_tries=retries,
        started_at=tr.start_time,
        ended_at=tr.end_time if state.terminal else None,
        updated_at=tr.state.timestamp if tr.state is not None and tr.state.timestamp else tr.updated,
        pool=fr.work_pool_name if fr is not None else None,
        queue=fr.work_queue_name if fr is not None else None,
        message=message or None,
    )


def schedule_text(dep: Deployment) -> str | None:
    """Active schedules as text ("cron 0 2 * * * (America/New_York)", "every 30s"); None if none run."""
    entries = [s.schedule for s in dep.schedules if s.active]
    if not dep.schedules and dep.schedule is not None and dep.is_schedule_active is not False:
        entries = [dep.schedule]
    texts = []
    for s in entries:
        if s.cron:
            text = f"cron {s.cron}"
        elif s.interval is not None:
            text = f"every {format_duration(timedelta(seconds=s.interval))}"
        elif s.rrule:
            text = f"rrule {s.rrule}"
        else:
            continue
        texts.append(f"{text} ({s.timezone})" if s.timezone and s.timezone != "UTC" else text)
    return "; ".join(texts) or None


def pipeline_info(source: str, pipeline: str, dep: Deployment, url: str | None) -> PipelineInfo:
    # A Prefect 2 deployment whose only schedule is switched off is what Prefect 3 calls paused.
    paused = dep.paused or (not dep.schedules and dep.schedule is not None and dep.is_schedule_active is False)
    return PipelineInfo(
        source=source,
        pipeline=pipeline,
        paused=paused,
        tags=tuple(dep.tags),
        schedule=schedule_text(dep),
        url=url,
    )


def needs_worker(pool: WorkPool) -> bool:
    """Push pools and Prefect-managed pools run flows without a worker of ours, so no heartbeat exists."""
    return pool.type not in NO_WORKER_POOL_TYPES and not pool.type.endswith(":push")


def pool_health(pool: WorkPool, worker: Worker | None, now: datetime) -> ComponentHealth:
    """Healthy iff a worker is online: ONLINE status, or a heartbeat within 3 of its intervals.

    The server decides ONLINE the same way at response time; the heartbeat check also covers servers
    that do not send `status`. A paused pool is healthy on purpose (nobody should be paged for a pool an
    operator paused) but says so in the detail.
    """
    name = f"work_pool:{pool.name}"
    last = worker.last_heartbeat_time if worker is not None else None
    if pool.is_paused or pool.status == "PAUSED":
        return ComponentHealth(
            name=name, healthy=True, last_heartbeat=last, detail="work pool is paused", observed_at=now
        )
    if worker is None:
        return ComponentHealth(
            name=name, healthy=False, detail="no worker has ever polled this work pool", observed_at=now
        )
    horizon = timedelta(seconds=3 * (worker.heartbeat_interval_seconds or 30))
    online = worker.status == "ONLINE" or (last is not None and now - last <= horizon)
    if online:
        return ComponentHealth(name=name, healthy=True, last_heartbeat=last, observed_at=now)
    age = f"{format_duration(timedelta(seconds=int((now - last).total_seconds())))} ago" if last else "never"
    return ComponentHealth(
        name=name, healthy=False, last_heartbeat=last, detail=f"no online worker; last heartbeat {age}", observed_at=now
    )
