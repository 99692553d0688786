"""failure_rate, duration, stuck, retries and import_errors under a frozen clock."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel.clock import FrozenClock
from sentinel.model import ImportErrorInfo, PipelineInfo, PollResult, RunState, RunUpdate, SourceHealth, TaskUpdate
from sentinel.observe.history import History
from sentinel.rules.base import Evaluation, Scope
from sentinel.rules.conditions import MODELS, evaluator
from sentinel.rules.conditions.duration import Limit, parse_limit, quantile, statistic
from sentinel.rules.conditions.import_errors import MAX_MESSAGE, summary
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import load_rules
from sentinel.rules.templates import check_templates
from sentinel.yamlfile import ConfigError

T0 = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
SRC = "af"
PIPE = "market_data_ingest"


# -- helpers -------------------------------------------------------------------------------------------


def run(
    n: int,
    state: RunState,
    *,
    minutes: float | None = 5,
    pipeline: str = PIPE,
    scheduled_for: datetime | None = None,
    started_at: datetime | None = None,
    queued_at: datetime | None = None,
    ended_at: datetime | None = None,
) -> RunUpdate:
    """Run n is for T0 + n hours and, unless told otherwise, starts then and lasts `minutes`."""
    sched = scheduled_for or T0 + timedelta(hours=n)
    start = started_at
    end = ended_at
    if state not in (RunState.SCHEDULED, RunState.LATE, RunState.QUEUED):
        start = start or sched
        if state.terminal and end is None and minutes is not None:
            end = start + timedelta(minutes=minutes)
    return RunUpdate(
        source=SRC,
        pipeline=pipeline,
        run_id=f"run{n}",
        state=state,
        scheduled_for=sched,
        queued_at=queued_at,
        started_at=start,
        ended_at=end,
        updated_at=end or start or queued_at or sched,
    )


def task(n: int, name: str, tries: int, state: RunState = RunState.SUCCESS) -> TaskUpdate:
    return TaskUpdate(source=SRC, pipeline=PIPE, run_id=f"run{n}", task=name, state=state, try_number=tries)


def poll(
    *runs: RunUpdate,
    tasks: tuple[TaskUpdate, ...] = (),
    reachable: bool = True,
    now: datetime = T0,
    pipelines: tuple[PipelineInfo, ...] | None = None,
    import_errors: tuple[ImportErrorInfo, ...] | None = None,
    source: str = SRC,
) -> PollResult:
    health = SourceHealth(
        source=source, reachable=reachable, observed_at=now, error=None if reachable else "connect_error"
    )
    return PollResult(
        source=source, health=health, runs=runs, tasks=tasks, pipelines=pipelines, import_errors=import_errors
    )


def rule(kind: str, **fields: Any) -> Any:
    return MODELS[kind].model_validate({"alert": "A", "when": kind, **fields})


def judge(r: Any, h: History, now: datetime) -> Evaluation:
    if r.scope == "source":
        scope = Scope(now, h, [], sorted(h.health))
    else:
        scope = Scope(now, h, list(h.pipelines.values()), [])
    ev: Evaluation = evaluator(r.when)(r, scope)
    return ev


def only(ev: Evaluation) -> dict[str, Any]:
    assert len(ev.findings) == 1, ev.findings
    return dict(ev.findings[0].variables)


def engine(tmp_path: Path, text: str) -> RuleEngine:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return RuleEngine(load_rules([p]))


def states(e: RuleEngine) -> dict[tuple[str, ...], str]:
    out = {}
    for i in e.instance_list():
        labels = dict(i.labels)
        out[(labels["alertname"], labels.get("pipeline", labels.get("filename", "")))] = i.state
    return out


def annotations(e: RuleEngine, alert: str) -> dict[str, str]:
    (inst,) = [i for i in e.instance_list() if dict(i.labels)["alertname"] == alert]
    return dict(inst.annotations)


def load_error(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_rules([p])
    return [str(x) for x in info.value.problems]


def group(rule_yaml: str) -> str:
    body = "\n".join("      " + line for line in rule_yaml.strip().splitlines())
    return f"groups:\n  - name: g\n    rules:\n{body}\n"


# -- failure_rate --------------------------------------------------------------------------------------


def test_failure_rate_last_n_is_strictly_above_threshold() -> None:
    h = History()
    r = rule("failure_rate", last=4, threshold=0.5)
    h.apply(poll(run(1, RunState.FAILED), run(2, RunState.SUCCESS), run(3, RunState.FAILED), run(4, RunState.SUCCESS)))
    assert judge(r, h, T0).findings == []  # 2/4 = 0.5 is not above 0.5
    h.apply(poll(run(5, RunState.CRASHED)))  # crashed counts as failed; window is now runs 2..5 → 2/4
    assert judge(r, h, T0).findings == []
    h.apply(poll(run(6, RunState.FAILED)))  # runs 3..6 → 3/4
    v = only(judge(r, h, T0))
    assert (v["failed"], v["total"], v["rate"], v["window"], v["run_id"]) == (3, 4, 0.75, None, "run6")
    assert v["value"] == 0.75


def test_failure_rate_ignores_skipped_cancelled_and_unfinished_runs() -> None:
    h = History()
    r = rule("failure_rate", last=2, threshold=0.5)
    h.apply(
        poll(
            run(1, RunState.FAILED),
            run(2, RunState.FAILED),
            run(3, RunState.SKIPPED),
            run(4, RunState.CANCELLED),
            run(5, RunState.RUNNING),
        )
    )
    v = only(judge(r, h, T0))
    assert (v["failed"], v["total"]) == (2, 2)


def test_failure_rate_last_n_needs_n_runs_by_default_and_min_runs_lowers_it() -> None:
    h = History()
    h.apply(poll(run(1, RunState.FAILED), run(2, RunState.FAILED)))
    assert judge(rule("failure_rate", last=3, threshold=0.1), h, T0).findings == []
    v = only(judge(rule("failure_rate", last=3, threshold=0.1, min_runs=2), h, T0))
    assert (v["failed"], v["total"]) == (2, 2)


def test_failure_rate_window_by_ended_at_and_runs_age_out() -> None:
    clock = FrozenClock(T0 + timedelta(hours=10))
    h = History()
    # six successful runs ending T0+4h05m..T0+9h05m, and a catch-up run for a period a month ago that
    # failed at T0+9h05m: judged by ended_at it is today's failure, though it sorts first by scheduled_for.
    catch_up = run(0, RunState.FAILED, scheduled_for=T0 - timedelta(days=30), started_at=T0 + timedelta(hours=9))
    h.apply(poll(*(run(n, RunState.SUCCESS) for n in range(4, 10)), catch_up))
    v = only(judge(rule("failure_rate", window="6h", threshold=0.1), h, clock.now()))
    assert (v["failed"], v["total"], v["window"], v["threshold"]) == (1, 7, "6h", 0.1)
    assert judge(rule("failure_rate", window="6h", threshold=0.3), h, clock.now()).findings == []

    h2 = History()
    h2.apply(poll(*(run(n, RunState.FAILED if n <= 3 else RunState.SUCCESS) for n in range(1, 9))))
    r2 = rule("failure_rate", window="4h", threshold=0.2, min_runs=2)
    clock2 = FrozenClock(T0 + timedelta(hours=4, minutes=6))  # runs 1..3 (failed) and 4 (ok) ended: 3/4
    assert only(judge(r2, h2, clock2.now()))["rate"] == 0.75
    clock2.advance(timedelta(hours=4))  # now T0+8h06m: window holds runs 5..8 (ended 5:05..8:05): 0 failed
    assert judge(r2, h2, clock2.now()).findings == []


def test_failure_rate_window_default_min_runs_is_five() -> None:
    h = History()
    h.apply(poll(*(run(n, RunState.FAILED) for n in range(1, 5))))
    now = T0 + timedelta(hours=5)
    assert judge(rule("failure_rate", window="1d", threshold=0.5), h, now).findings == []
    h.apply(poll(run(5, RunState.FAILED)))
    assert only(judge(rule("failure_rate", window="1d", threshold=0.5), h, now + timedelta(hours=1)))["total"] == 5


def test_failure_rate_through_engine_renders_and_resolves(tmp_path: Path) -> None:
    text = group(
        """
