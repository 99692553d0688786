"""`when: stuck` — a run has waited to start longer than `max_wait`.

Waiting means queued (`QUEUED`), or scheduled but not running (`SCHEDULED` / `LATE`) with its
`scheduled_for` already past: a run scheduled for tomorrow is not waiting yet. The wait is measured from
`queued_at`, else `scheduled_for`; a run with neither cannot be measured and is not judged.

One alert per pipeline (no run id in labels); when several runs wait, the longest wait is reported and
`count` says how many are over the limit. Paused pipelines raise nothing: a paused DAG/deployment is a
state of its own. While a source is unreachable its runs' states are stale (a queued run may well have
started), so no new findings are made for it and its existing alerts are held as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from sentinel.durations import Duration, format_duration
from sentinel.model import RunState, RunUpdate
from sentinel.observe.history import PipelineHistory
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, is_paused, pipeline_labels

_NOT_STARTED = frozenset({RunState.SCHEDULED, RunState.LATE})
_WAITING = _NOT_STARTED | {RunState.QUEUED}


class StuckRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"run_id", "state", "waiting", "waiting_text", "since", "count", "max_wait"}
    )

    when: Literal["stuck"]
    max_wait: Duration = timedelta(minutes=30)


def evaluate(rule: StuckRule, scope: Scope) -> Evaluation:
    findings: list[Finding] = []
    blind = {s for s, h in scope.history.health.items() if not h.reachable}
    for ph in scope.pipelines:
        if ph.key.source in blind or is_paused(ph):
            continue
        f = _judge(rule, ph, scope.now)
        if f is not None:
            findings.append(f)

    def settled(labels: Mapping[str, str]) -> bool:
        return labels.get("source") not in blind

    return Evaluation(findings, settled)


def waiting_since(run: RunUpdate, now: datetime) -> datetime | None:
    """When `run` started waiting, or None if it is not waiting (or cannot be measured)."""
    if run.state is RunState.QUEUED:
        return run.queued_at or run.scheduled_for
    if run.state in _NOT_STARTED and run.scheduled_for is not None and run.scheduled_for <= now:
        return run.queued_at or run.scheduled_for
    return None


def _waiting_runs(ph: PipelineHistory) -> list[RunUpdate]:
    # Nearly every run is finished; only a change can make one wait, so the filter is kept per version.
    return [run for run in ph.runs.values() if run.state in _WAITING]


def _judge(rule: StuckRule, ph: PipelineHistory, now: datetime) -> Finding | None:
    worst: tuple[timedelta, RunUpdate, datetime] | None = None
    count = 0
    for run in ph.runs_derived("stuck.waiting", _waiting_runs):
        since = waiting_since(run, now)
        if since is None:
            continue
        waited = now - since
        if waited <= rule.max_wait:
            continue
        count += 1
        if worst is None or waited > worst[0]:
            worst = (waited, run, since)
    if worst is None:
        return None
    waited, run, since = worst
    return Finding(
        pipeline_labels(ph),
        {
            "run_id": run.run_id,
            "state": run.state.value,
            "waiting": waited.total_seconds(),
            "waiting_text": format_duration(timedelta(seconds=round(waited.total_seconds()))),
            "since": since,
            "count": count,
            "max_wait": format_duration(rule.max_wait),
            "value": waited.total_seconds(),
        },
    )


def quiet_until(rule: StuckRule, ph: PipelineHistory, scope: Scope) -> datetime | None:
    """For a pipeline `evaluate` found nothing for: the earliest instant one of its runs waits longer than
    `max_wait`, its history unchanged. Judged as if the source were reachable: a source coming back
    changes no history, and a pipeline held meanwhile is simply judged again then."""
    if is_paused(ph):
        return None
    best: datetime | None = None
    for run in ph.runs_derived("stuck.waiting", _waiting_runs):
        since = run.queued_at or run.scheduled_for
        if since is None or (run.state is not RunState.QUEUED and run.scheduled_for is None):
            continue
        at = since + rule.max_wait
        if run.state is not RunState.QUEUED and run.scheduled_for is not None and run.scheduled_for > at:
            at = run.scheduled_for  # not waiting before its scheduled time
        if best is None or at < best:
            best = at
    return best


MODEL = StuckRule
