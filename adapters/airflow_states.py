"""Airflow's state words mapped onto `RunState`, and mapped task instances folded into one task.

Decisions worth knowing (Airflow's word is always kept in `raw_state` for messages):

- DAG run with no state (None) is `scheduled`: created but not yet considered by the scheduler.
- `up_for_retry` is `retrying`: the try failed and another is coming; rules count retries with it.
- `up_for_reschedule` (a reschedule-mode sensor between pokes), `deferred` (waiting on the triggerer) and
  `awaiting_input` (human-in-the-loop, 3.1+) are `running`: the task is logically in progress, and a
  `stuck`/`duration` rule should see it that way rather than as queued.
- `restarting` (cleared while running) is `queued`: it will be picked up again, it is not executing now,
  and it is not a failure retry.
- `upstream_failed` is `skipped`, not `failed`: it is a consequence, the task's own code never ran. The
  failure is already reported once by the task that failed and by the DAG run itself; mapping it to
  `failed` would page once per downstream task for one root cause and blame tasks that did nothing.
- `removed` (the task vanished from the DAG) is `skipped`: terminal, it will not run, not a failure.
- `shutdown` (Airflow 2 only, an external kill request) is `cancelled`.
- Task instance with no state ("none"/None) is `scheduled`: created with its run, waiting on upstreams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sentinel.model import RunState, TaskUpdate

RUN_STATES: dict[str | None, RunState] = {
    None: RunState.SCHEDULED,
    "queued": RunState.QUEUED,
    "running": RunState.RUNNING,
    "success": RunState.SUCCESS,
    "failed": RunState.FAILED,
}

TASK_STATES: dict[str | None, RunState] = {
    None: RunState.SCHEDULED,
    "none": RunState.SCHEDULED,
    "scheduled": RunState.SCHEDULED,
    "queued": RunState.QUEUED,
    "running": RunState.RUNNING,
    "success": RunState.SUCCESS,
    "failed": RunState.FAILED,
    "up_for_retry": RunState.RETRYING,
    "up_for_reschedule": RunState.RUNNING,
    "deferred": RunState.RUNNING,
    "awaiting_input": RunState.RUNNING,
    "restarting": RunState.QUEUED,
    "upstream_failed": RunState.SKIPPED,
    "skipped": RunState.SKIPPED,
    "removed": RunState.SKIPPED,
    "shutdown": RunState.CANCELLED,
}

RUN_TYPES = {"dataset_triggered": "asset_triggered"}  # Airflow 2 spelling of the same thing


def run_state(raw: str | None, on_unknown: Callable[[], None]) -> RunState:
    return _lookup(RUN_STATES, raw, on_unknown)


def task_state(raw: str | None, on_unknown: Callable[[], None]) -> RunState:
    return _lookup(TASK_STATES, raw, on_unknown)


def _lookup(table: dict[str | None, RunState], raw: str | None, on_unknown: Callable[[], None]) -> RunState:
    key = raw.lower() if isinstance(raw, str) else raw
    state = table.get(key)
    if state is None:
        # A newer Airflow may add states; count it and keep going rather than drop the row or crash.
        on_unknown()
        return RunState.UNKNOWN
    return state


# When mapped instances disagree, the folded task shows the one a human must hear about first: a failure
# anywhere is a failed task; otherwise anything still in flight means the task is not done.
_FOLD_PRIORITY = (
    RunState.FAILED,
    RunState.CRASHED,
    RunState.RETRYING,
    RunState.RUNNING,
    RunState.QUEUED,
    RunState.SCHEDULED,
    RunState.LATE,
    RunState.PAUSED,
    RunState.UNKNOWN,
    RunState.CANCELLED,
    RunState.SUCCESS,
    RunState.SKIPPED,
)


def fold_mapped(instances: Sequence[TaskUpdate], map_count: int | None = None) -> TaskUpdate:
    """One TaskUpdate for all mapped instances of (run, task_id); `map_count` defaults to len(instances)."""
    if len(instances) == 1 and map_count in (None, 1):
        return instances[0]
    state = min((i.state for i in instances), key=_FOLD_PRIORITY.index)
    worst = next(i for i in instances if i.state == state)
    starts = [i.started_at for i in instances if i.started_at is not None]
    all_done = all(i.state.terminal for i in instances)
    ends = [i.ended_at for i in instances if i.ended_at is not None]
    updated = [i.updated_at for i in instances if i.updated_at is not None]
    return worst.model_copy(
        update={
            "state": state,
            "raw_state": worst.raw_state,
            "try_number": max(i.try_number for i in instances),
            "started_at": min(starts) if starts else None,
            "ended_at": max(ends) if ends and all_done else None,
            "updated_at": max(updated) if updated else None,
            "map_count": map_count if map_count is not None else len(instances),
        }
    )


def latest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None