- alert: FlakyPipeline
  when: failure_rate
  last: 4
  threshold: 0.25
  annotations:
    summary: "{{ pipeline }}: {{ (rate * 100) | round | int }}% of {{ total }} runs failed ({{ failed }})"
"""
    )
    clock = FrozenClock(T0)
    h, e = History(), engine(tmp_path, text)
    h.apply(poll(run(1, RunState.FAILED), run(2, RunState.SUCCESS), run(3, RunState.FAILED), run(4, RunState.SUCCESS)))
    e.evaluate(h, clock.now())
    assert states(e) == {("FlakyPipeline", PIPE): "firing"}
    assert annotations(e, "FlakyPipeline")["summary"] == f"{PIPE}: 50% of 4 runs failed (2)"
    clock.advance(timedelta(hours=4))
    h.apply(poll(*(run(n, RunState.SUCCESS) for n in range(5, 8))))  # last 4: 4,5,6,7 → 0 failed
    e.evaluate(h, clock.now())
    assert states(e) == {("FlakyPipeline", PIPE): "resolved"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("threshold: 0.2", "exactly one of 'last'"),
        ("threshold: 0.2\n  last: 5\n  window: 1d", "exactly one of 'last'"),
        ("threshold: 1.5\n  last: 5", "less than or equal to 1"),
        ("threshold: 0.2\n  last: 5\n  min_runs: 6", "min_runs (6) is larger than last (5)"),
        ("threshold: 0.2\n  window: 1 day", "invalid duration"),
        ("threshold: 0.2\n  window: 0s", "'window' must be longer than 0s"),
        ("last: 5", "missing required key 'threshold'"),
    ],
)
def test_failure_rate_validation(tmp_path: Path, fields: str, message: str) -> None:
    problems = load_error(tmp_path, group(f"- alert: R\n  when: failure_rate\n  {fields}"))
    assert any(message in p for p in problems), problems
    assert all(p.startswith(str(tmp_path / "r.yaml") + ":") for p in problems)


# -- duration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45m", Limit(None, 1.0, 2700.0)),
        ("1h30m", Limit(None, 1.0, 5400.0)),
        ("90m", Limit(None, 1.0, 5400.0)),
        (90, Limit(None, 1.0, 90.0)),
        ("p95 * 1.5", Limit("p95", 1.5, 0.0)),
        ("p50*2", Limit("p50", 2.0, 0.0)),
        ("median * 3", Limit("median", 3.0, 0.0)),
        ("mean + 10m", Limit("mean", 1.0, 600.0)),
        ("p90 * 0.5 - 1m", Limit("p90", 0.5, -60.0)),
        ("p99", Limit("p99", 1.0, 0.0)),
        ("  p95   *  .5  +  30s ", Limit("p95", 0.5, 30.0)),
    ],
)
def test_duration_limit_grammar(text: str | int, expected: Limit) -> None:
    got = parse_limit(text)
    assert (got.stat, got.factor, got.offset) == (expected.stat, expected.factor, expected.offset)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p96 * 2", "unknown statistic 'p96'"),
        ("p95 * 0", "factor must be greater than 0"),
        ("p95 * -1", "expected a duration"),
        ("p95 + 10 minutes", "expected a duration"),
        ("p95 + 10x", "invalid duration"),
        ("fast", "expected a duration"),
        ("mean / 2", "expected a duration"),
        (True, "expected a duration"),
    ],
)
def test_duration_limit_grammar_errors(text: Any, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_limit(text)
    assert message in str(info.value)


def test_quantile_matches_numpy_linear_interpolation() -> None:
    data = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    s = sorted(data)
    # statistics' "inclusive" method is the same linear interpolation numpy uses by default
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    for p in (50, 90, 95, 99):
        assert quantile(s, p / 100) == pytest.approx(cuts[p - 1])
    assert statistic(data, "median") == statistics.median(data)
    assert statistic(data, "mean") == statistics.mean(data)
    assert quantile([7.0], 0.95) == 7.0


def test_duration_absolute_max_on_a_running_run_then_on_the_finished_run() -> None:
    clock = FrozenClock(T0 + timedelta(hours=1))
    h = History()
    r = rule("duration", max="45m")
    h.apply(poll(run(1, RunState.RUNNING)))  # started at T0+1h
    clock.advance(timedelta(minutes=45))
    assert judge(r, h, clock.now()).findings == []  # exactly at the limit is not over it
    clock.advance(timedelta(seconds=1))
    v = only(judge(r, h, clock.now()))
    assert (v["run_id"], v["duration"], v["limit"], v["baseline"], v["direction"], v["running"]) == (
        "run1",
        2701.0,
        2700.0,
        None,
        "long",
        True,
    )
    assert (v["duration_text"], v["limit_text"]) == ("45m1s", "45m")
    # it finishes after 50m: still too long until a run finishes within bounds
    h.apply(poll(run(1, RunState.SUCCESS, minutes=50)))
    clock.advance(timedelta(minutes=30))
    v = only(judge(r, h, clock.now()))
    assert (v["duration"], v["running"], v["state"]) == (3000.0, False, "success")
    # the next run starts: the last finished run is still the slow one, and the new one is fine so far
    h.apply(poll(run(2, RunState.RUNNING)))
    clock.set(T0 + timedelta(hours=2, minutes=10))
    assert only(judge(r, h, clock.now()))["run_id"] == "run1"
    h.apply(poll(run(2, RunState.SUCCESS, minutes=20)))
    assert judge(r, h, clock.now()).findings == []


def test_duration_running_run_wins_and_oldest_running_is_reported() -> None:
    now = T0 + timedelta(hours=5)
    h = History()
    h.apply(poll(run(1, RunState.SUCCESS, minutes=90), run(3, RunState.RUNNING), run(2, RunState.RETRYING)))
    v = only(judge(rule("duration", max="1h"), h, now))
    assert (v["run_id"], v["running"], v["duration"]) == ("run2", True, 3 * 3600.0)


def test_duration_failed_runs_count_for_max_but_cancelled_runs_are_ignored() -> None:
    h = History()
    h.apply(poll(run(1, RunState.FAILED, minutes=90)))
    assert only(judge(rule("duration", max="1h"), h, T0))["state"] == "failed"
    h.apply(poll(run(2, RunState.CANCELLED, minutes=3)))  # on-call killed a hung run: not a new verdict
    assert only(judge(rule("duration", max="1h"), h, T0))["run_id"] == "run1"


def test_duration_relative_max_needs_min_history_and_excludes_the_judged_run() -> None:
    h = History()
    r = rule("duration", max="p95 * 1.5", min_history=5)
    # four successful 10-minute runs, then a 20-minute run: too little history for a verdict
    h.apply(poll(*(run(n, RunState.SUCCESS, minutes=10) for n in range(1, 5)), run(5, RunState.SUCCESS, minutes=20)))
    assert judge(r, h, T0).findings == []
    # one more 10-minute run: the judged run (run 6) is fine, and baseline is 5 runs of 10m + 20m
    h.apply(poll(run(6, RunState.SUCCESS, minutes=10)))
    assert judge(r, h, T0).findings == []
    # a 30-minute run: baseline p95 of [10,10,10,10,20,10]m = 17.5m, limit 26.25m. Had the judged run
    # counted in its own baseline, p95 would be 27m and the limit 40.5m: it would never fire.
    h.apply(poll(run(7, RunState.SUCCESS, minutes=30)))
    v = only(judge(r, h, T0))
    assert (v["direction"], v["duration"], v["baseline"], v["limit"]) == ("long", 1800.0, 1050.0, 1575.0)


def test_duration_relative_limit_numbers() -> None:
    h = History()
    durations = [10, 12, 11, 13, 10, 12, 11, 30]  # minutes; the last one is the judged run
    h.apply(poll(*(run(n, RunState.SUCCESS, minutes=m) for n, m in enumerate(durations, start=1))))
    baseline_samples = [m * 60.0 for m in durations[:-1]]
    r = rule("duration", max="median * 2 + 1m")
    v = only(judge(r, h, T0))
    assert v["baseline"] == statistics.median(baseline_samples)
    assert v["limit"] == statistics.median(baseline_samples) * 2 + 60
    assert (v["duration"], v["stat"], v["baseline_text"]) == (1800.0, "median", "11m")
    # history: 3 uses only the three most recent successes other than the judged run
    r3 = rule("duration", max="mean * 2", history=3, min_history=3)
    v3 = only(judge(r3, h, T0))
    assert v3["baseline"] == pytest.approx(statistics.mean([10 * 60, 12 * 60, 11 * 60]))


def test_duration_baseline_only_counts_successful_runs() -> None:
    h = History()
    h.apply(
        poll(
            *(run(n, RunState.SUCCESS, minutes=10) for n in range(1, 6)),
            *(run(n, RunState.FAILED, minutes=1) for n in range(6, 12)),
            run(12, RunState.SUCCESS, minutes=15),
        )
    )
    v = only(judge(rule("duration", max="p50 + 4m"), h, T0))
    assert (v["baseline"], v["limit"]) == (600.0, 840.0)


def test_duration_min_only_for_successful_finished_runs() -> None:
    h = History()
    r = rule("duration", min="5m")
    h.apply(poll(run(1, RunState.SUCCESS, minutes=2)))
    v = only(judge(r, h, T0))
    assert (v["direction"], v["duration"], v["limit"]) == ("short", 120.0, 300.0)
    h.apply(poll(run(2, RunState.FAILED, minutes=1)))  # a run that fails fast is not "too short"
    assert judge(r, h, T0).findings == []
    h.apply(poll(run(3, RunState.RUNNING)))  # a run in progress is never too short
    assert judge(r, h, T0 + timedelta(hours=3, seconds=10)).findings == []


def test_duration_relative_min() -> None:
    h = History()
    h.apply(poll(*(run(n, RunState.SUCCESS, minutes=60) for n in range(1, 11)), run(11, RunState.SUCCESS, minutes=5)))
    v = only(judge(rule("duration", max="p95 * 2", min="p50 * 0.2"), h, T0))
    assert (v["direction"], v["baseline"], v["limit"]) == ("short", 3600.0, 720.0)


def test_duration_through_engine_for_and_resolution(tmp_path: Path) -> None:
    text = group(
        """
