"""deadline, freshness and late_start under a frozen clock, on the XNYS calendar around Thanksgiving 2026."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel.calendars import CalendarConfig, Calendars
from sentinel.clock import FrozenClock
from sentinel.model import PipelineInfo, PollResult, RunState, RunUpdate, SourceHealth
from sentinel.observe.history import History
from sentinel.rules.base import Scope
from sentinel.rules.conditions import deadline, freshness, late_start
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import load_rules

P = "market_data_ingest"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def run(
    run_id: str,
    state: RunState,
    scheduled_for: datetime | None,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    pipeline: str = P,
    run_type: str = "scheduled",
) -> RunUpdate:
    return RunUpdate(
        source="af",
        pipeline=pipeline,
        run_id=run_id,
        state=state,
        scheduled_for=scheduled_for,
        started_at=started_at,
        ended_at=ended_at,
        updated_at=ended_at or started_at or scheduled_for,
        run_type=run_type,
    )


def daily(day: int, state: RunState = RunState.SUCCESS, month: int = 11, end_minute: int = 20) -> RunUpdate:
    """The scheduled run for a session: due 16:00 New York (21:00 UTC in winter), done a little later."""
    at = utc(2026, month, day, 21, 0)
    return run(f"scheduled__{month}-{day}", state, at, at, at + timedelta(minutes=end_minute))


def poll(*runs: RunUpdate, info: PipelineInfo | None = None) -> PollResult:
    return PollResult(
        source="af",
        health=SourceHealth(source="af", reachable=True, observed_at=utc(2026, 11, 20)),
        runs=runs,
        pipelines=(info,) if info is not None else None,
    )


def info(paused: bool = False, next_run: datetime | None = None) -> PipelineInfo:
    return PipelineInfo(source="af", pipeline=P, paused=paused, next_run=next_run)


RULES = """\
groups:
  - name: market-data
    pipelines: {pipeline: "market_*"}
    calendar: XNYS
    rules:
      - alert: PricesLate
        when: deadline
        deadline: close + 45m
        timezone: America/New_York
        severity: critical
        annotations:
          summary: "{{ pipeline }}: no successful run for {{ period }} by {{ deadline }} ({{ minutes_late }}m late)"
