"""`depends_on`: root causes, inhibition and `blocks`, through the real engine under a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel.alerting.alert import Alert
from sentinel.model import PipelineInfo, PipelineKey, PollResult, RunState, RunUpdate, SourceHealth
from sentinel.observe.history import History
from sentinel.rules import dependencies
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import load_rules
from sentinel.rules.lifecycle import Instance
from sentinel.yamlfile import ConfigError

# Tuesday 2026-11-24; every deadline below is an HH:MM in UTC on every day (no calendar), so the day
# before must have succeeded for the picture to start clean.
DAY = datetime(2026, 11, 24, tzinfo=UTC)
MARKET = PipelineKey("airflow", "market_data_ingest")
RISK = PipelineKey("prefect", "portfolio_risk/daily")
REPORTS = PipelineKey("airflow", "eod_reporting")

RULES = """\
groups:
  - name: failures
    rules:
      - alert: PipelineFailed
        when: failed
        severity: critical
  - name: market-data
    pipelines: {pipeline: market_data_ingest}
    rules:
      - alert: MarketDataLate
        when: deadline
        deadline: "17:00"
        timezone: UTC
  - name: risk
    pipelines: {pipeline: "portfolio_risk/*"}
    depends_on: [market_data_ingest]
    rules:
      - alert: RiskLate
        when: deadline
        deadline: "18:00"
        timezone: UTC
  - name: reporting
    pipelines: {pipeline: eod_reporting}
    depends_on: [{source: prefect, pipeline: portfolio_risk/daily}]
    rules:
      - alert: ReportsLate
        when: deadline
        deadline: "18:30"
        timezone: UTC