- alert: RunTooLong
  when: duration
  max: 1h
  for: 5m
  annotations:
    summary: "{{ run_id }} {{ direction }}: {{ duration_text }} > {{ limit_text }}"
"""
    )
    clock = FrozenClock(T0 + timedelta(hours=2, minutes=1))
    h, e = History(), engine(tmp_path, text)
    h.apply(poll(run(1, RunState.RUNNING)))
    e.evaluate(h, clock.now())
    assert states(e) == {("RunTooLong", PIPE): "pending"}
    clock.advance(timedelta(minutes=5))
    e.evaluate(h, clock.now())
    assert states(e) == {("RunTooLong", PIPE): "firing"}
    assert annotations(e, "RunTooLong")["summary"] == "run1 long: 1h6m > 1h"
    # on-call cancels the hung run: a decision, not a new verdict, so nothing is left to judge
    h.apply(poll(run(1, RunState.CANCELLED, minutes=66)))
    clock.advance(timedelta(minutes=1))
    e.evaluate(h, clock.now())
    assert states(e) == {("RunTooLong", PIPE): "resolved"}


def test_duration_held_while_the_source_is_unreachable() -> None:
    h = History()
    r = rule("duration", max="1h")
    h.apply(poll(run(1, RunState.RUNNING), run(1, RunState.RUNNING, pipeline="portfolio_risk", minutes=None)))
    now = T0 + timedelta(hours=1, minutes=50)
    h.apply(poll(run(1, RunState.SUCCESS, minutes=30)))  # market data finished in time; risk still going
    h.apply(poll(reachable=False, now=now))
    ev = judge(r, h, now + timedelta(hours=1))
    assert ev.findings == []  # the stale "running" risk run is not judged
    assert not ev.settled({"source": SRC, "pipeline": "portfolio_risk"})
    h.apply(poll(now=now))
    assert only(judge(r, h, now + timedelta(hours=1)))["run_id"] == "run1"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("history: 30", "needs 'max', 'min' or both"),
        ("max: p97 * 2", "unknown statistic 'p97'"),
        ("max: 45 minutes", "expected a duration (45m) or '<stat> [* factor] [+|- duration]'"),
        ("max: 1h\n  history: 3", "min_history (5) is larger than history (3)"),
        ("max: 0s", "'max' must be longer than 0s"),
        ("max: 1h\n  baseline: p95", "unknown key 'baseline'"),
    ],
)
def test_duration_validation(tmp_path: Path, fields: str, message: str) -> None:
    problems = load_error(tmp_path, group(f"- alert: R\n  when: duration\n  {fields}"))
    assert any(message in p for p in problems), problems


def test_duration_limit_round_trips_as_text() -> None:
    r = rule("duration", max="p95 * 1.5 + 10m", min="5m")
    dumped = r.model_dump(by_alias=True)
    assert (dumped["max"], dumped["min"]) == ("p95 * 1.5 + 10m", "5m")
    assert MODELS["duration"].model_validate(dumped) == r


# -- stuck ---------------------------------------------------------------------------------------------


def test_stuck_queued_measured_from_queued_at() -> None:
    h = History()
    queued = run(1, RunState.QUEUED, queued_at=T0 + timedelta(hours=1, minutes=10))
    h.apply(poll(queued))
    r = rule("stuck", max_wait="30m")
    assert judge(r, h, T0 + timedelta(hours=1, minutes=40)).findings == []  # exactly 30m: not over
    v = only(judge(r, h, T0 + timedelta(hours=1, minutes=41)))
    assert (v["run_id"], v["state"], v["waiting"], v["since"], v["count"]) == (
        "run1",
        "queued",
        31 * 60.0,
        T0 + timedelta(hours=1, minutes=10),
        1,
    )
    assert (v["waiting_text"], v["max_wait"]) == ("31m", "30m")


def test_stuck_scheduled_only_once_its_time_has_passed_and_from_scheduled_for() -> None:
    h = History()
    h.apply(poll(run(1, RunState.SCHEDULED), run(2, RunState.LATE)))  # for T0+1h and T0+2h
    r = rule("stuck", max_wait="15m")
    assert judge(r, h, T0).findings == []  # both in the future
    v = only(judge(r, h, T0 + timedelta(hours=1, minutes=20)))
    assert (v["run_id"], v["waiting"], v["count"]) == ("run1", 1200.0, 1)
    v = only(judge(r, h, T0 + timedelta(hours=2, minutes=20)))
    assert (v["run_id"], v["count"]) == ("run1", 2)  # the longest wait is reported, both counted


def test_stuck_ignores_running_finished_and_unmeasurable_runs() -> None:
    h = History()
    no_times = RunUpdate(source=SRC, pipeline=PIPE, run_id="x", state=RunState.QUEUED)
    h.apply(poll(run(1, RunState.RUNNING), run(2, RunState.SUCCESS), run(3, RunState.PAUSED), no_times))
    assert judge(rule("stuck", max_wait="1m"), h, T0 + timedelta(days=1)).findings == []


def test_stuck_default_max_wait_is_30m() -> None:
    assert rule("stuck").max_wait == timedelta(minutes=30)


def test_stuck_paused_pipelines_raise_nothing_and_resolve(tmp_path: Path) -> None:
    text = group("- alert: RunStuck\n  when: stuck\n  max_wait: 10m")
    clock = FrozenClock(T0 + timedelta(hours=1, minutes=30))
    h, e = History(), engine(tmp_path, text)
    info = PipelineInfo(source=SRC, pipeline=PIPE, paused=False)
    h.apply(poll(run(1, RunState.QUEUED, queued_at=T0 + timedelta(hours=1)), pipelines=(info,)))
    e.evaluate(h, clock.now())
    assert states(e) == {("RunStuck", PIPE): "firing"}
    h.apply(poll(pipelines=(info.model_copy(update={"paused": True}),)))
    clock.advance(60)
    e.evaluate(h, clock.now())
    assert states(e) == {("RunStuck", PIPE): "resolved"}
    # a paused pipeline with a long-queued run never fires in the first place
    h2, e2 = History(), engine(tmp_path, text)
    h2.apply(poll(run(1, RunState.QUEUED, queued_at=T0), pipelines=(info.model_copy(update={"paused": True}),)))
    e2.evaluate(h2, clock.now())
    assert states(e2) == {}


def test_stuck_held_while_the_source_is_unreachable(tmp_path: Path) -> None:
    text = group("- alert: RunStuck\n  when: stuck\n  max_wait: 10m")
    clock = FrozenClock(T0 + timedelta(hours=1, minutes=30))
    h, e = History(), engine(tmp_path, text)
    h.apply(
        poll(
            run(1, RunState.QUEUED, queued_at=T0 + timedelta(hours=1)),
            run(1, RunState.QUEUED, pipeline="portfolio_risk", queued_at=T0 + timedelta(hours=1, minutes=25)),
        )
    )
    e.evaluate(h, clock.now())
    assert states(e) == {("RunStuck", PIPE): "firing"}
    h.apply(poll(reachable=False, now=clock.now()))
    clock.advance(timedelta(minutes=30))
    e.evaluate(h, clock.now())
    # held, and no new alert from stale data for the portfolio_risk run that "queued" 35m ago
    assert states(e) == {("RunStuck", PIPE): "firing"}
    h.apply(
        poll(
            run(1, RunState.RUNNING, started_at=clock.now()),
            run(1, RunState.RUNNING, pipeline="portfolio_risk", started_at=clock.now()),
            now=clock.now(),
        )
    )
    clock.advance(15)
    e.evaluate(h, clock.now())
    assert states(e) == {("RunStuck", PIPE): "resolved"}


# -- retries -------------------------------------------------------------------------------------------


def test_retries_in_the_latest_run_sum_over_tasks() -> None:
    h = History()
    h.apply(
        poll(
            run(1, RunState.SUCCESS),
            run(2, RunState.RUNNING),
            tasks=(
                task(1, "extract", 5),  # an older run's retries do not count without a window
                task(2, "extract", 3),
                task(2, "load", 2),
                task(2, "transform", 1),
                task(2, "never_ran", 0),
            ),
        )
    )
    assert judge(rule("retries", threshold=0, tasks="load"), h, T0).findings != []  # load: 1 retry
    assert judge(rule("retries", threshold=1, tasks="load"), h, T0).findings == []
    v = only(judge(rule("retries", threshold=2), h, T0))
    assert (v["retries"], v["run_id"], v["tasks"], v["runs"], v["window"]) == (3, "run2", ["extract", "load"], 1, None)
    assert judge(rule("retries", threshold=3), h, T0).findings == []  # 3 is not above 3
    assert only(judge(rule("retries"), h, T0))["retries"] == 3  # default threshold 0: any retry


def test_retries_a_new_run_without_tasks_does_not_clear_the_previous_verdict() -> None:
    h = History()
    r = rule("retries", threshold=1)
    h.apply(poll(run(1, RunState.SUCCESS), tasks=(task(1, "extract", 4),)))
    assert only(judge(r, h, T0))["run_id"] == "run1"
    h.apply(poll(run(2, RunState.QUEUED, queued_at=T0 + timedelta(hours=2))))
    assert only(judge(r, h, T0))["run_id"] == "run1"
    h.apply(poll(run(2, RunState.RUNNING), tasks=(task(2, "extract", 1, RunState.RUNNING),)))
    assert judge(r, h, T0).findings == []


def test_retries_window_sums_across_active_and_recently_ended_runs() -> None:
    h = History()
    h.apply(
        poll(
            run(1, RunState.SUCCESS),  # ends T0+1h05m
            run(2, RunState.FAILED),  # ends T0+2h05m
            run(3, RunState.RUNNING),
            tasks=(task(1, "a", 4), task(2, "a", 2), task(2, "b", 3), task(3, "b", 2, RunState.RUNNING)),
        )
    )
    r = rule("retries", threshold=3, window="2h", tasks="*")
    now = T0 + timedelta(hours=3)  # window from T0+1h: all three runs
    v = only(judge(r, h, now))
    assert (v["retries"], v["runs"], v["run_id"], v["tasks"], v["window"]) == (
        3 + 3 + 1,
        3,
        "run2",  # run1 and run2 both have 3: the latest is named
        ["a", "b"],
        "2h",
    )
    v = only(judge(r, h, now + timedelta(minutes=30)))  # run 1 has aged out
    assert (v["retries"], v["runs"]) == (4, 2)
    assert judge(rule("retries", threshold=4, window="2h"), h, now + timedelta(minutes=30)).findings == []


def test_retries_task_names_are_bounded() -> None:
    h = History()
    h.apply(poll(run(1, RunState.SUCCESS), tasks=tuple(task(1, f"t{i:03}", 2) for i in range(100))))
    v = only(judge(rule("retries", threshold=0), h, T0))
    assert v["retries"] == 100
    assert len(v["tasks"]) == 20


def test_retries_through_engine(tmp_path: Path) -> None:
    text = group(
        """
