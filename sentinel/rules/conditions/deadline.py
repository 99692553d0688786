"""`when: deadline` — a successful run for the period must exist by a time.

    - alert: PricesLate
      when: deadline
      deadline: close + 45m        # HH:MM, or open/close ± offset on the calendar's session
      timezone: America/New_York   # where HH:MM is read; default the calendar's timezone, else UTC
      calendar: XNYS               # optional; default the group's calendar, else every day

Periods are the calendar's session dates (every date when there is no calendar), so holidays expect
nothing and `close + 45m` follows an early close (13:45 New York on 2026-11-27). The period a run is
*for* is its `scheduled_for` (Airflow logical date / run_after, Prefect expected start) read as a date in
the calendar's timezone, not when it ran: a backfill for an old date neither satisfies today's deadline
nor pages for its own.

Only the most recent period whose deadline has passed is judged. It fires from that deadline while no
successful run for that date exists, and resolves when one arrives or when the next period's deadline
passes with a success. Older periods never page: a missed Tuesday is news on Tuesday, not next week.
Paused pipelines raise nothing. Labels are source and pipeline only — the period is a template field,
never a label, so one pipeline has one deadline alert.

`predict: true` adds a warning before the deadline (see `sentinel.rules.eta` for the projection):

      predict: true
      predict_percentile: 90        # project each remaining task (or the run) at its p90
      predict_min_history: 5        # successful runs needed before projecting anything
      predict_alert: DeadlineAtRisk # the warning's alertname (severity: predict_severity, warning)

While the next deadline has not passed and no success for its period exists, the run for that period
(going, or not started yet) is projected to finish at `eta`; when that is after the deadline the rule
finds a second alert, `predict_alert`, labelled like the miss alert plus `deadline_alert: <alert>` (so two
deadline rules of one pipeline stay two alerts). It resolves when the projection comes back inside the
deadline, when a success arrives, and at the deadline itself: from that instant that period is judged by
the miss alert, so the warning resolves on the very tick the miss alert fires — one hand-over, never both
firing. The warning stays out of `depends_on` (it neither explains nor is explained by other alerts).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, PlainSerializer, PlainValidator

from sentinel.calendars import Calendar, Deadline, Session, TimezoneName, lookup
from sentinel.model import RunState, RunUpdate
from sentinel.observe.history import PipelineHistory, run_order
from sentinel.rules import eta
from sentinel.rules.base import AlertName, Evaluation, Finding, RuleBase, Scope, is_paused, pipeline_labels

DeadlineExpr = Annotated[Deadline, PlainValidator(Deadline.parse), PlainSerializer(str, return_type=str)]
CalendarName = Annotated[str, Field(min_length=1, max_length=64)]


class DeadlineRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"deadline", "deadline_at", "period", "minutes_late", "last_success", "calendar", "early_close"}
    )

    when: Literal["deadline"]
    deadline: DeadlineExpr
    timezone: TimezoneName | None = None
    calendar: CalendarName | None = None
    predict: bool = False
    predict_percentile: Annotated[int, Field(ge=1, le=99)] = 90
    predict_min_history: Annotated[int, Field(ge=1, le=eta.HISTORY)] = 5
    predict_alert: AlertName = "DeadlineAtRisk"
    predict_severity: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "warning"


# The warning's text; its fields are the finding's variables (`eta`, `percentile`, `deadline`, ...).
PREDICT_ANNOTATIONS = {
    "summary": "{{ pipeline }} may miss its {{ deadline }} deadline for {{ period }}: "
    "projected to finish at {{ eta }} (p{{ percentile }} of its history)",
    "eta": "{{ eta }}",
    "percentile": "p{{ percentile }}",
    "deadline": "{{ deadline }}",
}


def _never(_labels: Any) -> bool:
    return False


def evaluate(rule: DeadlineRule, scope: Scope) -> Evaluation:
    rule_tz = ZoneInfo(rule.timezone) if rule.timezone else None
    try:
        cal = lookup(scope.extras, rule.calendar or scope.calendar, rule_tz)
    except KeyError:
        # An unknown calendar cannot judge anything; keep what is firing rather than resolve it.
        return Evaluation([], settled=_never)
    tz = rule_tz or cal.tz
    findings = _at_risk(rule, scope, cal, tz) if rule.predict else []
    due = due_period(cal, rule.deadline, tz, scope.now)
    if due is None:
        return Evaluation(findings)
    session, deadline_at = due
    # The period as an instant range, so each run costs two comparisons rather than a tz conversion.
    period_start, period_end = cal.start_of(session.day), cal.start_of(session.day + timedelta(days=1))
    deadline_text = deadline_at.astimezone(tz).strftime("%H:%M %Z")
    minutes_late = int((scope.now - deadline_at) / timedelta(minutes=1))
    for ph in scope.pipelines:
        if is_paused(ph) or _satisfied(ph, period_start, period_end, scope.now):
            continue
        findings.append(
            Finding(
                pipeline_labels(ph),
                {
                    "deadline": deadline_text,
                    "deadline_at": deadline_at,
                    "period": session.day.isoformat(),
                    "minutes_late": minutes_late,
                    "last_success": _last_success(ph, scope.now),
                    "calendar": cal.name,
                    "early_close": session.early_close,
                    "value": minutes_late,
                },
            )
        )
    return Evaluation(findings)


def _at_risk(rule: DeadlineRule, scope: Scope, cal: Calendar, tz: ZoneInfo) -> list[Finding]:
    """The predicted half: pipelines whose run for the next deadline's period is projected to miss it."""
    upcoming = next_period(cal, rule.deadline, tz, scope.now)
    if upcoming is None:
        return []
    session, deadline_at = upcoming
    start, end = cal.start_of(session.day), cal.start_of(session.day + timedelta(days=1))
    q = rule.predict_percentile / 100
    out: list[Finding] = []
    deadline_text = deadline_at.astimezone(tz).strftime("%H:%M %Z")
    for ph in scope.pipelines:
        if is_paused(ph):
            continue
        projected = eta.estimate(ph, start, end, scope.now, q, rule.predict_min_history)
        if projected is None or projected.finish <= deadline_at:
            continue
        minutes_over = int((projected.finish - deadline_at) / timedelta(minutes=1))
        out.append(
            Finding(
                pipeline_labels(ph, deadline_alert=rule.alert),
                {
                    "deadline": deadline_text,
                    "deadline_at": deadline_at,
                    "period": session.day.isoformat(),
                    "eta": projected.finish.astimezone(tz).strftime("%H:%M %Z"),
                    "eta_at": projected.finish,
                    "percentile": rule.predict_percentile,
                    "basis": projected.basis,
                    "run_id": projected.run_id,
                    "minutes_over": minutes_over,
                    "calendar": cal.name,
                    "value": minutes_over,
                },
                alertname=rule.predict_alert,
                severity=rule.predict_severity,
                annotations=PREDICT_ANNOTATIONS,
            )
        )
    return out


