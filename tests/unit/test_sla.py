"""SLA outcomes of deadline rules, on the XNYS calendar around Thanksgiving 2026: one verdict per period,
none on the holiday, the early close moving `close + 45m`, a backfill not meeting today's deadline, and
no period judged twice across a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.calendars import Calendars
from sentinel.clock import FrozenClock
from sentinel.kpi.sla import SlaKpis
from sentinel.metrics import Metrics
from sentinel.model import PipelineInfo, PollResult, RunState, RunUpdate, SourceHealth
from sentinel.observe.history import History
from sentinel.rules.files import LoadedRules, load_rules

P = "market_data_ingest"
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
"""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def run(run_id: str, state: RunState, scheduled_for: datetime, ended_at: datetime) -> RunUpdate:
    return RunUpdate(
        source="af",
        pipeline=P,
        run_id=run_id,
        state=state,
        scheduled_for=scheduled_for,
        started_at=ended_at - timedelta(minutes=10),
        ended_at=ended_at,
        updated_at=ended_at,
    )


def daily(day: int, end: datetime | None = None, state: RunState = RunState.SUCCESS) -> RunUpdate:
    """The scheduled run for a session: for 16:00 New York (21:00 UTC), done at 21:20 unless told."""
    due = utc(2026, 11, day, 21)
    return run(f"scheduled__{day}", state, due, end or due + timedelta(minutes=20))


def poll(*runs: RunUpdate, paused: bool | None = None) -> PollResult:
    infos = None if paused is None else (PipelineInfo(source="af", pipeline=P, paused=paused),)
    return PollResult(
        source="af",
        health=SourceHealth(source="af", reachable=True, observed_at=utc(2026, 11, 20)),
        runs=runs,
        pipelines=infos,
    )


class Sla:
    """SlaKpis with what the daemon gives it: rules, a history, the calendars, and a scrape."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "r.yaml").write_text(RULES)
        self.rules: LoadedRules = load_rules([tmp / "r.yaml"])
        self.history = History()
        self.metrics = Metrics()
        self.clock = FrozenClock(utc(2026, 11, 20))
        self.kpis = SlaKpis(self.metrics, self.clock)
        self.extras = {"calendars": Calendars()}

    def at(self, *when: int) -> Sla:
        self.clock.set(utc(*when))
        self.kpis.evaluate(self.rules, self.history, self.extras, self.clock.now())
        return self

    def counts(self) -> tuple[float, float]:
        s = self.samples()
        key = frozenset({"source": "af", "pipeline": P, "rule": "PricesLate"}.items())
        return s.get(("sentinel_sla_met_total", key), 0.0), s.get(("sentinel_sla_missed_total", key), 0.0)

    def compliance(self, window: str) -> float | None:
        key = frozenset({"source": "af", "pipeline": P, "rule": "PricesLate", "window": window}.items())
        return self.samples().get(("sentinel_sla_compliance_ratio", key))

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        out = {}
        for fam in text_string_to_metric_families(self.metrics.render().decode()):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out


def test_met_is_recorded_when_the_data_lands_and_once_per_period(tmp_path: Path) -> None:
    sla = Sla(tmp_path)
    sla.history.apply(poll(daily(24)))
    sla.at(2026, 11, 24, 21, 50)  # Tuesday's deadline (16:45 New York) passed with Tuesday's run done
    assert sla.counts() == (1, 0)
    sla.history.apply(poll(daily(25)))
    sla.at(2026, 11, 25, 21, 21)  # Wednesday's run is done 24 minutes before its deadline: met at once
    assert sla.counts() == (2, 0)
    for minute in (30, 44, 45, 46, 59):  # the deadline passing does not judge the period again
        sla.at(2026, 11, 25, 21, minute)
    assert sla.counts() == (2, 0)


def test_thanksgiving_has_no_period(tmp_path: Path) -> None:
    sla = Sla(tmp_path)
    sla.history.apply(poll(daily(25)))
    sla.at(2026, 11, 25, 22, 0)
    assert sla.counts() == (1, 0)
    for hour in range(0, 24, 3):  # nothing runs on the holiday and nothing is missed
        sla.at(2026, 11, 26, hour, 30)
    sla.at(2026, 11, 27, 18, 44)
    assert sla.counts() == (1, 0)


def test_early_close_moves_the_deadline_and_a_late_success_stays_missed(tmp_path: Path) -> None:
    sla = Sla(tmp_path)
    sla.history.apply(poll(daily(25)))
    sla.at(2026, 11, 27, 18, 44, 59)  # 13:44:59 New York on the day the market closes at 13:00
    assert sla.counts() == (1, 0)
    sla.at(2026, 11, 27, 18, 45)  # 13:45: close + 45m on the early close, not the usual 16:45
    assert sla.counts() == (1, 1)
    sla.history.apply(poll(run("scheduled__27", RunState.SUCCESS, utc(2026, 11, 27, 18), utc(2026, 11, 27, 18, 50))))
    sla.at(2026, 11, 27, 18, 51)
    sla.at(2026, 11, 27, 22, 0)
    assert sla.counts() == (1, 1)
    assert sla.compliance("7d") == pytest.approx(0.5)
    assert sla.compliance("1d") == 0.0


def test_a_failed_run_before_the_deadline_is_not_met(tmp_path: Path) -> None:
    sla = Sla(tmp_path)
    sla.history.apply(poll(daily(24, state=RunState.FAILED)))
    sla.at(2026, 11, 24, 21, 30)
    # A failure is not a verdict: a retry may still meet the deadline. And Monday, due when Sentinel first
    # sees the pipeline, is not missed: its run may simply be older than the history read at start.
    assert sla.counts() == (0, 0)
    sla.at(2026, 11, 24, 21, 45)
    assert sla.counts() == (0, 1)


def test_backfill_for_an_old_period_does_not_count_for_today(tmp_path: Path) -> None:
    sla = Sla(tmp_path)
    sla.history.apply(poll(daily(25)))
    sla.at(2026, 11, 25, 22)
    old = utc(2026, 11, 20, 21)
    sla.history.apply(poll(run("backfill__20", RunState.SUCCESS, old, utc(2026, 11, 27, 17, 30))))
    sla.at(2026, 11, 27, 18, 0)
    assert sla.counts() == (1, 0)  # neither met for today nor a verdict on the 20th
    sla.at(2026, 11, 27, 18, 46)
    assert sla.counts() == (1, 1)


def test_paused_pipeline_gets_no_verdict(tmp_path: Path) -> None:
    sla = Sla(tmp_path)
    sla.history.apply(poll(daily(24), paused=True))
    sla.at(2026, 11, 25, 22)
    assert sla.counts() == (0, 0)


def test_a_restart_neither_repeats_nor_forgets_a_verdict(tmp_path: Path) -> None:
    sla = Sla(tmp_path)
    sla.history.apply(poll(daily(24)))
    sla.at(2026, 11, 24, 22)
    sla.at(2026, 11, 25, 22)  # Wednesday missed
    assert sla.counts() == (1, 1)
    saved = sla.kpis.take_changes()

    again = Sla(tmp_path)  # a new process: fresh registry, same store contents, same history
    again.history = sla.history
    again.kpis.restore(saved)
    assert again.counts() == (1, 1)
    again.at(2026, 11, 25, 22, 5)
    again.at(2026, 11, 27, 12)
    assert again.counts() == (1, 1)
    assert again.compliance("7d") == pytest.approx(0.5)
