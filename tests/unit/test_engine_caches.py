"""The engine's per-tick caches never hide a change: each test evaluates once (filling the caches), changes
one input the caches depend on, and checks the next evaluation sees it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel.model import PipelineInfo, PipelineKey, PollResult, RunState, RunUpdate, SourceHealth, TaskUpdate
from sentinel.observe.history import History, PipelineHistory
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import LoadedRules, load_rules

T0 = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
PIPE = "market_data_ingest"


def rules(tmp_path: Path, text: str, name: str = "r.yaml") -> LoadedRules:
    p = tmp_path / name
    p.write_text(text)
    return load_rules([p])


def run(n: int, state: RunState, pipeline: str = PIPE, took: timedelta = timedelta(minutes=5)) -> RunUpdate:
    start = T0 + timedelta(hours=n)
    terminal = state.terminal
    return RunUpdate(
        source="af",
        pipeline=pipeline,
        run_id=f"run{n}",
        state=state,
        scheduled_for=start,
        started_at=start,
        ended_at=start + took if terminal else None,
        # Later states of the same run carry a later updated_at, as a scheduler's would.
        updated_at=start + took + (timedelta(seconds=1) if terminal else timedelta(0)),
    )


def poll(*runs: RunUpdate, tasks: tuple[TaskUpdate, ...] = (), pipelines: tuple[PipelineInfo, ...] = ()) -> PollResult:
    health = SourceHealth(source="af", reachable=True, observed_at=T0)
    return PollResult(source="af", health=health, runs=runs, tasks=tasks, pipelines_partial=pipelines)


def firing(engine: RuleEngine) -> dict[tuple[str, str], dict[str, str]]:
    """(alertname, pipeline or task) -> annotations of every pending/firing instance."""
    out = {}
    for inst in engine.instance_list():
        if inst.state in ("pending", "firing"):
            labels = dict(inst.labels)
            out[(labels["alertname"], labels.get("task", labels.get("pipeline", "")))] = dict(inst.annotations)
    return out


FAILED = """\
groups:
  - name: g
    rules:
      - alert: Failed
        when: failed
        annotations: {summary: "{{ pipeline }} {{ run_id }} {{ state }}"}
      - alert: TaskFailed
        when: failed
        level: task
      - alert: Rate
        when: failure_rate
        last: 2
        threshold: 0.5
      - alert: Retries
        when: retries
        threshold: 1
