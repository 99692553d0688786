"""Alert lifecycle and the failed / source_down conditions under a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel.clock import FrozenClock
from sentinel.model import ComponentHealth, PollResult, RunState, RunUpdate, SourceHealth, TaskUpdate
from sentinel.observe.history import History
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import load_rules
from sentinel.yamlfile import ConfigError

T0 = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)

RULES = """\
groups:
  - name: g
    pipelines: {pipeline: "market_*"}
    labels: {team: market-data}
    rules:
      - alert: PipelineFailed
        when: failed
        severity: critical
        annotations:
          summary: "{{ pipeline }} run {{ run_id }} {{ state }} ({{ failed_tasks | join(',') }})"
          runbook_url: runbooks/PipelineFailed.md
      - alert: TwoInARow
        when: failed
        consecutive: 2
        for: 5m
      - alert: TaskFailed
        when: failed
        level: task
  - name: platform
    rules:
      - alert: SourceDown
        when: source_down
        for: 1m
"""


def rules(tmp_path: Path, text: str = RULES):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return load_rules([p])


def run(n: int, state: RunState, pipeline: str = "market_data_ingest") -> RunUpdate:
    start = T0 + timedelta(hours=n)
    return RunUpdate(
        source="af",
        pipeline=pipeline,
        run_id=f"run{n}",
        state=state,
        scheduled_for=start,
        started_at=start,
        ended_at=start + timedelta(minutes=5),
        updated_at=start + timedelta(minutes=5),
    )


def task(n: int, name: str, state: RunState) -> TaskUpdate:
    return TaskUpdate(source="af", pipeline="market_data_ingest", run_id=f"run{n}", task=name, state=state)


def poll(
    *runs: RunUpdate,
    tasks: tuple[TaskUpdate, ...] = (),
    reachable: bool = True,
    now: datetime = T0,
    components: tuple[ComponentHealth, ...] = (),
) -> PollResult:
    health = SourceHealth(
        source="af",
        reachable=reachable,
        observed_at=now,
        components=components,
        error=None if reachable else "connect_error",
    )
    return PollResult(source="af", health=health, runs=runs, tasks=tasks)


def states(engine: RuleEngine) -> dict[tuple[str, str], str]:
    return {(dict(i.labels)["alertname"], dict(i.labels).get("task", "")): i.state for i in engine.instance_list()}


def test_failed_fires_with_labels_and_annotations_then_resolves(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    h, e = History(), RuleEngine(rules(tmp_path), {"af": {"env": "prod"}})
    h.apply(
        poll(run(1, RunState.FAILED), tasks=(task(1, "load", RunState.FAILED), task(1, "extract", RunState.SUCCESS)))
    )
    alerts = e.evaluate(h, clock.now())
    fired = [a for a in alerts if a.name == "PipelineFailed"]
    assert len(fired) == 1
    a = fired[0]
    assert a.label_map == {
        "alertname": "PipelineFailed",
        "severity": "critical",
        "source": "af",
        "pipeline": "market_data_ingest",
        "team": "market-data",
        "env": "prod",
    }
    assert a.annotation("summary") == "market_data_ingest run run1 failed (load)"
    assert a.annotation("runbook_url") == "runbooks/PipelineFailed.md"
    assert a.ends_at is None
    # consecutive: 2 needs two failures; level: task fires for the failed task only
    assert states(e)[("TaskFailed", "load")] == "firing"
    assert ("TwoInARow", "") not in states(e)

    clock.advance(timedelta(hours=1))
    h.apply(poll(run(2, RunState.SUCCESS)))
    alerts = e.evaluate(h, clock.now())
    a2 = next(x for x in alerts if x.name == "PipelineFailed")
    assert a2.fingerprint == a.fingerprint
    assert a2.ends_at == clock.now()


def test_consecutive_and_for(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    h, e = History(), RuleEngine(rules(tmp_path))
    h.apply(poll(run(1, RunState.FAILED), run(2, RunState.CRASHED)))
    e.evaluate(h, clock.now())
    assert states(e)[("TwoInARow", "")] == "pending"
    clock.advance(timedelta(minutes=4, seconds=59))
    e.evaluate(h, clock.now())
    assert states(e)[("TwoInARow", "")] == "pending"
    clock.advance(timedelta(seconds=1))
    e.evaluate(h, clock.now())
    assert states(e)[("TwoInARow", "")] == "firing"


def test_pending_that_clears_is_forgotten_without_a_resolution(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    h, e = History(), RuleEngine(rules(tmp_path))
    h.apply(poll(run(1, RunState.FAILED), run(2, RunState.FAILED)))
    e.evaluate(h, clock.now())
    h.apply(poll(run(3, RunState.SUCCESS)))
    clock.advance(60)
    alerts = e.evaluate(h, clock.now())
    assert ("TwoInARow", "") not in states(e)
    assert not [a for a in alerts if a.name == "TwoInARow"]


def test_skipped_and_cancelled_runs_neither_fire_nor_resolve(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    h, e = History(), RuleEngine(rules(tmp_path))
    h.apply(poll(run(1, RunState.FAILED), run(2, RunState.CANCELLED), run(3, RunState.SKIPPED)))
    e.evaluate(h, clock.now())
    assert states(e)[("PipelineFailed", "")] == "firing"


def test_unselected_pipelines_do_not_alert(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path))
    h.apply(poll(run(1, RunState.FAILED, pipeline="portfolio_risk")))
    assert e.evaluate(h, T0) == []


def test_source_down_one_alert_and_component_alerts_held_while_blind(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    h, e = History(), RuleEngine(rules(tmp_path))
    stale = ComponentHealth(name="scheduler", healthy=False, last_heartbeat=T0 - timedelta(minutes=5))
    h.apply(poll(components=(stale,)))
    e.evaluate(h, clock.now())
    clock.advance(timedelta(minutes=1))
    e.evaluate(h, clock.now())
    assert [dict(i.labels)["component"] for i in e.instance_list() if i.state == "firing"] == ["scheduler"]
    # API goes down: one api alert; the scheduler alert is neither resolved nor duplicated
    h.apply(poll(reachable=False, now=clock.now()))
    for _ in range(3):
        clock.advance(timedelta(minutes=1))
        e.evaluate(h, clock.now())
    by_component = {dict(i.labels)["component"]: i.state for i in e.instance_list()}
    assert by_component == {"scheduler": "firing", "api": "firing"}
    # back up and healthy: both resolve
    h.apply(
        poll(components=(ComponentHealth(name="scheduler", healthy=True, last_heartbeat=clock.now()),), now=clock.now())
    )
    clock.advance(15)
    e.evaluate(h, clock.now())
    assert {dict(i.labels)["component"]: i.state for i in e.instance_list()} == {
        "scheduler": "resolved",
        "api": "resolved",
    }


def test_restart_keeps_firing_state(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    h, e = History(), RuleEngine(rules(tmp_path))
    h.apply(poll(run(1, RunState.FAILED)))
    first = {a.fingerprint: a for a in e.evaluate(h, clock.now())}
    changed, _ = e.take_changes()
    e2 = RuleEngine(rules(tmp_path))
    e2.restore(changed)
    clock.advance(30)
    again = {a.fingerprint: a for a in e2.evaluate(h, clock.now())}
    assert again.keys() == first.keys()
    assert all(again[k].starts_at == first[k].starts_at for k in first)


def test_keep_firing_for(tmp_path: Path) -> None:
    text = RULES.replace("        for: 5m\n", "        keep_firing_for: 10m\n")
    clock = FrozenClock(T0)
    h, e = History(), RuleEngine(rules(tmp_path, text))
    h.apply(poll(run(1, RunState.FAILED), run(2, RunState.FAILED)))
    e.evaluate(h, clock.now())
    h.apply(poll(run(3, RunState.SUCCESS)))
    clock.advance(timedelta(minutes=9))
    e.evaluate(h, clock.now())
    assert states(e)[("TwoInARow", "")] == "firing"
    clock.advance(timedelta(minutes=1))
    e.evaluate(h, clock.now())
    assert states(e)[("TwoInARow", "")] == "resolved"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (RULES.replace("when: failed\n        severity", "when: failde\n        severity"), "r.yaml:7:"),
        (RULES.replace("{{ state }}", "{{ stat }}"), "unknown template field(s) stat"),
        (RULES.replace("{{ state }}", "{{ state }"), "template does not compile"),
        (RULES.replace("alert: TwoInARow", "alert: PipelineFailed"), "repeated: PipelineFailed"),
        (RULES.replace("consecutive: 2", "consecutive: 0"), "r.yaml:14:22: groups[0].rules[1].consecutive"),
        (RULES.replace("for: 5m", "for: 5 minutes"), "invalid duration"),
        (RULES.replace("labels: {team", "labels: {pipeline"), "cannot be overridden"),
    ],
)
def test_rule_file_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        rules(tmp_path, text)
    assert any(message in str(p) for p in info.value.problems), info.value.problems
    assert all(str(p).startswith(str(tmp_path / "r.yaml") + ":") for p in info.value.problems)


def test_error_in_a_deadline_field_points_at_that_field(tmp_path: Path) -> None:
    # `when: deadline` is also the key `deadline:`; the location must not stop at the deadline time.
    text = """\
groups:
  - name: g
    rules:
      - alert: Late
        when: deadline
        deadline: "16:45"
        timezone: America/New_York
        predict: true
        predict_percentile: 100
"""
    with pytest.raises(ConfigError) as info:
        rules(tmp_path, text)
    assert [str(p).split(str(tmp_path / "r.yaml"))[1][:6] for p in info.value.problems] == [":9:29:"]