def due_period(cal: Calendar, deadline: Deadline, tz: ZoneInfo, now: datetime) -> tuple[Session, datetime] | None:
    """The most recent session whose deadline is at or before `now`, with that deadline."""
    # Start two days ahead: `open - 10h` or an HH:MM in a timezone east of the calendar's can put a
    # session's deadline on the previous local date.
    for session in cal.sessions_back(cal.date_of(now) + timedelta(days=2)):
        at = deadline.resolve(session, tz)
        if at <= now:
            return session, at
    return None


def _done_by(run: RunUpdate, now: datetime) -> bool:
    # A run that ends after `now` belongs to the future of a replayed history: not yet a success.
    ended = run.ended_at or run.updated_at
    return run.state is RunState.SUCCESS and (ended is None or ended <= now)


def _satisfied(ph: PipelineHistory, start: datetime, end: datetime, now: datetime) -> bool:
    """Whether a successful run *for* [start, end) exists, done by `now`."""
    periods, runs = ph.runs_derived("deadline.successes", _successes)
    # Successes are ordered by the period they are for: look only at those inside [start, end).
    i = bisect_left(periods, end)
    while i > 0:
        i -= 1
        if periods[i] < start:
            return False
        if _done_by(runs[i], now):
            return True
    return False


def _successes(ph: PipelineHistory) -> tuple[list[datetime], list[RunUpdate]]:
    # Kept per pipeline version: a day's deadline is judged every tick against the same few runs, and an
    # hourly pipeline has a whole day of runs after yesterday's period to skip otherwise.
    runs = [run for run in ph.ordered() if run.state is RunState.SUCCESS]
    return [run_order(run) for run in runs], runs


