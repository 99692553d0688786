"""`when: failed` — the last `consecutive` decisive runs (or a task's last tries) failed or crashed."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from sentinel.model import RunState, RunUpdate
from sentinel.observe.history import PipelineHistory
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, pipeline_labels


class FailedRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"run_id", "state", "raw_state", "started_at", "ended_at", "scheduled_for", "duration", "message", "url",
         "failed_tasks", "consecutive", "task", "try_number"}
    )  # fmt: skip

    when: Literal["failed"]
    consecutive: Annotated[int, Field(ge=1, le=100)] = 1
    level: Literal["run", "task"] = "run"
    tasks: str = "*"  # glob of task names, for level: task


def decisive(ph: PipelineHistory) -> list[RunUpdate]:
    """Terminal runs that say something about health, oldest first (shared until the pipeline changes)."""
    return ph.runs_derived("decisive", _decisive)


def _decisive(ph: PipelineHistory) -> list[RunUpdate]:
    # Skipped and cancelled runs say nothing about health: a human or an upstream decided them.
    return [r for r in ph.terminal() if r.state in (RunState.SUCCESS, RunState.FAILED, RunState.CRASHED)]


def time_independent(_rule: FailedRule) -> bool:
    """Whether findings depend only on the pipeline's history, never on `now` or source health: then the
    engine may reuse them until the pipeline changes."""
    return True


def evaluate(rule: FailedRule, scope: Scope) -> Evaluation:
    findings: list[Finding] = []
    for ph in scope.pipelines:
        if rule.level == "run":
            f = _failed_run(rule, ph)
            if f is not None:
                findings.append(f)
        else:
            findings.extend(_failed_tasks(rule, ph))
    return Evaluation(findings)


_DECISIVE = frozenset({RunState.SUCCESS, RunState.FAILED, RunState.CRASHED})


def _streak(ph: PipelineHistory) -> tuple[RunUpdate, int] | None:
    """The last decisive run and how many decisive runs in a row failed up to it (None: it did not fail).

    Walks `decisive(ph)` from its end without building it: nearly every pipeline's last decisive run
    succeeded, so this usually stops within a run or two."""
    last: RunUpdate | None = None
    streak = 0
    for r in reversed(ph.ordered()):
        state = r.state
        if state not in _DECISIVE:
            continue
        if state == RunState.SUCCESS:
            break
        if last is None:
            last = r
        streak += 1
    return None if last is None else (last, streak)


def _failed_run(rule: FailedRule, ph: PipelineHistory) -> Finding | None:
    # Kept until a run changes: the task updates of a running pipeline cannot end or start a streak.
    hit = ph.runs_derived("failed.streak", _streak)
    if hit is None or hit[1] < rule.consecutive:
        return None
    last, streak = hit
    return Finding(
        pipeline_labels(ph),
        {
            **run_variables(last),
            "failed_tasks": sorted(t.task for t in ph.tasks_of(last.run_id) if t.state.failure),
            "consecutive": streak,
            "value": streak,
        },
    )


def run_variables(run: RunUpdate) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "state": run.state.value,
        "raw_state": run.raw_state,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "scheduled_for": run.scheduled_for,
        "duration": run.duration_seconds,
        "message": run.message,
        "url": run.url,
    }


def _failed_tasks(rule: FailedRule, ph: PipelineHistory) -> list[Finding]:
    outcomes: dict[str, list[Any]] = {}
    for run in decisive(ph):
        for t in ph.tasks_of(run.run_id):
            if fnmatch.fnmatchcase(t.task, rule.tasks) and t.state.terminal:
                outcomes.setdefault(t.task, []).append((run, t))
    out = []
    for task, seq in outcomes.items():
        tail = seq[-rule.consecutive :]
        if len(tail) < rule.consecutive or not all(t.state.failure for _, t in tail):
            continue
        run, t = tail[-1]
        out.append(
            Finding(
                pipeline_labels(ph, task=task),
                {
                    **run_variables(run),
                    "state": t.state.value,
                    "raw_state": t.raw_state,
                    "task": task,
                    "started_at": t.started_at,
                    "ended_at": t.ended_at,
                    "duration": t.duration_seconds,
                    "message": t.message,
                    "try_number": t.try_number,
                    "consecutive": len(tail),
                    "value": len(tail),
                    "failed_tasks": [task],
                },
            )
        )
    return out


MODEL = FailedRule