"""


def test_a_run_changing_state_after_a_cached_tick_changes_the_outcome(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, FAILED))
    h.apply(poll(run(1, RunState.SUCCESS), run(2, RunState.RUNNING)))
    e.evaluate(h, T0 + timedelta(hours=3))
    assert firing(e) == {}
    # The same run, now failed: the cached "nothing found" for this pipeline must not be reused.
    h.apply(poll(run(2, RunState.FAILED)))
    e.evaluate(h, T0 + timedelta(hours=3, seconds=15))
    assert firing(e)[("Failed", PIPE)] == {"summary": f"{PIPE} run2 failed"}
    assert ("Rate", PIPE) not in firing(e)  # 1 of 2 is not above 0.5
    h.apply(poll(run(3, RunState.FAILED)))
    e.evaluate(h, T0 + timedelta(hours=4))
    assert firing(e)[("Failed", PIPE)] == {"summary": f"{PIPE} run3 failed"}  # re-rendered for the new run
    assert ("Rate", PIPE) in firing(e)
    h.apply(poll(run(4, RunState.SUCCESS)))
    e.evaluate(h, T0 + timedelta(hours=5))
    assert ("Failed", PIPE) not in firing(e) and ("Rate", PIPE) not in firing(e)


def test_a_task_arriving_after_a_cached_tick_is_judged(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, FAILED))
    h.apply(poll(run(1, RunState.SUCCESS)))
    e.evaluate(h, T0 + timedelta(hours=2))
    assert firing(e) == {}
    # Tasks change neither the run nor the pipeline's info: only the history's version says so.
    retried = TaskUpdate(source="af", pipeline=PIPE, run_id="run1", task="load", state=RunState.FAILED, try_number=3)
    h.apply(poll(tasks=(retried,)))
    e.evaluate(h, T0 + timedelta(hours=2, seconds=15))
    assert ("TaskFailed", "load") in firing(e)
    assert ("Retries", PIPE) in firing(e)


def test_only_evaluations_and_full_ticks_share_the_cache_correctly(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, FAILED))
    h.apply(poll(run(1, RunState.FAILED), run(1, RunState.FAILED, pipeline="other")))
    e.evaluate(h, T0 + timedelta(hours=2))
    assert ("Failed", PIPE) in firing(e) and ("Failed", "other") in firing(e)
    h.apply(poll(run(2, RunState.SUCCESS)))
    e.evaluate(h, T0 + timedelta(hours=3), only={PipelineKey("af", PIPE)})
    assert ("Failed", PIPE) not in firing(e) and ("Failed", "other") in firing(e)
    e.evaluate(h, T0 + timedelta(hours=3, seconds=15))
    assert ("Failed", PIPE) not in firing(e) and ("Failed", "other") in firing(e)


def test_rule_reload_replaces_cached_findings_and_texts(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, FAILED))
    h.apply(poll(run(1, RunState.SUCCESS), run(2, RunState.FAILED)))
    e.evaluate(h, T0 + timedelta(hours=3))
    assert ("Failed", PIPE) in firing(e) and ("Rate", PIPE) not in firing(e)
    # Same alert names, other parameters and templates: the history did not change, the answers must.
    reloaded = (
        FAILED.replace("{{ pipeline }} {{ run_id }} {{ state }}", "new text for {{ run_id }}")
        .replace("threshold: 0.5", "threshold: 0.4")
        .replace("when: failed\n        annotations", "when: failed\n        consecutive: 1\n        annotations")
    )
    e.replace_rules(rules(tmp_path, reloaded, "r2.yaml"), T0 + timedelta(hours=3))
    e.evaluate(h, T0 + timedelta(hours=3, seconds=15))
    assert firing(e)[("Failed", PIPE)] == {"summary": "new text for run2"}
    assert ("Rate", PIPE) in firing(e)
    twice = FAILED.replace("      - alert: Failed\n", "      - alert: Failed\n        consecutive: 2\n")
    e.replace_rules(rules(tmp_path, twice, "r3.yaml"), T0 + timedelta(hours=3, seconds=30))
    e.evaluate(h, T0 + timedelta(hours=3, seconds=30))
    assert ("Failed", PIPE) not in firing(e)


def test_source_labels_replaced_relabel_cached_findings(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, FAILED), {"af": {"env": "prod"}})
    h.apply(poll(run(1, RunState.FAILED)))
    e.evaluate(h, T0 + timedelta(hours=2))
    assert {dict(i.labels).get("env") for i in e.instance_list()} == {"prod"}
    e.source_labels = {"af": {"env": "staging"}}  # what a config reload does
    e.evaluate(h, T0 + timedelta(hours=2, seconds=15))
    assert {dict(i.labels).get("env") for i in e.instance_list() if i.state != "resolved"} == {"staging"}


TIMED = """\
groups:
  - name: g
    rules:
      - alert: Stale
        when: freshness
        max_age: 1h
        annotations: {summary: "{{ pipeline }} is {{ age }} old at {{ now.strftime('%H:%M:%S') }}"}
      - alert: Stuck
        when: stuck
        max_wait: 30m
      - alert: TooLong
        when: duration
        max: p50 * 2
        min_history: 2
      - alert: Late
        when: deadline
        deadline: "23:00"
  - name: tagged
    pipelines: {tags: [finance]}
    rules:
      - alert: TaggedFailed
        when: failed
