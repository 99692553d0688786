"""`when: anomaly`: baselines, segments, versions, directions, messages, and PyOD as an optional extra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel.anomaly import detectors
from sentinel.anomaly.baseline import MAX_SAMPLES, store_for
from sentinel.anomaly.features import describe, human
from sentinel.check import rule_problems
from sentinel.clock import FrozenClock
from sentinel.model import PollResult, RunState, RunUpdate, SourceHealth, TaskUpdate
from sentinel.observe.history import History
from sentinel.rules.base import Evaluation, Scope
from sentinel.rules.conditions import MODELS, evaluator
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import load_rules
from sentinel.yamlfile import ConfigError

SRC, PIPE = "airflow-prod", "market_data_ingest"
# A Monday, 06:00 UTC: day n of a daily pipeline is T0 + n days.
T0 = datetime(2026, 10, 5, 6, 0, tzinfo=UTC)


def daily(
    n: int,
    minutes: float,
    *,
    delay: float = 0.0,
    version: str | None = None,
    state: RunState = RunState.SUCCESS,
    at: datetime | None = None,
) -> RunUpdate:
    sched = at or T0 + timedelta(days=n)
    start = sched + timedelta(seconds=delay)
    end = start + timedelta(minutes=minutes)
    return RunUpdate(
        source=SRC,
        pipeline=PIPE,
        run_id=f"run{n}",
        state=state,
        scheduled_for=sched,
        started_at=start,
        ended_at=end,
        updated_at=end,
        version=version,
        run_type="scheduled",
    )


def feed(h: History, runs: Iterable[RunUpdate], tasks: Iterable[TaskUpdate] = ()) -> None:
    health = SourceHealth(source=SRC, reachable=True, observed_at=T0)
    h.apply(PollResult(source=SRC, health=health, runs=tuple(runs), tasks=tuple(tasks)))


def rule(**fields: Any) -> Any:
    return MODELS["anomaly"].model_validate({"alert": "RunUnusual", "when": "anomaly", **fields})


def judge(r: Any, h: History, now: datetime | None = None) -> Evaluation:
    scope = Scope(now or T0 + timedelta(days=400), h, list(h.pipelines.values()), [], None, {})
    ev: Evaluation = evaluator("anomaly")(r, scope)
    return ev


def usual(n: int) -> float:
    """Minutes of an ordinary run: 12 to 15, cycling."""
    return 12.0 + n % 4


def history_of(count: int, **kw: Any) -> History:
    h = History(max_runs=1000)
    feed(h, [daily(i, usual(i), **kw) for i in range(count)])
    return h


# -- judging the newest run ------------------------------------------------------------------------------


def test_no_verdict_before_min_history_runs_are_known() -> None:
    r = rule(min_history=20)
    h = history_of(19)
    feed(h, [daily(19, 47)])
    assert judge(r, h).findings == []  # 19 runs before it: no verdict, however slow
    h = history_of(20)
    feed(h, [daily(20, 47)])
    assert len(judge(r, h).findings) == 1  # the judged run never counts towards its own baseline


def test_slow_run_fires_with_what_was_unusual_and_by_how_much() -> None:
    h = history_of(40)
    feed(h, [daily(40, 47)])
    (f,) = judge(rule(), h).findings
    v = f.variables
    assert dict(f.labels) == {"source": SRC, "pipeline": PIPE}
    assert v["feature"] == "duration" and v["run_id"] == "run40"
    assert (v["value_human"], v["usual_low_human"], v["usual_high_human"]) == ("47m", "12m", "15m")
    assert v["description"] == "took 47m; usual 12m–15m"
    assert v["score"] > v["threshold"] == 4 and v["direction"] == "slow" and v["baseline_runs"] == 40


def test_usual_run_does_not_fire_and_a_newer_usual_run_resolves() -> None:
    h = history_of(40)
    assert judge(rule(), h).findings == []
    feed(h, [daily(40, 47)])
    assert len(judge(rule(), h).findings) == 1
    feed(h, [daily(41, 13)])
    assert judge(rule(), h).findings == []


def test_direction_slow_fast_both() -> None:
    h = history_of(40)
    feed(h, [daily(40, 1)])  # suspiciously quick: an empty load that "succeeded"
    assert judge(rule(), h).findings == []  # default direction is slow
    (f,) = judge(rule(direction="fast"), h).findings
    assert f.variables["direction"] == "fast" and f.variables["description"] == "took 1m; usual 12m–15m"
    assert len(judge(rule(direction="both"), h).findings) == 1
    feed(h, [daily(41, 47)])
    assert judge(rule(direction="fast"), h).findings == []
    assert len(judge(rule(direction="both"), h).findings) == 1


def test_late_start_is_reported_as_such() -> None:
    h = history_of(40, delay=30)
    feed(h, [daily(40, 13, delay=3 * 3600)])
    (f,) = judge(rule(), h).findings
    assert f.variables["feature"] == "start_delay"
    assert f.variables["description"] == "started 3h after its scheduled time; usual 30s"


def test_features_limit_what_is_judged() -> None:
    h = history_of(40)
    feed(h, [daily(40, 13, delay=3 * 3600)])
    assert judge(rule(features=["duration"]), h).findings == []


def test_failed_runs_are_neither_judged_nor_learned() -> None:
    h = history_of(40)
    feed(h, [daily(40, 90, state=RunState.FAILED)])
    assert judge(rule(), h).findings == []  # when: failed pages for that one


# -- segments --------------------------------------------------------------------------------------------


def weekend_heavy(count: int) -> History:
    """Weekday runs take 12–15 minutes; weekend runs (little data) 2 minutes."""
    h = History(max_runs=1000)
    feed(h, [daily(i, 2 if (T0 + timedelta(days=i)).weekday() >= 5 else usual(i)) for i in range(count)])
    return h


def test_weekend_runs_are_compared_with_weekend_runs_only() -> None:
    seg = rule(segment_by=["weekend"], direction="both", min_history=5)
    flat = rule(direction="both", min_history=5)
    h = weekend_heavy(70)  # 10 weeks; run 68 is a Saturday, run 69 a Sunday
    assert (T0 + timedelta(days=69)).weekday() == 6
    assert judge(seg, h).findings == []  # a 2-minute Sunday is usual for Sundays
    assert len(judge(flat, h).findings) == 1  # against every day, it looks broken: the reason to segment
    feed(h, [daily(70, 13)])  # Monday
    assert judge(seg, h).findings == []  # weekend runs did not widen or shift the weekday baseline ...
    feed(h, [daily(71, 40)])
    (f,) = judge(seg, h).findings  # ... so a slow weekday still stands out, against weekdays only
    assert f.variables["segment"] == "weekday" and f.variables["description"] == "took 40m; usual 12m–15m"


def test_trading_day_segment_uses_the_group_calendar() -> None:
    # Runs on NYSE holidays only do housekeeping (1 minute); sessions take 12–15 minutes.
    first = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    cal_scope = {"calendars": None}
    del cal_scope["calendars"]  # the built-in registry
    h = History(max_runs=1000)
    runs = []
    from sentinel.calendars import lookup

    xnys = lookup({}, "XNYS")
    for i in range(600):
        at = first + timedelta(days=i)
        session = xnys.is_session(xnys.date_of(at))
        runs.append(daily(i, usual(i) if session else 1, at=at))
    feed(h, runs)
    # 2026-07-03 is the observed Independence Day holiday: the last run judged falls on it.
    holiday = datetime(2026, 7, 3, 12, 0, tzinfo=UTC)
    feed(h, [daily(10_000, 1, at=holiday)])
    seg = rule(segment_by=["trading_day"], direction="both", min_history=5)
    scope = Scope(T0 + timedelta(days=400), h, list(h.pipelines.values()), [], "XNYS", {})
    assert evaluator("anomaly")(seg, scope).findings == []
    flat = rule(direction="both", min_history=5)
    assert len(evaluator("anomaly")(flat, scope).findings) == 1


# -- versions --------------------------------------------------------------------------------------------


def test_a_new_version_starts_a_new_baseline() -> None:
    h = History(max_runs=1000)
    feed(h, [daily(i, usual(i), version="v1") for i in range(40)])
    # v2 does twice the work: its first runs are not compared with v1's ...
    feed(h, [daily(40, 30, version="v2")])
    assert judge(rule(min_history=5), h).findings == []
    feed(h, [daily(40 + i, 30 + i % 2, version="v2") for i in range(1, 8)])
    assert judge(rule(min_history=5), h).findings == []
    # ... and v2's own baseline judges it from then on.
    feed(h, [daily(48, 90, version="v2")])
    (f,) = judge(rule(min_history=5), h).findings
    assert f.variables["baseline_runs"] == 8 and f.variables["usual_low_human"] == "30m"
    # The same runs without versions would have paged on v2's first run.
    same = History(max_runs=1000)
    feed(same, [daily(i, usual(i)) for i in range(40)] + [daily(40, 30)])
    assert len(judge(rule(min_history=5), same).findings) == 1


def test_baseline_is_bounded_and_outlives_the_history_window() -> None:
    h = History(max_runs=100)
    for start in range(0, MAX_SAMPLES + 200, 100):
        feed(h, [daily(i, usual(i)) for i in range(start, start + 100)])
        judge(rule(), h)  # the engine evaluates after every poll: learning happens then
    (pb,) = list(store_for(h))
    assert len(pb.runs) == MAX_SAMPLES  # bounded, yet far more than the 100 runs History keeps
    assert len(pb.runs.cols["duration"]) == MAX_SAMPLES


# -- tasks -----------------------------------------------------------------------------------------------


def task(n: int, name: str, minutes: float, tries: int = 1) -> TaskUpdate:
    start = T0 + timedelta(days=n)
    return TaskUpdate(
        source=SRC,
        pipeline=PIPE,
        run_id=f"run{n}",
        task=name,
        state=RunState.SUCCESS,
        try_number=tries,
        started_at=start,
        ended_at=start + timedelta(minutes=minutes),
    )


def test_tasks_are_judged_against_their_own_baselines_with_a_task_label() -> None:
    h = History(max_runs=1000)
    runs = [daily(i, usual(i) + 3) for i in range(41)]
    tasks = [task(i, "extract", 3) for i in range(41)] + [task(i, "load", usual(i)) for i in range(40)]
    tasks.append(task(40, "load", 13, tries=6))
    feed(h, runs, tasks)
    (f,) = judge(rule(tasks="*"), h).findings
    assert dict(f.labels) == {"source": SRC, "pipeline": PIPE, "task": "load"}
    assert f.variables["description"] == "needed 5 task retries; usual 0"
    assert judge(rule(tasks="extract"), h).findings == []


def test_retries_and_task_count_are_run_features() -> None:
    h = History(max_runs=1000)
    runs = [daily(i, usual(i)) for i in range(41)]
    tasks = [task(i, name, 3) for i in range(41) for name in ("extract", "transform", "load")]
    tasks.append(task(40, "publish", 1, tries=5))
    feed(h, runs, tasks)
    (f,) = judge(rule(features=["retries", "tasks"]), h).findings
    assert f.variables["feature"] == "retries"
    assert f.variables["description"] == "needed 4 task retries; usual 0"


# -- the engine, templates, rule files ---------------------------------------------------------------


def test_engine_renders_the_summary(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(
        textwrap.dedent(
            """\
            groups:
              - name: g
                rules:
                  - alert: RunUnusual
                    when: anomaly
                    annotations:
                      summary: "{{ pipeline }} {{ description }} (score {{ score }})"
                      detail: "{{ feature }}={{ value_human }} usual {{ usual_low_human }}–{{ usual_high_human }}"
            """
        )
    )
    e = RuleEngine(load_rules([p]))
    h = history_of(40)
    clock = FrozenClock(T0 + timedelta(days=41))
    e.evaluate(h, clock.now())
    assert e.instance_list() == []
    feed(h, [daily(40, 47)])
    e.evaluate(h, clock.now())
    (inst,) = e.instance_list()
    ann = dict(inst.annotations)
    assert ann["summary"].startswith("market_data_ingest took 47m; usual 12m–15m (score ")
    assert ann["detail"] == "duration=47m usual 12m–15m"
    assert inst.state == "firing"
    feed(h, [daily(41, 13)])
    clock.advance(timedelta(days=1))
    e.evaluate(h, clock.now())
    assert [i.state for i in e.instance_list()] == ["resolved"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"detector": "iforest", "threshold": 3}, "'threshold' is the z-score of detector mad"),
        ({"contamination": 0.1}, "'contamination' applies to PyOD detectors"),
        ({"features": ["latency"]}, "features[0]: Input should be 'duration'"),
        ({"segment_by": ["month"]}, "segment_by[0]: Input should be 'weekend'"),
        ({"direction": "up"}, "direction"),
        ({"min_history": 2}, "min_history"),
    ],
)
def test_bad_rule_fields_are_config_errors(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    p = tmp_path / "r.yaml"
    extra = "".join(f"        {k}: {v!r}\n".replace("'", '"') for k, v in fields.items())
    p.write_text(f"groups:\n  - name: g\n    rules:\n      - alert: A\n        when: anomaly\n{extra}")
    with pytest.raises(ConfigError) as info:
        load_rules([p])
    text = "\n".join(str(x) for x in info.value.problems)
    assert message in text and f"{p}:" in text


def test_human_values() -> None:
    assert human("duration", 2820) == "47m"
    assert human("start_delay", -90) == "-1m30s"
    assert human("retries", 3) == "3"
    assert human("volume", 1234.5) == "1,234.50"
    assert describe("tasks", 9, 12, 12) == "ran 9 tasks; usual 12"


# -- PyOD: optional, lazy, fitted off the loop --------------------------------------------------------


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_rules_import_and_judge_without_pyod(tmp_path: Path) -> None:
    # A fresh interpreter where `import pyod` fails, as on an install without the extra.
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: Odd\n        when: anomaly\n        detector: iforest\n"
        "        annotations: {runbook_url: https://example.com/odd}\n"
        "      - alert: Slow\n        when: anomaly\n"
        "        annotations: {runbook_url: https://example.com/slow}\n"
    )
    done = _python(
        """
        import sys
        sys.modules["pyod"] = None  # what a missing package looks like to import
        from pathlib import Path
        import sentinel.rules.engine
        from sentinel.rules.conditions import KINDS
        from sentinel.check import rule_problems
        assert "anomaly" in KINDS
        for p in rule_problems([Path("rules.yaml")], []):
            print(p)
        assert not any(m == "numpy" or m.startswith(("numpy.", "sklearn")) for m in sys.modules), "eager import"
        print("OK")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "OK"
    (msg,) = [line for line in lines if "iforest" in line]
    # file:line:col pointing at the detector, and what to install
    assert msg.startswith("rules.yaml:6:"), msg
    assert "rule 'Odd' uses detector 'iforest' which needs `pip install orchestration-sentinel[anomaly]`" in msg
    assert not any("Slow" in line for line in lines)


