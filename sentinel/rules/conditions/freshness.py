"""`when: freshness` — the last successful run is older than `max_age`.

    - alert: MarketDataStale
      when: freshness
      max_age: 1d
      calendar_time: trading_days   # optional: count only time on the calendar's session dates
      calendar: XNYS                # optional; default the group's calendar

Age is measured from the end of the latest successful run (any period) to now. How it is counted:

- no `calendar_time` (default): wall-clock time. `max_age: 26h` means 26 real hours.
- `calendar_time: trading_days` (or `true`): only time falling on session *dates* counts, whole local
  days of the calendar, any hour. Weekends and holidays do not age the data, so "one trading day" is
  `max_age: 1d` — a success at 16:50 on Wednesday 2026-11-25 is exactly one trading day old at 16:50 on
  Friday 2026-11-27 (Thanksgiving does not count), and Friday's success is fresh through Monday.
- `calendar_time: sessions`: only time inside sessions (open to close) counts; `max_age: 2h` means two
  hours of market time, which is what an intraday feed expects.

Without a calendar (neither on the rule nor on the group) every day is a session date, so
`trading_days` equals wall-clock time and `sessions` counts whole days.

A pipeline with no success in the history held is judged from its oldest known run: it fires once we have
seen it for longer than `max_age` without a success, and a pipeline with no runs at all raises nothing
(nothing to date it by). Paused pipelines raise nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator

from sentinel.calendars import Calendar, lookup
from sentinel.durations import Duration, format_duration
from sentinel.model import RunState, RunUpdate
from sentinel.observe.history import PipelineHistory, run_order
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, is_paused, pipeline_labels


def _calendar_time(v: Any) -> Any:
    # `true` reads naturally in YAML ("count calendar time"); it means the common case, trading days.
    if v is True:
        return "trading_days"
    if v is False:
        return None
    return v


class FreshnessRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"age", "age_seconds", "max_age", "last_success", "run_id", "calendar"}
    )

    when: Literal["freshness"]
    max_age: Duration
    calendar_time: Annotated[Literal["trading_days", "sessions"] | None, BeforeValidator(_calendar_time)] = None
    calendar: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @field_validator("max_age")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("max_age must be greater than 0")
        return v


def _never(_labels: Any) -> bool:
    return False


def evaluate(rule: FreshnessRule, scope: Scope) -> Evaluation:
    cal: Calendar | None = None
    if rule.calendar_time is not None:
        try:
            cal = lookup(scope.extras, rule.calendar or scope.calendar)
        except KeyError:
            return Evaluation([], settled=_never)
    findings: list[Finding] = []
    for ph in scope.pipelines:
        if is_paused(ph):
            continue
        ref, last = _reference(ph, scope.now, scope.now - rule.max_age)
        if ref is None:
            continue
        # Calendar time never exceeds wall time, so the cheap check settles the common fresh case.
        age = scope.now - ref
        if age <= rule.max_age:
            continue
        if cal is not None:
            age = (
                cal.trading_time_between(ref, scope.now)
                if rule.calendar_time == "trading_days"
                else cal.session_time_between(ref, scope.now)
            )
            if age <= rule.max_age:
                continue
        seconds = int(age.total_seconds())
        findings.append(
            Finding(
                pipeline_labels(ph),
                {
                    "age": format_duration(timedelta(seconds=seconds)),
                    "age_seconds": seconds,
                    "max_age": format_duration(rule.max_age),
                    "last_success": _ended(last) if last is not None else None,
                    "run_id": last.run_id if last is not None else None,
                    "calendar": cal.name if cal is not None else None,
                    "value": seconds,
                },
            )
        )
    return Evaluation(findings)


def _ended(run: RunUpdate) -> datetime:
    return run.ended_at or run.updated_at or run_order(run)


def _reference(ph: PipelineHistory, now: datetime, fresh_after: datetime) -> tuple[datetime | None, RunUpdate | None]:
    """When freshness is measured from — the latest success's end, else the oldest known run — and that
    success. Stops at the first success ending after `fresh_after`: fresh is fresh, whichever it is."""
    last: RunUpdate | None = None
    last_end: datetime | None = None
    oldest: datetime | None = None
    # Newest periods first: the recent run is usually the fresh one. A backfill (old period, recent
    # end) is still found by the full scan when nothing recent is fresh.
    for run in reversed(ph.ordered()):
        if run.state is not RunState.SUCCESS:
            continue
        ended = _ended(run)
        if ended > now:
            continue  # not yet finished at `now` in a replayed history
        if ended > fresh_after:
            return ended, run
        if last_end is None or ended > last_end:
            last, last_end = run, ended
    if last is not None:
        return last_end, last
    for run in ph.ordered():
        t = run_order(run)
        if t <= now:
            oldest = t
            break
    return oldest, None


def quiet_until(rule: FreshnessRule, ph: PipelineHistory, scope: Scope) -> datetime | None:
    """For a pipeline `evaluate` found fresh: the earliest instant it could be stale, its history unchanged.

    The reference only moves later as time passes (a replayed success coming into view ends after the one
    in use), so the age grows at most as fast as the clock: wall age reaches `max_age` at `ref + max_age`,
    and calendar age, never faster than wall time, no earlier than `now + (max_age - age)`."""
    if is_paused(ph):
        return None
    now = scope.now
    ref, _ = _reference(ph, now, now - rule.max_age)
    if ref is None:
        runs = ph.ordered()
        return run_order(runs[0]) if runs else None  # dated from its first run, once that run is not future
    until = ref + rule.max_age
    if until > now or rule.calendar_time is None:
        return until
    try:
        cal = lookup(scope.extras, rule.calendar or scope.calendar)
    except KeyError:
        return now
    age = (
        cal.trading_time_between(ref, now)
        if rule.calendar_time == "trading_days"
        else cal.session_time_between(ref, now)
    )
    return now + max(rule.max_age - age, timedelta(0))


MODEL = FreshnessRule
