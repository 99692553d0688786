"""`when: late_start` — a scheduled run has not started `grace` after its scheduled time.

    - alert: RunStartedLate
      when: late_start
      grace: 10m         # what "late" means: not started 10 minutes after the scheduled time
      alert_delay: 5m    # how long a detected lateness must last before this rule reports it

A run is late when it has not started (no `started_at`, and still scheduled, late or queued) and
`scheduled_for + grace <= now`. Two sources of such runs:

- Prefect: runs in `Late` state (`RunState.LATE`) count at once — Prefect has already decided the run
  missed its start, so `grace` is not added; lateness dates from the scheduled time. Runs still
  `Scheduled` past `scheduled_for + grace` count too (Prefect's late-runs service may lag or be off).
- Airflow: the scheduler only creates a DAG run when it is due, so a missing run is invisible among runs.
  The expected one is the DAG's `next_dagrun` run_after (`PipelineInfo.next_run`): once
  `now >= next_run + grace` and no run for it has started — no run with `scheduled_for >= next_run` or
  `started_at >= next_run` (the second covers adapters whose `scheduled_for` is the logical date, one
  interval before run_after) — the pipeline is late. A created but queued run is late by the same test.

Runs ordered before the newest run that did start are overtaken, not late: a Prefect run left in `Late`
while later runs went ahead is history, and a run sitting queued behind others is `stuck`'s business.

`alert_delay` versus the rule's `for:` — both hold an alert back, and they are named apart on purpose:
`alert_delay` is measured in the data, from the instant lateness began (`scheduled_for + grace`, or the
scheduled time of a Prefect `Late` run): the finding is only reported once
`now >= late_since + alert_delay`. It is pure and deterministic — a restart, a gap in polling or a replay
in `sentinel test` gives the same answer, and no pending alert is shown while it holds. `for:` is the
engine's lifecycle hold, counted from the first evaluation that saw the finding, showing the alert as
pending meanwhile. Use `grace` for what late means, `alert_delay` to tolerate short lateness without a
pending alert, and `for:` as everywhere else.

One alert per pipeline (the longest-late run); paused pipelines raise nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar, Literal

from sentinel.durations import Duration, format_duration
from sentinel.model import RunState, RunUpdate
from sentinel.observe.history import PipelineHistory
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, is_paused, pipeline_labels


def _not_started(run: RunUpdate) -> bool:
    # Identity tests rather than set membership: Enum.__hash__ is a Python-level call on a hot path.
    s = run.state
    return run.started_at is None and (s is RunState.SCHEDULED or s is RunState.LATE or s is RunState.QUEUED)


class LateStartRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"scheduled_for", "late_since", "late_by", "minutes_late", "grace", "run_id", "state", "raw_state", "url"}
    )

    when: Literal["late_start"]
    grace: Duration = timedelta(minutes=5)
    alert_delay: Duration = timedelta(0)


def evaluate(rule: LateStartRule, scope: Scope) -> Evaluation:
    findings: list[Finding] = []
    for ph in scope.pipelines:
        if is_paused(ph):
            continue
        late = _late(ph, rule.grace, scope.now)
        if late is None:
            continue
        scheduled, since, run = late
        if scope.now < since + rule.alert_delay:
            continue
        minutes = int((scope.now - scheduled) / timedelta(minutes=1))
        findings.append(
            Finding(
                pipeline_labels(ph),
                {
                    "scheduled_for": scheduled,
                    "late_since": since,
                    "late_by": format_duration(timedelta(seconds=int((scope.now - scheduled).total_seconds()))),
                    "minutes_late": minutes,
                    "grace": format_duration(rule.grace),
                    "run_id": run.run_id if run else None,
                    "state": run.state.value if run else None,
                    "raw_state": run.raw_state if run else None,
                    "url": (run.url if run else None) or (ph.info.url if ph.info else None),
                    "value": minutes,
                },
            )
        )
    return Evaluation(findings)


def _late(ph: PipelineHistory, grace: timedelta, now: datetime) -> tuple[datetime, datetime, RunUpdate | None] | None:
    """(scheduled time, when lateness began, the run if one exists) of the longest-late start, if any."""
    # Only runs ordered after the newest run that did start can be late: older ones were overtaken.
    # Runs are ordered by the period they are for, so this reads only the tail of the history.
    pending: list[RunUpdate] = []
    last_started: RunUpdate | None = None
    for run in reversed(ph.ordered()):
        if not _not_started(run):
            last_started = run
            break
        pending.append(run)

    best: tuple[datetime, datetime, RunUpdate | None] | None = None

    def consider(scheduled: datetime, since: datetime, run: RunUpdate | None) -> None:
        nonlocal best
        if since <= now and (best is None or since < best[1]):
            best = (scheduled, since, run)

    for run in pending:
        if run.scheduled_for is None:
            continue
        # Prefect has already judged a Late run late; grace would count its tolerance twice.
        since = run.scheduled_for if run.state is RunState.LATE else run.scheduled_for + grace
        consider(run.scheduled_for, since, run)

    expected = ph.info.next_run if ph.info is not None else None
    if expected is not None and expected + grace <= now and not _started_for(last_started, expected, now):
        created = [r for r in pending if r.scheduled_for is not None and r.scheduled_for >= expected]
        consider(expected, expected + grace, created[-1] if created else None)
    return best


def _started_for(run: RunUpdate | None, expected: datetime, now: datetime) -> bool:
    """Whether the newest started run is the expected one: it is for `expected` or later, or it started
    at or after it (adapters whose `scheduled_for` is the logical date, one interval before run_after)."""
    if run is None:
        return False
    if run.scheduled_for is not None and run.scheduled_for >= expected:
        return True
    return run.started_at is not None and expected <= run.started_at <= now


def quiet_until(rule: LateStartRule, ph: PipelineHistory, scope: Scope) -> datetime | None:
    """For a pipeline `evaluate` found on time: the earliest instant a start could be late enough to report
    (`late_since + alert_delay` of every candidate), its history unchanged."""
    if is_paused(ph):
        return None
    pending: list[RunUpdate] = []
    last_started: RunUpdate | None = None
    for run in reversed(ph.ordered()):
        if not _not_started(run):
            last_started = run
            break
        pending.append(run)
    sinces = [
        run.scheduled_for if run.state is RunState.LATE else run.scheduled_for + rule.grace
        for run in pending
        if run.scheduled_for is not None
    ]
    expected = ph.info.next_run if ph.info is not None else None
    if expected is not None and not _started_for(last_started, expected, scope.now):
        sinces.append(expected + rule.grace)
    return min(sinces) + rule.alert_delay if sinces else None


MODEL = LateStartRule