"""


def at(hh: int, mm: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hh, minutes=mm)


def run(key: PipelineKey, run_id: str, start: datetime, minutes: int, state: RunState = RunState.SUCCESS) -> RunUpdate:
    return RunUpdate(
        source=key.source,
        pipeline=key.pipeline,
        run_id=run_id,
        state=state,
        scheduled_for=start,
        started_at=start,
        ended_at=start + timedelta(minutes=minutes),
        updated_at=start + timedelta(minutes=minutes),
    )


class World:
    """A history, an engine and a clock: `tick(now)` evaluates and returns what the dispatcher gets."""

    def __init__(self, tmp_path: Path, text: str = RULES, infos: tuple[PipelineInfo, ...] = ()) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text(text)
        self.engine = RuleEngine(load_rules([path]))
        self.history = History()
        for key, start in ((MARKET, 16), (RISK, 17), (REPORTS, 18)):
            self.add(run(key, "yesterday", at(start, day=-1), 10))
        for info in infos:
            self.history.pipeline(PipelineKey(info.source, info.pipeline)).info = info

    def add(self, r: RunUpdate) -> None:
        self.history.apply(
            PollResult(
                source=r.source, health=SourceHealth(source=r.source, reachable=True, observed_at=DAY), runs=(r,)
            )
        )

    def tick(self, now: datetime) -> list[Alert]:
        return [a for a in self.engine.evaluate(self.history, now) if a.ends_at is None]

    def instance(self, alertname: str, pipeline: str) -> Instance:
        (inst,) = [
            i
            for i in self.engine.instance_list()
            if dict(i.labels)["alertname"] == alertname and dict(i.labels)["pipeline"] == pipeline
        ]
        return inst


def names(alerts: list[Alert]) -> list[tuple[str, str]]:
    return sorted((a.name, a.label("pipeline")) for a in alerts)


def test_upstream_failure_pages_once_and_downstream_deadline_is_inhibited(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    assert names(w.tick(at(16, 11))) == [("PipelineFailed", "market_data_ingest")]
    # Market data's own deadline (a consequence of its own failure) and risk's deadline both pass.
    for now in (at(17, 1), at(18, 1)):
        assert names(w.tick(now)) == [("PipelineFailed", "market_data_ingest")]

    risk = w.instance("RiskLate", "portfolio_risk/daily")
    failed = w.instance("PipelineFailed", "market_data_ingest")
    assert risk.state == "firing"
    assert risk.inhibited_by == (failed.fingerprint,)
    assert dict(risk.annotations)["root_cause"] == "upstream market_data_ingest PipelineFailed"
    own = w.instance("MarketDataLate", "market_data_ingest")
    assert own.inhibited_by == (failed.fingerprint,)
    assert dict(own.annotations)["root_cause"] == "market_data_ingest PipelineFailed"
    # The page itself says what it holds up, transitively, before any downstream deadline has passed.
    assert dict(failed.annotations)["blocks"] == "eod_reporting, portfolio_risk/daily"


def test_blocks_is_on_the_first_page(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    (page,) = w.tick(at(16, 11))
    assert page.annotation("blocks") == "eod_reporting, portfolio_risk/daily"


def test_upstream_recovers_and_a_still_missed_downstream_gets_through(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    w.tick(at(16, 11))
    assert names(w.tick(at(18, 1))) == [("PipelineFailed", "market_data_ingest")]
    # Market data re-run succeeds at 18:10 for today's period; risk has still not run.
    w.add(run(MARKET, "rerun", at(16, 5), 125))
    alerts = w.tick(at(18, 11))
    assert names(alerts) == [("RiskLate", "portfolio_risk/daily")]
    (risk,) = alerts
    assert risk.annotation("root_cause") == ""
    assert w.instance("RiskLate", "portfolio_risk/daily").inhibited_by == ()
    # Risk finally runs: resolved, and that resolution is handed on (the firing was).
    w.add(run(RISK, "today", at(18, 12), 5))
    resolved = [a for a in w.engine.evaluate(w.history, at(18, 20)) if a.ends_at is not None]
    assert ("RiskLate", "portfolio_risk/daily") in names(resolved)


def test_an_inhibited_alert_that_resolves_is_never_handed_on(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    w.tick(at(18, 1))
    # Both recover together: the downstream resolution must not reach a receiver that never saw it fire.
    w.add(run(MARKET, "rerun", at(16, 5), 125))
    w.add(run(RISK, "today", at(18, 2), 8))
    handed = w.engine.evaluate(w.history, at(18, 11))
    assert ("RiskLate", "portfolio_risk/daily") not in names(handed)
    assert ("PipelineFailed", "market_data_ingest") in names(handed)  # its resolution


def test_transitive_root_cause(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    assert names(w.tick(at(18, 31))) == [("PipelineFailed", "market_data_ingest")]
    failed = w.instance("PipelineFailed", "market_data_ingest")
    reports = w.instance("ReportsLate", "eod_reporting")
    assert reports.inhibited_by == (failed.fingerprint,)
    assert dict(reports.annotations)["root_cause"] == "upstream market_data_ingest PipelineFailed"


def test_middle_pipeline_failing_itself_is_the_root(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.add(run(MARKET, "today", at(16), 10))
    w.add(run(RISK, "today", at(17), 10, RunState.FAILED))
    assert names(w.tick(at(18, 31))) == [("PipelineFailed", "portfolio_risk/daily")]
    assert dict(w.instance("ReportsLate", "eod_reporting").annotations)["root_cause"] == (
        "upstream portfolio_risk/daily PipelineFailed"
    )
    assert dict(w.instance("PipelineFailed", "portfolio_risk/daily").annotations)["blocks"] == "eod_reporting"


def test_late_upstream_without_failure_is_the_root(tmp_path: Path) -> None:
    w = World(tmp_path)
    # Market data simply never ran today: its deadline alert pages, risk's is explained by it.
    assert names(w.tick(at(17, 1))) == [("MarketDataLate", "market_data_ingest")]
    assert names(w.tick(at(18, 1))) == [("MarketDataLate", "market_data_ingest")]
    assert dict(w.instance("RiskLate", "portfolio_risk/daily").annotations)["root_cause"] == (
        "upstream market_data_ingest MarketDataLate"
    )


def test_asset_upstreams_need_no_configuration(tmp_path: Path) -> None:
    text = RULES.replace("    depends_on: [market_data_ingest]\n", "")
    infos = (PipelineInfo(source="prefect", pipeline="portfolio_risk/daily", upstreams=("market_data_ingest",)),)
    w = World(tmp_path, text, infos)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    assert names(w.tick(at(18, 1))) == [("PipelineFailed", "market_data_ingest")]
    risk = w.instance("RiskLate", "portfolio_risk/daily")
    assert risk.inhibited_by == (w.instance("PipelineFailed", "market_data_ingest").fingerprint,)
    assert dict(w.instance("PipelineFailed", "market_data_ingest").annotations)["blocks"] == (
        "eod_reporting, portfolio_risk/daily"
    )


def test_without_dependencies_the_downstream_pages(tmp_path: Path) -> None:
    text = RULES.replace("    depends_on: [market_data_ingest]\n", "")
    w = World(tmp_path, text)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    assert names(w.tick(at(18, 1))) == [
        ("PipelineFailed", "market_data_ingest"),
        ("RiskLate", "portfolio_risk/daily"),
    ]


def test_inhibited_by_upstream_false_annotates_but_pages(tmp_path: Path) -> None:
    text = RULES.replace(
        "depends_on: [market_data_ingest]\n", "depends_on: [market_data_ingest]\n    inhibited_by_upstream: false\n"
    )
    w = World(tmp_path, text)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    alerts = {a.name: a for a in w.tick(at(18, 1))}
    assert alerts["RiskLate"].annotation("root_cause") == "upstream market_data_ingest PipelineFailed"


def test_an_alert_already_sent_is_not_retracted(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.add(run(MARKET, "today", at(16), 10))
    w.add(RunUpdate(source="prefect", pipeline="portfolio_risk/daily", run_id="today", state=RunState.RUNNING,
                    scheduled_for=at(17), started_at=at(17)))  # fmt: skip
    assert names(w.tick(at(18, 1))) == [("RiskLate", "portfolio_risk/daily")]
    # A later market-data failure (a second run) explains it, but the receiver already has the page.
    w.add(run(MARKET, "extra", at(17, 30), 40, RunState.FAILED))
    alerts = {a.name: a for a in w.tick(at(18, 11))}
    assert set(alerts) == {"PipelineFailed", "RiskLate"}
    assert alerts["RiskLate"].annotation("root_cause") == "upstream market_data_ingest PipelineFailed"


def test_inhibited_by_survives_a_restart(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.add(run(MARKET, "today", at(16), 10, RunState.FAILED))
    w.tick(at(18, 1))
    risk = w.instance("RiskLate", "portfolio_risk/daily")
    restored = Instance.restore(risk.dump())
    assert restored == risk and restored.inhibited_by
    legacy = risk.dump()
    del legacy["inhibited_by"]
    assert Instance.restore(legacy).inhibited_by == ()


def test_dependents_follow_configuration_and_assets(tmp_path: Path) -> None:
    infos = (PipelineInfo(source="airflow", pipeline="client_pdfs", upstreams=("eod_reporting",)),)
    w = World(tmp_path, infos=infos)
    index = dependencies.rule_index(w.engine.rules)
    assert dependencies.dependents(MARKET, index, w.history, DAY) == [
        PipelineKey("airflow", "client_pdfs"),
        REPORTS,
        RISK,
    ]
    assert dependencies.dependents(REPORTS, index, w.history, DAY) == [PipelineKey("airflow", "client_pdfs")]


def test_a_dependency_cycle_terminates(tmp_path: Path) -> None:
    text = RULES.replace(
        "    pipelines: {pipeline: market_data_ingest}\n",
        "    pipelines: {pipeline: market_data_ingest}\n    depends_on: [eod_reporting]\n",
    )
    w = World(tmp_path, text)
    assert names(w.tick(at(18, 31))) == [("MarketDataLate", "market_data_ingest")]


def test_dependency_annotations_are_reserved_and_only_for_lateness_kinds(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        when: failed\n        depends_on: [x]\n"
        "      - alert: B\n        when: deadline\n        deadline: '17:00'\n        annotations: {root_cause: x}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_rules([bad])
    text = str(exc.value)
    assert "only affect when: deadline, freshness, late_start" in text
    assert "written by depends_on" in text
