"""`when: retries` — task retries above `threshold`, in the latest run or across runs in a `window:`.

A task's retries are `max(try_number - 1, 0)`: its first try is not a retry. Airflow also bumps
`try_number` when a task is cleared by hand, so a manual re-run counts too — it is rework either way.
`tasks:` (a glob of task names) limits which tasks count.

- Without `window:` the latest run that has task records is judged (a run that only just got created has
  none yet and must not resolve the previous run's alert), while it runs and after it finishes; the alert
  resolves when a newer run shows up with retries at or under the threshold.
- With `window:`, retries are summed over runs that are still going or ended within the window.

One alert per pipeline; `run_id` is the run with the most retries (the latest on a tie), `tasks` the tasks
that retried (most retries first, at most `MAX_TASK_NAMES` of them so a huge mapped DAG cannot blow up a
message).
"""

from __future__ import annotations

import fnmatch
from datetime import datetime, timedelta  # noqa: F401 - pydantic resolves annotations at runtime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from sentinel.durations import Duration, format_duration
from sentinel.model import RunUpdate
from sentinel.observe.history import PipelineHistory
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, per_pipeline, pipeline_labels

MAX_TASK_NAMES = 20


class RetriesRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset({"retries", "run_id", "tasks", "runs", "window", "threshold"})

    when: Literal["retries"]
    threshold: Annotated[int, Field(ge=0)] = 0
    window: Duration | None = None
    tasks: str = "*"


def time_independent(rule: RetriesRule) -> bool:
    """Without `window:` only the latest run with tasks counts, whatever `now` is."""
    return rule.window is None


def evaluate(rule: RetriesRule, scope: Scope) -> Evaluation:
    return per_pipeline(_judge, rule, scope)


def _judge(rule: RetriesRule, ph: PipelineHistory, scope: Scope) -> Finding | None:
    runs = _runs_in_view(rule, ph, scope)
    total = 0
    per_task: dict[str, int] = {}
    top: tuple[int, RunUpdate] | None = None
    for run in runs:
        in_run = 0
        for t in ph.tasks_of(run.run_id):
            n = max(t.try_number - 1, 0)
            if n == 0 or not fnmatch.fnmatchcase(t.task, rule.tasks):
                continue
            in_run += n
            per_task[t.task] = per_task.get(t.task, 0) + n
        total += in_run
        # `>=`: runs come oldest first, so on a tie the most recent run is the one named.
        if in_run and (top is None or in_run >= top[0]):
            top = (in_run, run)
    if total <= rule.threshold or top is None:
        return None
    names = sorted(per_task, key=lambda k: (-per_task[k], k))[:MAX_TASK_NAMES]
    return Finding(
        pipeline_labels(ph),
        {
            "retries": total,
            "run_id": top[1].run_id,
            "tasks": names,
            "runs": len(runs),
            "window": format_duration(rule.window) if rule.window is not None else None,
            "threshold": rule.threshold,
            "value": total,
        },
    )


def _runs_in_view(rule: RetriesRule, ph: PipelineHistory, scope: Scope) -> list[RunUpdate]:
    if rule.window is None:
        for run in reversed(ph.ordered()):
            if ph.tasks.get(run.run_id):
                return [run]
        return []
    since = scope.now - rule.window
    return [
        r for r in ph.ordered() if not r.state.terminal or (r.ended_at is not None and since < r.ended_at <= scope.now)
    ]


def quiet_until(rule: RetriesRule, ph: PipelineHistory, scope: Scope) -> datetime | None:
    """With `window:`, what counts changes only when a finished run's end enters or leaves the window."""
    if rule.window is None:
        return None
    now, best = scope.now, None
    for r in ph.ordered():
        if r.state.terminal and r.ended_at is not None:
            for t in (r.ended_at, r.ended_at + rule.window):
                if t > now and (best is None or t < best):
                    best = t
    return best


MODEL = RetriesRule