"""


def test_pausing_a_pipeline_after_a_cached_tick_silences_it(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, TIMED))
    h.apply(poll(run(0, RunState.SUCCESS)))
    e.evaluate(h, T0 + timedelta(hours=3))
    assert ("Stale", PIPE) in firing(e)
    h.apply(poll(pipelines=(PipelineInfo(source="af", pipeline=PIPE, paused=True),)))
    e.evaluate(h, T0 + timedelta(hours=3, seconds=15))
    assert ("Stale", PIPE) not in firing(e)
    h.apply(poll(pipelines=(PipelineInfo(source="af", pipeline=PIPE, paused=False),)))
    e.evaluate(h, T0 + timedelta(hours=3, seconds=30))
    assert ("Stale", PIPE) in firing(e)


def test_templates_reading_now_are_rendered_every_tick(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, TIMED))
    h.apply(poll(run(0, RunState.SUCCESS)))
    e.evaluate(h, T0 + timedelta(hours=3))
    assert firing(e)[("Stale", PIPE)]["summary"].endswith("at 00:00:00")
    e.evaluate(h, T0 + timedelta(hours=3, seconds=15))
    assert firing(e)[("Stale", PIPE)]["summary"].endswith("at 00:00:15")


def test_tags_changing_after_a_cached_tick_change_the_selection(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, TIMED))
    h.apply(poll(run(1, RunState.FAILED)))
    e.evaluate(h, T0 + timedelta(hours=2))
    assert ("TaggedFailed", PIPE) not in firing(e)
    h.apply(poll(pipelines=(PipelineInfo(source="af", pipeline=PIPE, tags=("finance",)),)))
    e.evaluate(h, T0 + timedelta(hours=2, seconds=15))
    assert ("TaggedFailed", PIPE) in firing(e)


def test_a_pipeline_added_after_a_cached_tick_is_selected(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, FAILED))
    h.apply(poll(run(1, RunState.SUCCESS)))
    e.evaluate(h, T0 + timedelta(hours=2))
    h.apply(poll(run(1, RunState.FAILED, pipeline="newcomer")))
    e.evaluate(h, T0 + timedelta(hours=2, seconds=15))
    assert ("Failed", "newcomer") in firing(e)


def test_stuck_and_duration_summaries_follow_run_changes(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, TIMED))
    queued = run(3, RunState.QUEUED).model_copy(update={"started_at": None, "queued_at": T0 + timedelta(hours=3)})
    h.apply(poll(run(0, RunState.SUCCESS), run(1, RunState.SUCCESS), queued))
    e.evaluate(h, T0 + timedelta(hours=4))
    assert ("Stuck", PIPE) in firing(e) and ("TooLong", PIPE) not in firing(e)
    # It starts, runs far past twice the median, then finishes: each step must reach both rules.
    started = run(3, RunState.RUNNING).model_copy(update={"updated_at": T0 + timedelta(hours=4, seconds=1)})
    h.apply(poll(started))
    e.evaluate(h, T0 + timedelta(hours=4, seconds=15))
    assert ("Stuck", PIPE) not in firing(e) and ("TooLong", PIPE) in firing(e)
    h.apply(poll(run(3, RunState.SUCCESS, took=timedelta(minutes=6)).model_copy(
        update={"updated_at": T0 + timedelta(hours=5)}
    )))  # fmt: skip
    e.evaluate(h, T0 + timedelta(hours=5))
    assert ("TooLong", PIPE) not in firing(e)


def test_history_version_moves_on_every_change_and_only_then() -> None:
    ph = PipelineHistory(PipelineKey("af", PIPE))
    v = ph.version
    assert ph.add_run(run(1, RunState.RUNNING)) and ph.version > v
    v = ph.version
    assert not ph.add_run(run(1, RunState.RUNNING)) and ph.version == v  # the same view again
    assert ph.add_task(TaskUpdate(source="af", pipeline=PIPE, run_id="run1", task="t", state=RunState.RUNNING))
    assert ph.version > v
    ph.info = PipelineInfo(source="af", pipeline=PIPE)
    v = ph.version
    ph.info = PipelineInfo(source="af", pipeline=PIPE)  # a refresh re-sending the same info
    assert ph.version == v
    ph.info = PipelineInfo(source="af", pipeline=PIPE, paused=True)
    assert ph.version > v
    terminal_before = ph.terminal()
    ph.add_run(run(1, RunState.SUCCESS))
    assert ph.terminal() is not terminal_before and [r.run_id for r in ph.terminal()] == ["run1"]


def test_rules_swapped_without_replace_rules_are_not_served_from_cache(tmp_path: Path) -> None:
    h, e = History(), RuleEngine(rules(tmp_path, FAILED))
    h.apply(poll(run(1, RunState.FAILED)))
    e.evaluate(h, T0 + timedelta(hours=2))
    assert firing(e)[("Failed", PIPE)] == {"summary": f"{PIPE} run1 failed"}
    e.rules = rules(tmp_path, FAILED.replace("{{ pipeline }} {{ run_id }} {{ state }}", "swapped"), "r2.yaml")
    e.evaluate(h, T0 + timedelta(hours=2, seconds=15))
    assert firing(e)[("Failed", PIPE)] == {"summary": "swapped"}


BOUNDARIES = """\
groups:
  - name: g
    rules:
      - alert: Late
        when: deadline
        deadline: "22:00"
      - alert: Stale
        when: freshness
        max_age: 1h
      - alert: NotStarted
        when: late_start
        grace: 10m
      - alert: Stuck
        when: stuck
        max_wait: 30m
      - alert: TooLong
        when: duration
        max: 20m
      - alert: Flaky
        when: failure_rate
        window: 2h
        threshold: 0.4
        min_runs: 1
