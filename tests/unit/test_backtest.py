"""`sentinel backtest`: replay on a simulated clock, per-day/per-week counts, non-trading-day pages,
incidents, --compare, and the whole command against the simulator's Airflow/Prefect-shaped HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sentinel.backtest.fetch import SourceHistory
from sentinel.backtest.replay import replay
from sentinel.backtest.report import compare, render, render_compare, summarize
from sentinel.calendars import Calendars
from sentinel.config import LoadedConfig, load_config
from sentinel.model import RunState, RunUpdate
from sentinel.rules.files import LoadedRules, load_rules

NY = ZoneInfo("America/New_York")

RULES = """\
groups:
  - name: exchange               # no calendar: pages are judged on XNYS
    rules:
      - alert: PipelineFailed
        when: failed
        severity: critical
  - name: office
    calendar: weekdays           # Thanksgiving is a weekday here
    rules:
      - alert: WeekdayFailed
        when: failed
        severity: warning
"""

CONFIG = """\
sources: [{{name: s, kind: prefect, url: "{url}", poll_interval: 15s}}]
rule_files: [rules.yaml]
evaluation_interval: 1m
receivers: [{{name: pager, send_resolved: false}}, {{name: slack}}]
route:
  receiver: slack
  group_by: [alertname, pipeline]
  group_wait: 30s
  group_interval: 5m
  routes:
    - {{matchers: ['severity="critical"'], receiver: pager}}