def _last_success(ph: PipelineHistory, now: datetime) -> datetime | None:
    ends = ph.runs_derived("deadline.success_ends", _success_ends)
    i = bisect_right(ends, now)
    return ends[i - 1] if i else None


def _success_ends(ph: PipelineHistory) -> list[datetime]:
    # Sorted, per pipeline version: a firing deadline alert asks for the last success on every tick.
    ends = (run.ended_at or run.updated_at for run in ph.runs.values() if run.state is RunState.SUCCESS)
    return sorted(e for e in ends if e is not None)


def quiet_until(rule: DeadlineRule, ph: PipelineHistory, scope: Scope) -> datetime | None:
    """For a pipeline `evaluate` found nothing for: the miss verdict cannot change before the next
    deadline, its history unchanged (a success done by now stays done). With `predict`, a projection
    runs ahead of the clock by at most what is left of it now (`eta`), so it cannot pass the deadline
    before `deadline - (eta - now)`."""
    if is_paused(ph):
        return None
    rule_tz = ZoneInfo(rule.timezone) if rule.timezone else None
    try:
        cal = lookup(scope.extras, rule.calendar or scope.calendar, rule_tz)
    except KeyError:
        return scope.now
    tz = rule_tz or cal.tz
    upcoming = next_period(cal, rule.deadline, tz, scope.now)
    if upcoming is None:
        return None
    session, deadline_at = upcoming
    if not rule.predict:
        return deadline_at
    start, end = cal.start_of(session.day), cal.start_of(session.day + timedelta(days=1))
    projected = eta.estimate(ph, start, end, scope.now, rule.predict_percentile / 100, rule.predict_min_history)
    if projected is None:
        return deadline_at
    return min(deadline_at, deadline_at - (projected.finish - scope.now))


def next_deadline(cal: Calendar, deadline: Deadline, tz: ZoneInfo, now: datetime) -> datetime | None:
    """The earliest session deadline after `now` (None if the calendar has no session within a year)."""
    upcoming = next_period(cal, deadline, tz, now)
    return upcoming[1] if upcoming is not None else None


def next_period(cal: Calendar, deadline: Deadline, tz: ZoneInfo, now: datetime) -> tuple[Session, datetime] | None:
    """The session with the earliest deadline after `now`, with that deadline."""
    key = (id(cal), deadline, tz.key, now)
    hit = _NEXT.get(key)
    if hit is not None:
        return hit[0]
    found: tuple[Session, datetime] | None = None
    # From two days back, as `due_period` looks two days ahead: a deadline can fall on another local date.
    day = cal.date_of(now) - timedelta(days=3)
    for _ in range(400):
        session = cal.next_session(day)
        if session is None:
            break
        at = deadline.resolve(session, tz)
        if at > now:
            found = (session, at)
            break
        day = session.day
    if len(_NEXT) > 256:
        _NEXT.clear()  # a tick asks with one `now` for thousands of pipelines; older answers are dead
    _NEXT[key] = (found,)
    return found


_NEXT: dict[tuple[int, Deadline, str, datetime], tuple[tuple[Session, datetime] | None]] = {}


MODEL = DeadlineRule