def test_importing_sentinel_rules_does_not_import_pyod() -> None:
    done = _python(
        "import sys, sentinel.rules.engine, sentinel.anomaly.detectors\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyod', 'numpy', 'sklearn')))\n",
        Path.cwd(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_missing_pyod_judges_nothing_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detectors, "_AVAILABLE", False)
    h = history_of(40)
    feed(h, [daily(40, 47)])
    assert judge(rule(detector="knn"), h).findings == []
    assert detectors.detector_problem("knn") == "detector 'knn' needs `pip install orchestration-sentinel[anomaly]`"


pyod_missing = not detectors.pyod_available()
# tests/run.sh installs the `anomaly` extra; SENTINEL_REQUIRE_PYOD=1 there turns a missing PyOD into a failure
# instead of a skip, so CI always proves knn/iforest.
needs_pyod = pytest.mark.skipif(
    pyod_missing and os.environ.get("SENTINEL_REQUIRE_PYOD") != "1",
    reason="PyOD is not installed: pip install 'orchestration-sentinel[anomaly]' to test knn/iforest",
)


def judged_once_fitted(r: Any, h: History) -> Evaluation:
    """Evaluate, wait for the background fit it asked for, evaluate again (what the next tick does)."""
    first = judge(r, h)
    store_for(h).models.wait()
    second = judge(r, h)
    return second if second.findings or not first.findings else first


@needs_pyod
@pytest.mark.parametrize("name", ["knn", "iforest"])
def test_pyod_detectors_fit_in_the_background_and_judge(name: str) -> None:
    r = rule(detector=name, contamination=0.02)
    h = History(max_runs=1000)
    # Real timings jitter: a model learns a cloud, not four repeated points.
    feed(h, [daily(i, usual(i) + (i * 37 % 100) / 100, delay=20 + i * 53 % 30) for i in range(200)])
    feed(h, [daily(200, 47, delay=20)])
    assert judge(r, h).findings == []  # no model yet: the fit was only submitted, nothing blocked
    (f,) = judged_once_fitted(r, h).findings
    assert f.variables["detector"] == name and f.variables["feature"] == "duration"
    assert f.variables["score"] > f.variables["threshold"]
    feed(h, [daily(201, 13.5, delay=20)])
    assert judged_once_fitted(r, h).findings == []


@needs_pyod
def test_unknown_pyod_detector_is_a_check_error(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: Odd\n        when: anomaly\n        detector: nosuchmodel\n"
        "        annotations: {runbook_url: https://example.com/odd}\n"
    )
    found = [str(p) for p in rule_problems([tmp_path / "rules.yaml"], [])]
    assert any("unknown PyOD detector 'nosuchmodel'" in p and ":6:" in p for p in found), found


def test_check_warns_when_a_volume_rule_has_no_source_reading_volumes(tmp_path: Path) -> None:
    from sentinel.check import problems

    (tmp_path / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: RowsOdd\n        when: anomaly\n        features: [volume]\n"
        "        annotations: {runbook_url: https://example.com/rows}\n"
    )
    source = "sources:\n  - {name: af, kind: airflow, url: 'http://127.0.0.1:9', username: u, password: p%s}\n"
    rest = "rule_files: [rules.yaml]\nreceivers: [{name: r, console: true}]\nroute: {receiver: r}\n"
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(source % "" + rest)
    found = problems(cfg)
    assert [(p.line, p.col, p.severity) for p in found if "'volume' is read only from sources" in p.message] == [
        (6, 19, "warning")
    ]
    cfg.write_text(source % ", volume: {pipelines: ['*'], task_id: publish, key: rows}" + rest)
    assert not [p for p in problems(cfg) if "volume" in p.message]


@pytest.mark.parametrize(("doc", "marker"), [("rules.md", "## when: anomaly\n"), ("anomaly.md", "# `when: anomaly`")])
def test_docs_examples_load(tmp_path: Path, doc: str, marker: str) -> None:
    text = (Path(__file__).parents[2] / "docs" / doc).read_text()
    example = text.split(marker, 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    body = "\n".join("      " + line for line in example.strip().splitlines())
    p = tmp_path / "r.yaml"
    p.write_text(f"groups:\n  - name: g\n    rules:\n{body}\n")
    (r,) = load_rules([p]).groups()[0][1].rules
    assert r.when == "anomaly"


@needs_pyod
def test_a_model_that_cannot_be_built_is_logged_once_and_not_retried_every_tick() -> None:
    r = rule(detector="nosuchmodel")
    h = history_of(40)
    feed(h, [daily(40, 47)])
    models = store_for(h).models
    for _ in range(5):
        assert judge(r, h).findings == []
        models.wait()
    assert models.failures == 1


@needs_pyod
def test_a_new_version_gets_its_own_model() -> None:
    r = rule(detector="knn", contamination=0.02, min_history=5, features=["duration"])
    h = History(max_runs=1000)
    feed(h, [daily(i, usual(i) + (i * 37 % 100) / 100, version="v1") for i in range(60)])
    judged_once_fitted(r, h)  # v1's model exists now
    # v2 takes twice as long, steadily: once it has its own history, its usual runs are usual.
    feed(h, [daily(60 + i, 30 + (i * 37 % 100) / 100, version="v2") for i in range(12)])
    assert judged_once_fitted(r, h).findings == []
    feed(h, [daily(72, 90, version="v2")])
    (f,) = judged_once_fitted(r, h).findings
    assert f.variables["usual_low_human"].startswith("30m")


# -- baselines across a restart ------------------------------------------------------------------------


async def test_baselines_survive_a_restart_and_the_restored_runs_are_not_learned_twice(tmp_path: Path) -> None:
    from sentinel.anomaly.persist import BaselinePersistence
    from sentinel.store import Store

    r = rule(min_history=150, history=500)  # a verdict needs more runs than the restored history holds
    # Before the restart: 300 ordinary runs learned, with tasks (a rule judging tasks asked for them).
    before = History(max_runs=100)
    for i in range(300):
        feed(before, [daily(i, usual(i))], [task(i, "load", usual(i) - 1)])
        store_for(before).of(next(iter(before.pipelines.values())), tasks=True)
    pb = store_for(before).pipelines[(SRC, PIPE)]
    assert len(pb.runs) == 299 and len(pb.tasks["load"]) == 200  # the newest is judged, not learned; tasks: 200 at most
    store = Store(str(tmp_path / "state.db"))
    await store.open()
    assert await BaselinePersistence(store).save(before, T0, force=True) == 1
    await store.close()

    # After it: the store gives back the last 100 runs only; the baselines come back whole.
    store = Store(str(tmp_path / "state.db"))
    await store.open()
    after = History(max_runs=100)
    for run in before.pipelines[(SRC, PIPE)].ordered():
        after.load_run(run, list(before.pipelines[(SRC, PIPE)].tasks_of(run.run_id)))
    persistence = BaselinePersistence(store)
    assert await persistence.load(after) == 1
    feed(after, [daily(300, 47)])  # a slow run: judged against 299 runs, not the 99 the history holds
    (f,) = judge(r, after).findings
    restored = store_for(after).pipelines[(SRC, PIPE)]
    assert len(restored.runs) == 300  # run 299 learned once its successor came; none of the 100 again
    assert list(restored.runs.cols["duration"]) == [*pb.runs.cols["duration"], usual(299) * 60]
    assert len(restored.tasks["load"]) == 200
    assert "usual" in f.variables["description"]
    # Nothing changed since the load but the new run: one row written, then none until something changes.
    assert await persistence.save(after, T0, force=True) == 1
    assert await persistence.save(after, T0, force=True) == 0
    await store.close()


async def test_an_unreadable_baseline_row_is_learned_afresh_not_fatal(tmp_path: Path) -> None:
    from sentinel.anomaly.persist import NS, BaselinePersistence
    from sentinel.store import Store

    store = Store(str(tmp_path / "state.db"))
    await store.open()
    await store.put_many(NS, {f"{SRC}\x1f{PIPE}": {"runs": {"at": "not base64!"}}})
    h = history_of(40)
    assert await BaselinePersistence(store).load(h) == 0
    assert await store.all(NS) == {}
    feed(h, [daily(40, 47)])
    assert len(judge(rule(), h).findings) == 1  # learned from the history instead
    await store.close()


async def test_the_daemon_saves_baselines_on_stop_and_loads_them_on_start(tmp_path: Path) -> None:
    from sentinel.config import load_config
    from sentinel.daemon import Daemon

    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(
        "receivers: [{name: r, console: true}]\nroute: {receiver: r}\n"
        'store: {path: state.db}\nserver: {listen: "127.0.0.1:0"}\n'
    )
    first = Daemon(load_config(cfg), serve_http=False)
    await first.start()
    feed(first.history, [daily(i, usual(i)) for i in range(30)])
    learned = store_for(first.history).of(first.history.pipelines[(SRC, PIPE)])
    assert len(learned.runs) == 29
    await first.stop()
    second = Daemon(load_config(cfg), serve_http=False)
    await second.start()
    try:
        restored = store_for(second.history).pipelines[(SRC, PIPE)]
        assert list(restored.runs.cols["duration"]) == list(learned.runs.cols["duration"])
    finally:
        await second.stop()
