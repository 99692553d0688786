"""Pipeline KPIs as a Prometheus scrape shows them: success ratio by day window, freshness that ages between
polls, the recovery-time histogram (MTTR input), paused, and counters that continue across a restart."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.clock import FrozenClock
from sentinel.config import Config, load_config
from sentinel.daemon import Daemon
from sentinel.model import PipelineInfo, PipelineKey, PollResult, RunState, RunUpdate, SourceHealth, TaskUpdate
from sentinel.notify.base import Integration

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)

CONFIG = """\
rule_files: [rules.yaml]
receivers: [{name: r, console: true}]
route: {receiver: r, group_wait: 30s}
store: {path: state.db}
cost:
  monthly_budget: 100
  rates:
    - {source: af, pool: gpu, per_task_hour: 10}
    - {per_task_hour: 1, per_run: 0.5}
"""

RULES = """\
groups:
  - name: g
    pipelines: {pipeline: "daily_*"}
    rules:
      - alert: DailyLate
        when: deadline
        deadline: "12:00"
      - alert: Spend
        when: budget
        of: forecast
        share: 0.9
  - name: flaps
    pipelines: {pipeline: "flap_*"}
    rules:
      - alert: Failed
        when: failed
"""


def _no_receivers(config: Config) -> dict[str, list[Integration]]:
    return {r.name: [] for r in config.receivers}


def make(tmp: Path, clock: FrozenClock) -> Daemon:
    (tmp / "rules.yaml").write_text(RULES)
    (tmp / "sentinel.yaml").write_text(CONFIG)
    return Daemon(load_config(tmp / "sentinel.yaml"), clock=clock, serve_http=False, integrations=_no_receivers)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


_ids = itertools.count()


def run(state: RunState, ended: datetime, pipeline: str = "p", minutes: int = 10, **kw: object) -> RunUpdate:
    start = ended - timedelta(minutes=minutes)
    return RunUpdate(
        source="af",
        pipeline=pipeline,
        run_id=f"r{next(_ids)}",
        state=state,
        scheduled_for=kw.pop("scheduled_for", start),  # type: ignore[arg-type]
        started_at=start,
        ended_at=ended,
        updated_at=ended,
        **kw,  # type: ignore[arg-type]
    )


def poll(
    *runs: RunUpdate, tasks: tuple[TaskUpdate, ...] = (), pipelines: tuple[PipelineInfo, ...] | None = None
) -> PollResult:
    return PollResult(
        source="af",
        health=SourceHealth(source="af", reachable=True, observed_at=NOW),
        runs=runs,
        tasks=tasks,
        pipelines=pipelines,
    )


Scrape = Callable[[str], dict[frozenset[tuple[str, str]], float]]


def scrape(d: Daemon) -> Scrape:
    samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for fam in text_string_to_metric_families(d.metrics.render().decode()):
        for s in fam.samples:
            samples.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return lambda name: samples.get(name, {})


def one(values: dict[frozenset[tuple[str, str]], float], **labels: str) -> float | None:
    want = set(labels.items())
    hits = [v for k, v in values.items() if want <= set(k)]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


async def started(tmp: Path, clock: FrozenClock) -> Daemon:
    d = make(tmp, clock)
    await d.start()
    return d


async def test_success_ratio_windows_and_freshness_between_polls(tmp_path: Path) -> None:
    clock = FrozenClock(NOW)
    d = await started(tmp_path, clock)
    try:
        await d.handle_result(
            poll(
                run(RunState.SUCCESS, at(26, 9)),
                run(RunState.SUCCESS, at(26, 10)),
                run(RunState.FAILED, at(26, 11)),
                run(RunState.SUCCESS, at(26, 14, 30)),
                run(RunState.CANCELLED, at(26, 14, 40)),  # neither success nor failure: not in the ratio
                run(RunState.FAILED, at(21, 3)),
                run(RunState.CRASHED, at(21, 4)),
                run(RunState.SUCCESS, at(1, 12)),
                run(RunState.SUCCESS, at(1, 13)),
                run(RunState.FAILED, datetime(2026, 10, 20, 12, tzinfo=UTC)),  # 37 days ago: outside every window
            )
        )
        m = scrape(d)
        ratio = m("sentinel_pipeline_success_ratio")
        assert one(ratio, pipeline="p", window="1d") == pytest.approx(3 / 4)
        assert one(ratio, pipeline="p", window="7d") == pytest.approx(3 / 6)
        assert one(ratio, pipeline="p", window="30d") == pytest.approx(5 / 8)
        assert one(m("sentinel_pipeline_runs_total"), pipeline="p", state="success") == 5
        assert one(m("sentinel_pipeline_runs_total"), pipeline="p", state="failed") == 3
        assert one(m("sentinel_pipeline_runs_total"), pipeline="p", state="cancelled") == 1
        assert one(m("sentinel_pipeline_last_success_timestamp_seconds"), pipeline="p") == at(26, 14, 30).timestamp()
        assert one(m("sentinel_pipeline_freshness_seconds"), pipeline="p") == 30 * 60
        assert one(m("sentinel_pipeline_run_duration_seconds_count"), pipeline="p") == 10
        # Memory stays bounded: day tallies older than 31 days are dropped.
        days = d.kpis.pipelines.tallies[PipelineKey("af", "p")].days.days
        assert min(days) > NOW.date().toordinal() - 31

        # No poll in between: the scrape itself sees the data age, and the day windows roll at midnight.
        clock.advance(timedelta(hours=10))  # 2026-11-27 01:00
        m = scrape(d)
        assert one(m("sentinel_pipeline_freshness_seconds"), pipeline="p") == 10.5 * 3600
        ratio = m("sentinel_pipeline_success_ratio")
        assert one(ratio, pipeline="p", window="1d") is None  # nothing ended on the 27th yet: no ratio, not 0
        assert one(ratio, pipeline="p", window="7d") == pytest.approx(3 / 6)
    finally:
        await d.stop()


async def test_recovery_histogram_measures_first_failure_to_next_success(tmp_path: Path) -> None:
    d = await started(tmp_path, FrozenClock(NOW))
    try:
        await d.handle_result(poll(run(RunState.FAILED, at(26, 10))))
        await d.handle_result(poll(run(RunState.FAILED, at(26, 10, 30))))  # still the same outage
        await d.handle_result(poll(run(RunState.SUCCESS, at(26, 11, 15))))
        await d.handle_result(poll(run(RunState.SUCCESS, at(26, 12))))  # no outage to close
        m = scrape(d)
        assert one(m("sentinel_pipeline_recovery_seconds_count"), pipeline="p") == 1
        assert one(m("sentinel_pipeline_recovery_seconds_sum"), pipeline="p") == 75 * 60
        assert one(m("sentinel_pipeline_recovery_seconds_bucket"), pipeline="p", le="3600.0") == 0
        assert one(m("sentinel_pipeline_recovery_seconds_bucket"), pipeline="p", le="7200.0") == 1
    finally:
        await d.stop()


async def test_paused_follows_the_schedulers_flag(tmp_path: Path) -> None:
    d = await started(tmp_path, FrozenClock(NOW))
    try:
        infos = (
            PipelineInfo(source="af", pipeline="p", paused=True),
            PipelineInfo(source="af", pipeline="q", paused=False),
        )
        await d.handle_result(poll(pipelines=infos))
        m = scrape(d)
        assert one(m("sentinel_pipeline_paused"), pipeline="p") == 1
        assert one(m("sentinel_pipeline_paused"), pipeline="q") == 0
        await d.handle_result(poll(pipelines=(PipelineInfo(source="af", pipeline="p", paused=False), infos[1])))
        assert one(scrape(d)("sentinel_pipeline_paused"), pipeline="p") == 0
    finally:
        await d.stop()


async def test_counters_continue_across_a_restart(tmp_path: Path) -> None:
    clock = FrozenClock(NOW)
    d = await started(tmp_path, clock)
    try:
        await d.handle_result(
            poll(
                run(RunState.SUCCESS, at(26, 9)),
                run(RunState.SUCCESS, at(25, 9)),
                run(RunState.FAILED, at(26, 13)),  # an outage still open at shutdown
            )
        )
    finally:
        await d.stop()
    before = scrape(d)

    clock.advance(timedelta(minutes=30))
    d2 = await started(tmp_path, clock)
    try:
        m = scrape(d2)
        for name in ("sentinel_pipeline_runs_total", "sentinel_pipeline_success_ratio"):
            assert m(name) == before(name), name
        assert one(m("sentinel_pipeline_last_success_timestamp_seconds"), pipeline="p") == at(26, 9).timestamp()
        # The same runs re-read after the restart are not counted again; a new one is counted on top.
        await d2.handle_result(poll(run(RunState.SUCCESS, at(26, 14))))
        m = scrape(d2)
        assert one(m("sentinel_pipeline_runs_total"), pipeline="p", state="success") == 3
        assert one(m("sentinel_pipeline_runs_total"), pipeline="p", state="failed") == 1
        # The outage that began before the restart closes after it.
        assert one(m("sentinel_pipeline_recovery_seconds_sum"), pipeline="p") == 3600
        assert one(m("sentinel_pipeline_success_ratio"), pipeline="p", window="1d") == pytest.approx(2 / 3)
    finally:
        await d2.stop()


async def test_rendered_page_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (tests/run.sh does)"
    clock = FrozenClock(NOW)
    d = await started(tmp_path, clock)
    try:
        ok = run(RunState.SUCCESS, at(26, 11), pipeline="daily_prices", scheduled_for=at(26, 0))
        task = TaskUpdate(
            source="af",
            pipeline="daily_prices",
            run_id=ok.run_id,
            task="load",
            state=RunState.SUCCESS,
            started_at=at(26, 10),
            ended_at=at(26, 11),
            pool="gpu",
        )
        await d.handle_result(poll(run(RunState.FAILED, at(26, 9), pipeline="daily_prices"), ok, tasks=(task,)))
        await d.handle_result(poll(pipelines=(PipelineInfo(source="af", pipeline="daily_prices"),)))
        await d.evaluate()
        d.metrics.acknowledged(1)
        page = (await d.metrics.render_async()).decode()
    finally:
        await d.stop()
    names = {fam.name for fam in text_string_to_metric_families(page) if fam.samples}
    assert {
        "sentinel_pipeline_runs",
        "sentinel_pipeline_success_ratio",
        "sentinel_pipeline_freshness_seconds",
        "sentinel_pipeline_recovery_seconds",
        "sentinel_sla_met",
        "sentinel_sla_compliance_ratio",
        "sentinel_cost_dollars",
        "sentinel_cost_month_forecast_dollars",
        "sentinel_cost_budget_dollars",
        "sentinel_acknowledgements",
    } <= names
    out = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == "", out.stdout + out.stderr


async def test_alerts_resolved_within_group_wait_count_as_noise_unless_acknowledged(tmp_path: Path) -> None:
    clock = FrozenClock(NOW)
    d = await started(tmp_path, clock)

    async def flap(pipeline: str, lasting: timedelta, ack: bool = False) -> None:
        await d.handle_result(poll(run(RunState.FAILED, clock.now(), pipeline=pipeline)))
        await d.evaluate()
        if ack:
            fps = [i.fingerprint for i in d.engine.instance_list() if dict(i.labels).get("pipeline") == pipeline]
            d.metrics.acknowledged(len(fps), fps)
        clock.advance(lasting)
        await d.handle_result(poll(run(RunState.SUCCESS, clock.now(), pipeline=pipeline)))
        await d.evaluate()

    try:
        await flap("flap_a", timedelta(seconds=10))  # fired and resolved inside group_wait (30s): noise
        await flap("flap_b", timedelta(minutes=5))  # a real outage
        await flap("flap_c", timedelta(seconds=10), ack=True)  # someone looked at it: not noise
        for _ in range(3):  # later evaluations do not count a resolution again
            clock.advance(timedelta(seconds=15))
            await d.evaluate()
        m = scrape(d)
        assert one(m("sentinel_alerts_resolved_total")) == 3
        assert one(m("sentinel_alerts_resolved_unacked_fast_total")) == 1
        assert one(m("sentinel_acknowledgements_total")) == 1
    finally:
        await d.stop()
