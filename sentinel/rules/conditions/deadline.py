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
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, PlainSerializer, PlainValidator

from sentinel.calendars import Calendar, Deadline, Session, TimezoneName, lookup
from sentinel.model import RunState, RunUpdate
from sentinel.observe.history import PipelineHistory, run_order
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, is_paused, pipeline_labels

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
    due = due_period(cal, rule.deadline, tz, scope.now)
    if due is None:
        return Evaluation([])
    session, deadline_at = due
    # The period as an instant range, so each run costs two comparisons rather than a tz conversion.
    period_start, period_end = cal.start_of(session.day), cal.start_of(session.day + timedelta(days=1))
    findings: list[Finding] = []
    for ph in scope.pipelines:
        if is_paused(ph) or _satisfied(ph, period_start, period_end, scope.now):
            continue
        minutes_late = int((scope.now - deadline_at) / timedelta(minutes=1))
        findings.append(
            Finding(
                pipeline_labels(ph),
                {
                    "deadline": deadline_at.astimezone(tz).strftime("%H:%M %Z"),
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
    periods, runs = ph.derived("deadline.successes", _successes)
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
    ends = [run.ended_at or run.updated_at for run in ph.runs.values() if _done_by(run, now)]
    return max((e for e in ends if e is not None), default=None)


MODEL = DeadlineRule