"""


def active(engine: RuleEngine) -> set[tuple[str, str]]:
    return {(k[0], k[1]) for k in firing(engine)}


def test_a_frozen_clock_crossing_a_boundary_flips_the_alert_at_exactly_that_tick(tmp_path: Path) -> None:
    """No history changes at all while the clock walks across each condition's boundary in 15 s ticks: the
    cached engine must flip every alert on the very tick a from-scratch evaluation does."""
    loaded = rules(tmp_path, BOUNDARIES)
    h, e = History(), RuleEngine(loaded)
    at = T0 + timedelta(hours=1)  # 2026-11-25 22:00 UTC, the deadline
    # market_data: yesterday's and today's periods met (today's run ends 21:05: 1 h old at 22:05).
    h.apply(poll(run(-24, RunState.SUCCESS), run(0, RunState.SUCCESS)))
    # risk_daily: yesterday met, today not (its deadline flips at 22:00); a failure that ended 20:10
    # (leaves the 2 h window at 22:10); a run going since 21:45 (over 20m after 22:05); a run queued since
    # 21:50 (late from 22:00, stuck after 22:20).
    other = "risk_daily"
    failed = run(-1, RunState.FAILED, pipeline=other, took=timedelta(minutes=10))
    going = run(0, RunState.RUNNING, pipeline=other).model_copy(
        update={
            "run_id": "going",
            "scheduled_for": T0 + timedelta(minutes=45),
            "started_at": T0 + timedelta(minutes=45),
        }
    )
    queued = run(1, RunState.QUEUED, pipeline=other).model_copy(
        update={
            "started_at": None,
            "scheduled_for": T0 + timedelta(minutes=50),
            "queued_at": T0 + timedelta(minutes=50),
        }
    )
    # late_one: its next run (22:00) has not been created; late from 22:10.
    info = PipelineInfo(source="af", pipeline="late_one", next_run=at)
    h.apply(poll(run(-24, RunState.SUCCESS, pipeline=other), failed, going, queued, pipelines=(info,)))
    # flaky_x: 1 failure in 3 runs in the window (not above 0.4) until the success that ended 20:15 leaves
    # it at 22:15 (1 in 2).
    flaky = "flaky_x"
    s1 = run(-1, RunState.SUCCESS, pipeline=flaky, took=timedelta(minutes=15))
    s2 = run(-1, RunState.SUCCESS, pipeline=flaky, took=timedelta(minutes=70)).model_copy(update={"run_id": "s2"})
    h.apply(poll(run(-24, RunState.SUCCESS, pipeline=flaky), s1, s2, run(0, RunState.FAILED, pipeline=flaky)))
    now = at - timedelta(minutes=10)
    e.evaluate(h, now)
    before = active(e)
    flips: dict[tuple[str, str], datetime] = {}
    while now < at + timedelta(minutes=30):
        now += timedelta(seconds=15)
        e.evaluate(h, now)
        got = active(e)
        fresh = RuleEngine(loaded)
        fresh.evaluate(h, now)
        assert got == active(fresh), now
        for k in got ^ before:
            assert k not in flips, (k, now)  # each flips once
            flips[k] = now
        before = got
    assert flips == {
        ("Late", other): at,  # the deadline is met at or before 22:00: due from 22:00 exactly
        ("NotStarted", other): at,  # scheduled 21:50 + grace 10m
        ("Stale", PIPE): at + timedelta(minutes=5, seconds=15),  # age > 1h: strictly after 22:05
        ("TooLong", other): at + timedelta(minutes=5, seconds=15),  # elapsed > 20m: strictly after 22:05
        ("Flaky", other): at + timedelta(minutes=10),  # the failure's end leaves the 2 h window
        ("Flaky", flaky): at + timedelta(minutes=15),  # a success's end leaves it
        ("Stale", flaky): at + timedelta(minutes=10, seconds=15),  # its last success ended 21:10
        ("NotStarted", "late_one"): at + timedelta(minutes=10),  # next_run + grace
        ("Stuck", other): at + timedelta(minutes=20, seconds=15),  # waited > 30m
    }