- alert: ManyRetries
  when: retries
  threshold: 2
  tasks: "load_*"
  annotations:
    summary: "{{ retries }} retries in {{ run_id }}: {{ tasks | join(', ') }}"
"""
    )
    h, e = History(), engine(tmp_path, text)
    h.apply(poll(run(1, RunState.SUCCESS), tasks=(task(1, "load_prices", 3), task(1, "load_fx", 2), task(1, "x", 9))))
    e.evaluate(h, T0)
    assert annotations(e, "ManyRetries")["summary"] == "3 retries in run1: load_prices, load_fx"


# -- import_errors -------------------------------------------------------------------------------------

TRACEBACK = """Traceback (most recent call last):
  File "/opt/airflow/dags/prices.py", line 3, in <module>
    import vendor_sdk
ModuleNotFoundError: No module named 'vendor_sdk'
"""


def err(filename: str, message: str = "SyntaxError: invalid syntax", source: str = SRC) -> ImportErrorInfo:
    return ImportErrorInfo(source=source, filename=filename, message=message, timestamp=T0)


def test_import_error_summary() -> None:
    assert summary(TRACEBACK) == "ModuleNotFoundError: No module named 'vendor_sdk'"
    assert summary("Broken DAG: duplicate dag_id\nmore detail") == "Broken DAG: duplicate dag_id"
    assert summary("\n\n  first real line  \n") == "first real line"
    assert summary("") == ""
    long = summary("x" * 1000)
    assert len(long) == MAX_MESSAGE and long.endswith("…")


def test_import_errors_one_alert_per_file_resolved_per_file(tmp_path: Path) -> None:
    text = group(
        """