store: {{path: ":memory:"}}
"""


def setup(tmp_path: Path, rules: str = RULES, url: str = "http://127.0.0.1:9/api") -> tuple[LoadedConfig, LoadedRules]:
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "sentinel.yaml").write_text(CONFIG.format(url=url))
    loaded = load_config(tmp_path / "sentinel.yaml")
    return loaded, load_rules(loaded.rule_paths)


def run(pipeline: str, n: int, ended: datetime, state: RunState) -> RunUpdate:
    started = ended - timedelta(minutes=10)
    return RunUpdate(
        source="s",
        pipeline=pipeline,
        run_id=f"{pipeline}-{n}",
        state=state,
        scheduled_for=started,
        queued_at=started - timedelta(seconds=30),
        started_at=started,
        ended_at=ended,
        updated_at=ended,
    )


def ny(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=NY)


# Tue 24: fail 16:25, recover 17:00. Thu 26 (Thanksgiving, NYSE closed): fail 12:00, recover 13:00.
# Sat 28: fail 09:00, recover 10:00. Mon 30 (next ISO week): fail 16:25, still failing at the end.
HISTORY = [
    run("etl", 1, ny(24, 16, 25), RunState.FAILED),
    run("etl", 2, ny(24, 17, 0), RunState.SUCCESS),
    run("etl", 3, ny(26, 12, 0), RunState.FAILED),
    run("etl", 4, ny(26, 13, 0), RunState.SUCCESS),
    run("etl", 5, ny(28, 9, 0), RunState.FAILED),
    run("etl", 6, ny(28, 10, 0), RunState.SUCCESS),
    run("etl", 7, ny(30, 16, 25), RunState.FAILED),
]
START, END = ny(24, 0), ny(30, 20)


def histories(runs: list[RunUpdate]) -> dict[str, SourceHistory]:
    h = SourceHistory("s")
    for r in runs:
        h.add_run(r)
    return {"s": h}


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    loaded, rules = setup(tmp_path_factory.mktemp("bt"))
    out = asyncio.run(replay(loaded.config, rules, histories(HISTORY), START, END))
    return summarize(out, rules, Calendars(), NY)


def test_alerts_and_notifications_per_rule_per_day_and_week(summary: dict) -> None:
    pf = summary["rules"]["PipelineFailed"]
    assert pf["alerts"] == 4
    assert {d: v["alerts"] for d, v in pf["per_day"].items()} == {
        "2026-11-24": 1,
        "2026-11-26": 1,
        "2026-11-28": 1,
        "2026-11-30": 1,
    }
    assert {w: v["alerts"] for w, v in pf["per_week"].items()} == {"2026-W48": 3, "2026-W49": 1}
    # the pager does not want resolutions: 4 pages; slack gets 4 pages of WeekdayFailed and 3 resolutions
    assert summary["receivers"]["pager"]["notifications"] == 4
    assert summary["receivers"]["pager"]["pages"] == 4
    assert summary["receivers"]["slack"]["notifications"] == 7
    assert summary["receivers"]["slack"]["pages"] == 4
    assert summary["receivers"]["slack"]["per_week"] == {
        "2026-W48": {"notifications": 6, "pages": 3},
        "2026-W49": {"notifications": 1, "pages": 1},
    }


def test_notifications_land_on_the_group_timers_of_the_simulated_clock(summary: dict) -> None:
    first = summary["notifications"][0]
    # the failure is seen at the first 15 s poll after 16:25 and flushed group_wait (30 s) later
    assert datetime.fromisoformat(first["at"]) == ny(24, 16, 25, 30)
    resolved = next(n for n in summary["notifications"] if n["resolved"])
    assert resolved["receiver"] == "slack"
    assert resolved["group"] == {"alertname": "WeekdayFailed", "pipeline": "etl"}
    # resolved at 17:00 (on a poll instant); the group last flushed more than group_interval ago: at once
    assert datetime.fromisoformat(resolved["at"]) == ny(24, 17, 0)


def test_pages_on_non_trading_days_use_the_rule_groups_calendar(summary: dict) -> None:
    off = {(o["day"], o["receiver"], o["calendar"]) for o in summary["non_trading_day_pages"]}
    assert off == {
        ("2026-11-26", "pager", "XNYS"),  # Thanksgiving: the exchange is closed
        ("2026-11-28", "pager", "XNYS"),
        ("2026-11-28", "slack", "weekdays"),  # Saturday; but Thursday is a weekday on this calendar
    }
    text = render(summary)
    assert "pages on non-trading days: 3" in text
    assert "2026-11-26 Thu (XNYS)" in text


def test_incidents_open_on_the_first_page_and_close_when_the_group_drains(summary: dict) -> None:
    incs = summary["incidents"]
    assert len(incs) == 8  # 4 failures × 2 receivers
    pager = [i for i in incs if i["receiver"] == "pager"]
    # the pager never hears the resolution, but its incident still closes when the group drains
    assert pager[0]["closed"] is not None and pager[-1]["closed"] is None
    assert "incidents opened: 8" in render(summary)


def test_compare_lists_alerts_that_appear_and_disappear_and_weekly_notifications(tmp_path: Path) -> None:
    loaded, rules = setup(tmp_path)
    (tmp_path / "base.yaml").write_text(RULES.split("  - name: office")[0])
    base = load_rules([tmp_path / "base.yaml"])
    h = histories(HISTORY)
    after = summarize(asyncio.run(replay(loaded.config, rules, h, START, END)), rules, Calendars(), NY)
    before = summarize(asyncio.run(replay(loaded.config, base, h, START, END)), base, Calendars(), NY)
    c = compare(before, after)
    assert c["appear"] == [{"alert": 'WeekdayFailed{pipeline="etl", severity="warning", source="s"}', "times": 4}]
    assert c["disappear"] == []
    assert c["notifications_per_receiver_per_week"]["slack"] == {
        "before": {"2026-W48": 0, "2026-W49": 0, "total": 0},
        "after": {"2026-W48": 6, "2026-W49": 1, "total": 7},
    }
    text = render_compare(c, "base.yaml", "rules.yaml")
    assert "alerts that appear: 1" in text
    assert "slack" in text and "6 → " not in text and "0 → 6" in text


def test_the_command_reads_the_simulator_through_the_adapters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sentinel.cli import main
    from sentinel.clock import FrozenClock
    from sentinel.sim.scenario import investment_world
    from sentinel.sim.server import start_simulator

    end = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    world = investment_world(seed=3, max_runs_per_pipeline=1000)
    for p in world.pipelines.values():
        p.fail_probability = 0.3
    t = end - timedelta(days=7)
    while t <= end:
        world.advance(t)
        t += timedelta(minutes=5)

    async def serve_and_run() -> int:
        sim = await start_simulator(world, FrozenClock(end), tick=3600)
        try:
            setup(tmp_path, url=sim.prefect_url)
            import sentinel.cli_backtest as cb

            real = cb.SystemClock
            cb.SystemClock = lambda: FrozenClock(end)  # type: ignore[assignment, misc]
            try:
                return await asyncio.to_thread(
                    main, ["backtest", "-c", str(tmp_path / "sentinel.yaml"), "--since", "7d", "--json"]
                )
            finally:
                cb.SystemClock = real  # type: ignore[misc]
        finally:
            await sim.stop()

    assert asyncio.run(serve_and_run()) == 0
    out = json.loads(capsys.readouterr().out)
    prefect_runs = [r for r in world.runs.values() if r.system == "prefect" and r.updated_at >= end - timedelta(days=7)]
    assert out["runs"] == len(prefect_runs)
    failed = [r for r in prefect_runs if r.state == RunState.FAILED]
    assert (out["rules"].get("PipelineFailed", {}).get("alerts", 0) > 0) == bool(failed)
    assert set(out) >= {"period", "rules", "receivers", "non_trading_day_pages", "incidents", "notifications"}


def test_skipping_idle_ticks_changes_nothing_a_user_sees(tmp_path: Path) -> None:
    """Time-driven rules (freshness, stuck with `for:`) over a history with gaps: the replay that skips
    ticks the engine would spend on nothing fires and notifies exactly as the one that evaluates them all."""
    from sentinel.clock import FrozenClock
    from sentinel.replay.facts import timeline
    from sentinel.replay.loop import Replay
    from sentinel.replay.notifier import ReplayNotifier
    from sentinel.rules.engine import RuleEngine

    timed = RULES + (
        "  - name: time\n    rules:\n"
        "      - {alert: Stale, when: freshness, max_age: 20h, severity: critical}\n"
        "      - {alert: Stuck, when: stuck, max_wait: 30m, for: 5m, keep_firing_for: 10m}\n"
    )
    loaded, rules = setup(tmp_path, timed)
    stuck = RunUpdate(
        source="s", pipeline="etl", run_id="stuck", state=RunState.QUEUED, queued_at=ny(27, 9), updated_at=ny(27, 9)
    )
    runs = [*HISTORY, stuck.model_copy(update={"pipeline": "other"})]

    async def once(skip: bool) -> tuple[list, list, int]:
        clock = FrozenClock(START)
        engine = RuleEngine(rules, {})
        engine.extras["calendars"] = Calendars()
        notifier = ReplayNotifier.of(loaded.config, clock)
        polls = {"s": timedelta(seconds=15)}
        loop = Replay(
            engine,
            notifier,
            clock,
            evaluation_interval=timedelta(minutes=1),
            poll_intervals=polls,
            skip_idle_ticks=skip,
        )
        await loop.run(timeline(runs, []), START, END)
        return [(f.at, f.labels) for f in loop.fired], [(n.at, n.signature()) for n in notifier.sent], loop.full_ticks

    fired, sent, full = asyncio.run(once(True))
    fired_all, sent_all, full_all = asyncio.run(once(False))
    assert {dict(labels)["alertname"] for _, labels in fired} >= {"Stale", "Stuck", "PipelineFailed"}
    assert (fired, sent) == (fired_all, sent_all)
    assert full < full_all


def test_the_backtests_collector_setting_is_undone_after_it() -> None:
    """`sentinel backtest` runs in-process in tests: the young-generation threshold it raises and the
    objects it freezes must be as they were afterwards."""
    import gc

    from sentinel.gc_tuning import YOUNG_THRESHOLD, tuned_for_batch

    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with tuned_for_batch():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    gc.freeze()  # as the daemon's own tuning leaves it: that freeze is not the command's to undo
    try:
        with tuned_for_batch():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert gc.get_threshold() == before and gc.get_freeze_count() > 0  # not thawed
    gc.unfreeze()