"""


def engine(tmp_path: Path, text: str = RULES, calendars: Calendars | None = None) -> RuleEngine:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    e = RuleEngine(load_rules([p]))
    e.extras["calendars"] = calendars or Calendars()
    return e


def firing(e: RuleEngine) -> dict[str, dict[str, str]]:
    return {a.name: dict(a.annotations) for a in e.alerts() if a.ends_at is None}


def states(e: RuleEngine) -> dict[str, str]:
    return {dict(i.labels)["alertname"]: i.state for i in e.instance_list()}


# -- deadline ------------------------------------------------------------------------------------


def test_deadline_normal_day(tmp_path: Path) -> None:
    h, e = History(), engine(tmp_path)
    h.apply(poll(daily(24), daily(25)))
    # Wednesday 16:46 New York: Wednesday's deadline (16:45) passed and Wednesday's run succeeded
    assert firing(e) == {} and e.evaluate(h, utc(2026, 11, 25, 21, 46)) == []


def test_deadline_failure_then_late_recovery(tmp_path: Path) -> None:
    clock = FrozenClock(utc(2026, 11, 25, 21, 44))
    h, e = History(), engine(tmp_path)
    h.apply(poll(daily(24), daily(25, RunState.FAILED)))
    e.evaluate(h, clock.now())
    assert states(e) == {}  # before 16:45 New York the run may still be retried

    clock.set(utc(2026, 11, 25, 21, 46))
    e.evaluate(h, clock.now())
    assert firing(e) == {
        "PricesLate": {"summary": "market_data_ingest: no successful run for 2026-11-25 by 16:45 EST (1m late)"}
    }
    alert = e.alerts()[0]
    assert alert.label_map == {
        "alertname": "PricesLate",
        "severity": "critical",
        "source": "af",
        "pipeline": P,
    }  # no period or date label: one deadline alert per pipeline

    clock.set(utc(2026, 11, 25, 22, 30))
    h.apply(poll(daily(25, RunState.SUCCESS, end_minute=85)))  # cleared and re-run, succeeded 17:25
    e.evaluate(h, clock.now())
    assert firing(e) == {}
    assert e.alerts()[0].ends_at == clock.now()


def test_deadline_thanksgiving_expects_nothing(tmp_path: Path) -> None:
    h, e = History(), engine(tmp_path)
    h.apply(poll(daily(24), daily(25)))
    for t in (utc(2026, 11, 26, 21, 46), utc(2026, 11, 26, 23, 59), utc(2026, 11, 27, 18, 44)):
        e.evaluate(h, t)
        assert states(e) == {}, t


def test_deadline_early_close_moves_to_1345(tmp_path: Path) -> None:
    h, e = History(), engine(tmp_path)
    h.apply(poll(daily(24), daily(25)))
    e.evaluate(h, utc(2026, 11, 27, 18, 44, 59))
    assert states(e) == {}
    e.evaluate(h, utc(2026, 11, 27, 18, 45))  # 13:45 New York: the 13:00 close + 45m
    assert firing(e)["PricesLate"]["summary"] == (
        "market_data_ingest: no successful run for 2026-11-27 by 13:45 EST (0m late)"
    )
    fri = utc(2026, 11, 27, 18, 0)
    h.apply(poll(run("scheduled__11-27", RunState.SUCCESS, fri, fri, utc(2026, 11, 27, 18, 50))))
    e.evaluate(h, utc(2026, 11, 27, 18, 51))
    assert firing(e) == {}


def test_deadline_backfill_neither_satisfies_today_nor_pages_for_its_day(tmp_path: Path) -> None:
    h, e = History(), engine(tmp_path)
    h.apply(poll(daily(24), daily(25)))
    # A backfill of 2026-11-20 runs (and fails, then succeeds) on Friday before the deadline
    old = utc(2026, 11, 20, 21, 0)
    h.apply(poll(run("backfill__11-20", RunState.FAILED, old, utc(2026, 11, 27, 17), utc(2026, 11, 27, 17, 5))))
    e.evaluate(h, utc(2026, 11, 27, 18, 0))
    assert states(e) == {}  # the failed backfill does not page for 11-20
    h.apply(poll(run("backfill__11-20", RunState.SUCCESS, old, utc(2026, 11, 27, 17), utc(2026, 11, 27, 18, 30))))
    e.evaluate(h, utc(2026, 11, 27, 18, 46))
    assert firing(e)["PricesLate"]["summary"].startswith("market_data_ingest: no successful run for 2026-11-27")


def test_deadline_dst_change_on_exchange_calendar(tmp_path: Path) -> None:
    """The Monday after New York springs forward: close + 45m is 20:45 UTC, not 21:45."""
    h, e = History(), engine(tmp_path)
    h.apply(poll(daily(6, month=3)))  # Friday 2026-03-06
    e.evaluate(h, utc(2026, 3, 9, 20, 44))
    assert states(e) == {}
    e.evaluate(h, utc(2026, 3, 9, 20, 46))
    assert firing(e)["PricesLate"]["summary"].endswith("for 2026-03-09 by 16:45 EDT (1m late)")


@pytest.mark.parametrize(
    ("day", "deadline_utc"),
    [(7, utc(2026, 3, 7, 11)), (8, utc(2026, 3, 8, 10)), (31, utc(2026, 10, 31, 10)), (1, utc(2026, 11, 1, 11))],
)
def test_deadline_hhmm_on_dst_change_days(day: int, deadline_utc: datetime) -> None:
    """06:00 New York every day: 11:00 UTC in EST, 10:00 UTC in EDT, right on 2026-03-08 and 2026-11-01."""
    rule = deadline.MODEL.model_validate(
        {"alert": "X", "when": "deadline", "deadline": "06:00", "timezone": "America/New_York"}
    )
    h = History()
    h.apply(poll(run("r0", RunState.FAILED, deadline_utc - timedelta(hours=3))))
    ph = list(h.pipelines.values())

    def found(now: datetime) -> list[Any]:
        return deadline.evaluate(rule, Scope(now, h, ph, [])).findings

    before, after = found(deadline_utc - timedelta(seconds=1)), found(deadline_utc)
    assert after and after[0].variables["period"] == deadline_utc.date().isoformat()
    assert after[0].variables["minutes_late"] == 0
    # a second earlier the previous day's deadline is the one due
    assert before and before[0].variables["period"] != after[0].variables["period"]


def test_deadline_period_is_the_calendar_date_of_scheduled_for() -> None:
    """A run scheduled 23:30 New York on 2026-03-07 (04:30 UTC on the 8th) is for the 7th."""
    rule = deadline.MODEL.model_validate(
        {"alert": "X", "when": "deadline", "deadline": "06:00", "timezone": "America/New_York"}
    )
    h = History()
    h.apply(poll(run("r", RunState.SUCCESS, utc(2026, 3, 8, 4, 30), utc(2026, 3, 8, 4, 30), utc(2026, 3, 8, 5))))
    ph = list(h.pipelines.values())
    assert deadline.evaluate(rule, Scope(utc(2026, 3, 8, 9, 59), h, ph, [])).findings == []  # satisfies the 7th
    late = deadline.evaluate(rule, Scope(utc(2026, 3, 8, 10, 0), h, ph, [])).findings
    assert [f.variables["period"] for f in late] == ["2026-03-08"]


def test_deadline_paused_raises_nothing(tmp_path: Path) -> None:
    h, e = History(), engine(tmp_path)
    h.apply(poll(daily(24), info=info(paused=True)))
    e.evaluate(h, utc(2026, 11, 25, 22, 0))
    assert states(e) == {}


def test_deadline_user_calendar_and_rule_calendar_override(tmp_path: Path) -> None:
    text = RULES.replace("timezone: America/New_York", "timezone: America/New_York\n        calendar: desk")
    cals = Calendars({"desk": CalendarConfig.model_validate({"base": "XNYS", "holidays": ["2026-11-25"]})})
    h, e = History(), engine(tmp_path, text, cals)
    h.apply(poll(daily(24)))
    e.evaluate(h, utc(2026, 11, 25, 22, 0))  # the desk is closed on the 25th: Tuesday is the due period
    assert states(e) == {}


def test_deadline_unknown_calendar_keeps_state_without_crashing(tmp_path: Path) -> None:
    h, e = History(), engine(tmp_path)
    h.apply(poll(daily(24), daily(25, RunState.FAILED)))
    e.evaluate(h, utc(2026, 11, 25, 21, 46))
    assert states(e) == {"PricesLate": "firing"}
    e.extras["calendars"] = Calendars()
    e.rules = load_rules([_write(tmp_path, RULES.replace("calendar: XNYS", "calendar: XTKS"))])
    e.evaluate(h, utc(2026, 11, 25, 21, 50))
    assert states(e) == {"PricesLate": "firing"}


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r2.yaml"
    p.write_text(text)
    return p


# -- freshness -----------------------------------------------------------------------------------


def fresh_rule(**kw: Any) -> Any:
    return freshness.MODEL.model_validate({"alert": "Stale", "when": "freshness", "max_age": "1d", **kw})


def fresh(rule: Any, h: History, now: datetime, calendar: str | None = "XNYS") -> list[Any]:
    return freshness.evaluate(rule, Scope(now, h, list(h.pipelines.values()), [], calendar)).findings


def test_freshness_one_trading_day_over_thanksgiving() -> None:
    h = History()
    h.apply(poll(daily(25, end_minute=50)))  # last success 16:50 New York on Wednesday
    trading = fresh_rule(calendar_time="trading_days")
    wall = fresh_rule()
    assert fresh(wall, h, utc(2026, 11, 26, 21, 51))  # wall clock: stale on Thanksgiving
    assert not fresh(trading, h, utc(2026, 11, 26, 21, 51))
    assert not fresh(trading, h, utc(2026, 11, 27, 21, 50))  # exactly one trading day
    (f,) = fresh(trading, h, utc(2026, 11, 27, 21, 51))
    assert f.labels == {"source": "af", "pipeline": P}
    assert f.variables["age"] == "1d1m" and f.variables["last_success"] == utc(2026, 11, 25, 21, 50)
    assert f.variables["run_id"] == "scheduled__11-25"
    # `true` means trading days
    assert fresh_rule(calendar_time=True).calendar_time == "trading_days"


def test_freshness_session_time() -> None:
    h = History()
    h.apply(poll(daily(25, end_minute=50)))
    rule = fresh_rule(max_age="3h", calendar_time="sessions")
    assert not fresh(rule, h, utc(2026, 11, 27, 17, 30))  # 3h of Friday's session (09:30–12:30)
    assert fresh(rule, h, utc(2026, 11, 27, 17, 31))


def test_freshness_recovers_paused_and_no_history() -> None:
    h = History()
    h.apply(poll(daily(24), daily(25, RunState.FAILED)))
    rule = fresh_rule(max_age="25h")
    assert fresh(rule, h, utc(2026, 11, 25, 22, 21))  # Tuesday's success ended 21:20 on the 24th
    h.apply(poll(daily(25, RunState.SUCCESS, end_minute=70)))
    assert not fresh(rule, h, utc(2026, 11, 25, 22, 21))
    h.apply(poll(info=info(paused=True)))
    assert not fresh(rule, h, utc(2026, 11, 30))
    # only failures: judged from the oldest known run; nothing known: nothing to say
    h2 = History()
    h2.apply(poll(daily(20, RunState.FAILED)))
    (f,) = fresh(rule, h2, utc(2026, 11, 22))
    assert f.variables["last_success"] is None
    h3 = History()
    h3.apply(poll(info=info()))
    assert not fresh(rule, h3, utc(2026, 11, 22))


def test_freshness_ignores_success_ending_after_now() -> None:
    h = History()
    h.apply(poll(daily(24), daily(25, end_minute=50)))
    assert fresh(fresh_rule(max_age="1h"), h, utc(2026, 11, 25, 21, 30))


def test_freshness_rejects_zero_max_age() -> None:
    with pytest.raises(ValueError, match="max_age must be greater than 0"):
        fresh_rule(max_age="0")


# -- late_start ----------------------------------------------------------------------------------


def late_rule(**kw: Any) -> Any:
    return late_start.MODEL.model_validate({"alert": "Late", "when": "late_start", **kw})


def late(rule: Any, h: History, now: datetime) -> list[Any]:
    return late_start.evaluate(rule, Scope(now, h, list(h.pipelines.values()), [])).findings


DUE = utc(2026, 11, 25, 21, 0)


def test_late_start_airflow_next_run_with_grace_and_alert_delay() -> None:
    h = History()
    h.apply(poll(daily(24), info=info(next_run=DUE)))
    rule = late_rule(grace="10m", alert_delay="5m")
    assert not late(rule, h, DUE + timedelta(minutes=10))  # late from 21:10, held until 21:15
    assert not late(rule, h, DUE + timedelta(minutes=14, seconds=59))
    (f,) = late(rule, h, DUE + timedelta(minutes=15))
    assert f.labels == {"source": "af", "pipeline": P}
    assert f.variables["scheduled_for"] == DUE and f.variables["late_since"] == DUE + timedelta(minutes=10)
    assert f.variables["minutes_late"] == 15 and f.variables["run_id"] is None
    # the scheduler creates the run but it sits queued: still late, now with a run id
    h.apply(poll(run("scheduled__11-25", RunState.QUEUED, DUE)))
    (f,) = late(rule, h, DUE + timedelta(minutes=20))
    assert f.variables["run_id"] == "scheduled__11-25" and f.variables["state"] == "queued"
    # it starts: resolved
    h.apply(poll(run("scheduled__11-25", RunState.RUNNING, DUE, DUE + timedelta(minutes=21))))
    assert not late(rule, h, DUE + timedelta(minutes=22))


def test_late_start_logical_date_one_interval_back_is_not_late() -> None:
    """Adapters reporting the logical date (data interval start) still match the run_after by start time."""
    h = History()
    logical = DUE - timedelta(days=1)
    h.apply(
        poll(run("scheduled__11-24", RunState.RUNNING, logical, DUE + timedelta(minutes=1)), info=info(next_run=DUE))
    )
    assert not late(late_rule(grace="10m"), h, DUE + timedelta(minutes=30))


def test_late_start_prefect_late_state_counts_at_once() -> None:
    h = History()
    h.apply(poll(run("flow-run-1", RunState.LATE, DUE)))
    (f,) = late(late_rule(grace="10m"), h, DUE + timedelta(minutes=1))
    assert f.variables["state"] == "late" and f.variables["late_since"] == DUE
    # alert_delay still applies, from the scheduled time
    assert not late(late_rule(grace="10m", alert_delay="5m"), h, DUE + timedelta(minutes=1))
    # a Prefect run still Scheduled counts after grace
    h2 = History()
    h2.apply(poll(run("flow-run-2", RunState.SCHEDULED, DUE)))
    assert not late(late_rule(grace="10m"), h2, DUE + timedelta(minutes=9))
    assert late(late_rule(grace="10m"), h2, DUE + timedelta(minutes=10))


def test_late_start_future_and_started_runs_and_paused() -> None:
    h = History()
    h.apply(
        poll(run("future", RunState.SCHEDULED, DUE + timedelta(hours=1)), info=info(next_run=DUE + timedelta(hours=1)))
    )
    assert not late(late_rule(), h, DUE)
    h2 = History()
    h2.apply(poll(run("r", RunState.LATE, DUE), info=info(paused=True, next_run=DUE)))
    assert not late(late_rule(), h2, DUE + timedelta(hours=2))


def test_late_start_through_the_engine_with_for(tmp_path: Path) -> None:
    text = """\
groups:
  - name: platform
    rules:
      - alert: LateStart
        when: late_start
        grace: 10m
        alert_delay: 5m
        for: 2m
        annotations:
          summary: "{{ pipeline }} scheduled {{ scheduled_for }} not started ({{ late_by }} late)"
"""
    h, e = History(), engine(tmp_path, text)
    h.apply(poll(info=info(next_run=DUE)))
    e.evaluate(h, DUE + timedelta(minutes=15))
    assert states(e) == {"LateStart": "pending"}
    e.evaluate(h, DUE + timedelta(minutes=17))
    assert firing(e)["LateStart"]["summary"] == (
        "market_data_ingest scheduled 2026-11-25 21:00:00+00:00 not started (17m late)"
    )


def test_late_start_run_overtaken_by_a_later_start_is_not_late() -> None:
    """A Prefect run left in Late while the next one ran is history, not a page."""
    h = History()
    nxt = DUE + timedelta(hours=1)
    h.apply(
        poll(
            run("flow-run-1", RunState.LATE, DUE),
            run("flow-run-2", RunState.SUCCESS, nxt, nxt, nxt + timedelta(minutes=5)),
        )
    )
    assert not late(late_rule(), h, nxt + timedelta(minutes=10))