- alert: DagImportError
  when: import_errors
  annotations:
    summary: "{{ filename }} on {{ source }}: {{ message }}"
"""
    )
    clock = FrozenClock(T0)
    h, e = History(), engine(tmp_path, text)
    h.apply(poll(import_errors=(err("dags/prices.py", TRACEBACK), err("dags/risk.py"), err("dags/risk.py"))))
    e.evaluate(h, clock.now())
    assert states(e) == {("DagImportError", "dags/prices.py"): "firing", ("DagImportError", "dags/risk.py"): "firing"}
    inst = next(i for i in e.instance_list() if dict(i.labels)["filename"] == "dags/prices.py")
    assert dict(inst.labels) == {
        "alertname": "DagImportError",
        "severity": "warning",
        "source": SRC,
        "filename": "dags/prices.py",
    }
    assert dict(inst.annotations)["summary"] == (
        "dags/prices.py on af: ModuleNotFoundError: No module named 'vendor_sdk'"
    )
    # a poll that did not re-read import errors changes nothing
    clock.advance(15)
    h.apply(poll(now=clock.now()))
    e.evaluate(h, clock.now())
    assert set(states(e).values()) == {"firing"}
    # risk.py is fixed: only its alert resolves
    clock.advance(15)
    h.apply(poll(import_errors=(err("dags/prices.py", TRACEBACK),), now=clock.now()))
    e.evaluate(h, clock.now())
    assert states(e) == {
        ("DagImportError", "dags/prices.py"): "firing",
        ("DagImportError", "dags/risk.py"): "resolved",
    }


def test_import_errors_held_while_unreachable_and_ignored_where_never_read() -> None:
    h = History()
    r = rule("import_errors")
    h.apply(poll(import_errors=(err("dags/a.py"),)))
    h.apply(poll(source="prefect"))  # a source without import errors at all
    ev = judge(r, h, T0)
    assert [dict(f.labels) for f in ev.findings] == [{"source": SRC, "filename": "dags/a.py"}]
    assert ev.settled({"source": SRC, "filename": "dags/b.py"})
    assert not ev.settled({"source": "prefect", "filename": "x.py"})
    h.apply(poll(reachable=False))
    ev = judge(r, h, T0)
    assert ev.findings == []
    assert not ev.settled({"source": SRC, "filename": "dags/a.py"})


def test_import_errors_respects_the_source_selector(tmp_path: Path) -> None:
    text = group('- alert: DagImportError\n  when: import_errors\n  pipelines: {source: "prod-*"}')
    h, e = History(), engine(tmp_path, text)
    h.apply(poll(import_errors=(err("dags/a.py"),)))
    h.apply(poll(import_errors=(err("dags/b.py", source="prod-af"),), source="prod-af"))
    e.evaluate(h, T0)
    assert states(e) == {("DagImportError", "dags/b.py"): "firing"}


# -- shared --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fields", "template", "bad"),
    [
        ("failure_rate", {"last": 5, "threshold": 0.5}, "{{ rate }} {{ failed }} {{ total }} {{ window }}", None),
        ("failure_rate", {"last": 5, "threshold": 0.5}, "{{ run_id }} {{ duration }}", "duration"),
        ("duration", {"max": "1h"}, "{{ run_id }} {{ duration }} {{ limit }} {{ baseline }} {{ direction }}", None),
        ("duration", {"max": "1h"}, "{{ retries }}", "retries"),
        ("stuck", {}, "{{ run_id }} {{ state }} {{ waiting }} {{ since }}", None),
        ("stuck", {}, "{{ duration }}", "duration"),
        ("retries", {}, "{{ retries }} {{ run_id }} {{ tasks }}", None),
        ("retries", {}, "{{ rate }}", "rate"),
        ("import_errors", {}, "{{ filename }} {{ message }} {{ source }}", None),
        ("import_errors", {}, "{{ run_id }}", "run_id"),
    ],
)
def test_template_fields_are_declared(kind: str, fields: dict[str, Any], template: str, bad: str | None) -> None:
    r = rule(kind, **fields, annotations={"summary": template})
    problems = check_templates(r)
    if bad is None:
        assert problems == []
    else:
        assert len(problems) == 1 and f"unknown template field(s) {bad}" in problems[0][1]


def test_findings_never_carry_run_ids_or_times_in_labels() -> None:
    h = History()
    h.apply(
        poll(
            run(1, RunState.FAILED, minutes=120),
            run(2, RunState.QUEUED, queued_at=T0),
            tasks=(task(1, "a", 3),),
            import_errors=(err("dags/a.py"),),
        )
    )
    now = T0 + timedelta(days=1)
    cases = [
        rule("failure_rate", last=1, threshold=0.5),
        rule("duration", max="1h"),
        rule("stuck"),
        rule("retries"),
        rule("import_errors"),
    ]
    for r in cases:
        ev = judge(r, h, now)
        assert ev.findings, r.when
        for f in ev.findings:
            assert set(f.labels) <= {"source", "pipeline", "filename"}, (r.when, f.labels)


@pytest.mark.parametrize("kind", ["failure_rate", "duration", "stuck", "retries", "import_errors"])
def test_docs_examples_load(tmp_path: Path, kind: str) -> None:
    """The YAML example in each kind's section of docs/rules.md is a valid rule (templates included)."""
    text = (Path(__file__).parents[2] / "docs" / "rules.md").read_text()
    section = text.split(f"## when: {kind}\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    p = tmp_path / "r.yaml"
    p.write_text(group(example))
    (rule_,) = load_rules([p]).groups()[0][1].rules
    assert rule_.when == kind
