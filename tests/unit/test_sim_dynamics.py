"""The simulator's world moves like Airflow and Prefect do: on schedule, observably, reproducibly, cheaply."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web

from sentinel.clock import FrozenClock
from sentinel.model import RunState
from sentinel.sim import dynamics
from sentinel.sim.dynamics import (
    fail_next_run,
    inject_failure,
    next_due,
    set_api_up,
    set_paused,
    set_worker_online,
    trigger_run,
)
from sentinel.sim.scenario import (
    DEMO_SPEED,
    DEMO_START,
    EOD_REPORTING,
    MARKET_DATA_INGEST,
    PORTFOLIO_RISK,
    investment_world,
)
from sentinel.sim.simclock import SimClock
from sentinel.sim.world import SimPipeline, SimRun, System, World

NY = ZoneInfo("America/New_York")
START = datetime(2026, 11, 25, 13, 0, tzinfo=NY)  # a Wednesday


def pipeline(name: str = "p", system: System = "airflow", schedule: str = "* * * * *", **kw: object) -> SimPipeline:
    kw.setdefault("tasks", ("extract", "transform", "load"))
    kw.setdefault("mean_task_seconds", 5.0)
    return SimPipeline(name=name, system=system, schedule=schedule, **kw)  # type: ignore[arg-type]


def world_of(*pipelines: SimPipeline, seed: int = 1, max_runs: int = 1000) -> World:
    world = World(max_runs_per_pipeline=max_runs, seed=seed)
    for p in pipelines:
        world.add_pipeline(p)
        if p.system == "prefect":
            world.health.workers_online[p.work_pool] = True
    return world


def run_for(world: World, clock: FrozenClock, seconds: float, step: float = 1.0) -> None:
    """Advance like the server does: small real steps of sim time, starting with a registering advance."""
    end = clock.now() + timedelta(seconds=seconds)
    world.advance(clock.now())
    while clock.now() < end:
        clock.advance(min(step, (end - clock.now()).total_seconds()))
        world.advance(clock.now())


def record_touches(world: World) -> list[tuple[str, RunState, tuple[RunState, ...]]]:
    """Spy on World.touch: (run id, run state, task states) at every mutation, in order."""
    seen: list[tuple[str, RunState, tuple[RunState, ...]]] = []
    original = world.touch

    def spy(run: SimRun, now: datetime) -> None:
        seen.append((run.id, run.state, tuple(t.state for t in run.tasks)))
        original(run, now)

    world.touch = spy  # type: ignore[method-assign]
    return seen


def states_of(seen: list[tuple[str, RunState, tuple[RunState, ...]]], run_id: str) -> list[RunState]:
    out: list[RunState] = []
    for rid, state, _ in seen:
        if rid == run_id and (not out or out[-1] != state):
            out.append(state)
    return out


def snapshot(world: World) -> dict[str, str]:
    return {run_id: repr(run) for run_id, run in world.runs.items()}


# ------------------------------------------------------------------------------------------- schedules


def test_weekday_schedule_keeps_new_york_wall_time_across_the_end_of_dst() -> None:
    world = world_of(pipeline("market_data_ingest", schedule="20 16 * * 1-5", timezone="America/New_York"))
    clock = FrozenClock(datetime(2026, 10, 29, 12, 0, tzinfo=NY))  # Thursday; DST ends Sunday Nov 1
    run_for(world, clock, (datetime(2026, 11, 3, 18, 0, tzinfo=NY) - clock.now()).total_seconds(), step=60)

    runs = world.runs_of("market_data_ingest")
    local = [r.scheduled_for.astimezone(NY) for r in runs]
    assert [d.date().isoformat() for d in local] == ["2026-10-29", "2026-10-30", "2026-11-02", "2026-11-03"]
    assert {(d.hour, d.minute) for d in local} == {(16, 20)}
    assert [r.scheduled_for.astimezone(UTC).hour for r in runs] == [20, 20, 21, 21]  # EDT, then EST
    assert all(r.state is RunState.SUCCESS for r in runs)


def test_a_long_jump_creates_only_the_latest_missed_tick_like_catchup_false() -> None:
    world = world_of(pipeline(schedule="*/5 * * * *", timezone="UTC"))
    clock = FrozenClock(datetime(2026, 11, 25, 12, 1, tzinfo=UTC))
    world.advance(clock.now())
    world.advance(clock.advance(timedelta(hours=1)))  # 12 ticks passed unseen

    assert [r.scheduled_for for r in world.runs_of("p")] == [datetime(2026, 11, 25, 13, 0, tzinfo=UTC)]
    assert next_due(world, "p") == datetime(2026, 11, 25, 13, 5, tzinfo=UTC)
    run_for(world, clock, 10 * 60)
    assert len(world.runs_of("p")) == 3


def test_paused_pipeline_creates_no_runs_and_resumes_at_the_next_tick() -> None:
    world = world_of(pipeline(paused=True))
    clock = FrozenClock(START)
    run_for(world, clock, 30 * 60, step=5)
    assert world.runs == {}

    set_paused(world, "p", False)
    run_for(world, clock, 150, step=5)
    runs = world.runs_of("p")
    assert len(runs) == 2  # the two ticks after unpausing; none of the thirty missed ones
    assert all(r.scheduled_for > START + timedelta(minutes=30) for r in runs)


# ---------------------------------------------------------------------------------------- progression


def test_airflow_run_is_queued_then_runs_its_tasks_one_after_another_to_success() -> None:
    world = world_of(pipeline(schedule="0 14 * * *"))
    seen = record_touches(world)
    run_for(world, FrozenClock(START), 75 * 60, step=7)

    (run,) = world.runs_of("p")
    assert states_of(seen, run.id) == [RunState.QUEUED, RunState.RUNNING, RunState.SUCCESS]
    assert run.run_type == "scheduled" and run.id.startswith("scheduled__2026-11-25T19:00:00+00:00")
    assert run.queued_at == run.scheduled_for < run.started_at < run.ended_at  # type: ignore[operator]
    assert [t.task for t in run.tasks] == ["extract", "transform", "load"]
    assert all(t.state is RunState.SUCCESS and t.try_number == 1 for t in run.tasks)
    for before, after in zip(run.tasks, run.tasks[1:], strict=False):
        assert before.ended_at <= after.started_at  # type: ignore[operator]
    # Airflow shows every task instance from the start, unstarted ones as scheduled.
    assert seen[0][2] == (RunState.SCHEDULED,) * 3


def test_prefect_run_is_picked_up_by_a_worker_and_creates_task_runs_as_it_goes() -> None:
    world = world_of(pipeline(system="prefect", schedule="0 14 * * *", work_pool="risk-pool"))
    seen = record_touches(world)
    run_for(world, FrozenClock(START), 75 * 60, step=7)

    (run,) = world.runs_of("p")
    assert states_of(seen, run.id) == [RunState.SCHEDULED, RunState.QUEUED, RunState.RUNNING, RunState.SUCCESS]
    assert run.started_at - run.scheduled_for < dynamics.LATE_AFTER  # type: ignore[operator]
    assert next(len(tasks) for _, state, tasks in seen if state is RunState.RUNNING) == 0
    assert [t.task for t in run.tasks] == ["extract", "transform", "load"]
    assert all(t.id and t.pool == "risk-pool" for t in run.tasks)


def test_task_durations_follow_the_mean_and_slow_runs_take_three_to_five_times_longer() -> None:
    world = world_of(pipeline(tasks=("only",), mean_task_seconds=20.0, slow_probability=0.2))
    run_for(world, FrozenClock(START), 300 * 60, step=10)

    finished = [r.tasks[0] for r in world.runs_of("p") if r.state.terminal]
    seconds = [(t.ended_at - t.started_at).total_seconds() for t in finished]  # type: ignore[operator]
    normal = [s for s in seconds if s < 2.4 * 20]
    slow = [s for s in seconds if s >= 2.4 * 20]
    print(f"\n{len(seconds)} runs: {len(slow)} slow, normal mean {statistics.mean(normal):.1f}s")
    assert 15 <= statistics.mean(normal) <= 25
    assert 0.1 <= len(slow) / len(seconds) <= 0.3
    assert all(2.4 * 20 <= s <= 5 * 20 * 2 for s in slow)


def test_failures_occur_at_the_configured_rate_and_fail_the_run_at_one_task() -> None:
    world = world_of(pipeline(fail_probability=0.25, retries=0))
    run_for(world, FrozenClock(START), 400 * 60, step=10)

    runs = [r for r in world.runs_of("p") if r.state.terminal]
    failed = [r for r in runs if r.state is RunState.FAILED]
    print(f"\n{len(failed)} of {len(runs)} runs failed (p=0.25)")
    assert len(runs) >= 398
    assert 0.25 * len(runs) - 35 <= len(failed) <= 0.25 * len(runs) + 35  # 4 sigma
    for run in failed:
        states = [t.state for t in run.tasks]
        i = states.index(RunState.FAILED)
        assert states == [RunState.SUCCESS] * i + [RunState.FAILED] + [RunState.SKIPPED] * (len(states) - i - 1)
        assert run.message and run.tasks[i].task in run.message and run.ended_at == run.tasks[i].ended_at


def test_flaky_tasks_retry_and_a_failing_task_uses_up_its_retries() -> None:
    world = world_of(
        pipeline("flaky", schedule="1 13 * * *", retry_probability=1.0, retries=1, retry_delay_seconds=5),
        pipeline("broken", schedule="1 13 * * *", tasks=("only",), retries=2, retry_delay_seconds=5),
    )
    seen = record_touches(world)
    fail_next_run(world, "broken")
    run_for(world, FrozenClock(START), 240, step=3)

    (flaky,) = world.runs_of("flaky")
    assert flaky.state is RunState.SUCCESS and all(t.try_number == 2 for t in flaky.tasks)
    assert any(RunState.RETRYING in tasks for rid, _, tasks in seen if rid == flaky.id)
    (broken,) = world.runs_of("broken")
    assert broken.state is RunState.FAILED and broken.tasks[0].try_number == 3 and broken.tasks[0].max_tries == 2


# ------------------------------------------------------------------------------------- observability


def test_every_mutation_shows_up_in_the_change_feed_in_order() -> None:
    world = world_of(
        pipeline("af", fail_probability=0.2, retry_probability=0.3, retry_delay_seconds=20, slow_probability=0.2),
        pipeline("pf", system="prefect", schedule="*/2 * * * *", fail_probability=0.2, retry_probability=0.3),
        max_runs=10,
    )
    clock = FrozenClock(START)
    world.advance(clock.now())
    mirror: dict[str, tuple[RunState, datetime, str]] = {}  # what an adapter polling with a cursor knows
    observed: set[RunState] = set()
    cursors: dict[System, datetime | None] = {"airflow": None, "prefect": None}
    for step in range(1500):
        if step == 500:
            set_worker_online(world, "default", False)  # some Prefect runs go Late, then resume
        if step == 700:
            set_worker_online(world, "default", True)
        before, since = snapshot(world), clock.now()
        world.advance(clock.advance(3))
        changed = {r.id for system in ("airflow", "prefect") for r in world.changed_since(system, since)}
        for run_id, text in snapshot(world).items():
            if before.get(run_id) != text:
                assert run_id in changed, f"{run_id} changed without a touch"
        for system in ("airflow", "prefect"):
            feed = world.changed_since(system, cursors[system])
            assert [(r.updated_at, r.seq) for r in feed] == sorted((r.updated_at, r.seq) for r in feed)
            for r in feed:
                assert all(t.updated_at is None or t.updated_at <= r.updated_at for t in r.tasks)
                mirror[r.id] = (r.state, r.updated_at, repr(r))
                observed.update([r.state, *(t.state for t in r.tasks)])
            cursors[system] = feed[-1].updated_at if feed else cursors[system]
    assert {rid: (r.state, r.updated_at, repr(r)) for rid, r in world.runs.items()} == {
        rid: mirror[rid] for rid in world.runs
    }
    assert {RunState.LATE, RunState.FAILED, RunState.RETRYING, RunState.SUCCESS} <= observed


def test_history_stays_bounded_and_the_change_feed_is_compacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamics, "_COMPACT_MIN_TOUCHES", 200)
    world = world_of(pipeline(), pipeline("pf", system="prefect"), max_runs=5)
    compactions = 0
    original = world.compact

    def counting_compact() -> None:
        nonlocal compactions
        compactions += 1
        original()

    world.compact = counting_compact  # type: ignore[method-assign]
    clock = FrozenClock(START)
    world.advance(clock.now())
    for _ in range(180 * 6):
        world.advance(clock.advance(10))
        assert len(world.runs_of("p")) <= 5 and len(world.runs_of("pf")) <= 5
    assert len(world.runs) == 10
    assert compactions > 0
    assert all(len(feed) <= 1000 for feed in world._changes.values())
    oldest_kept = min(r.scheduled_for for r in world.runs_of("p"))
    assert oldest_kept >= clock.now() - timedelta(minutes=6)  # the oldest finished runs went first


def test_prefect_run_turns_late_when_its_pool_has_no_worker_and_runs_once_one_returns() -> None:
    world = world_of(pipeline(system="prefect", schedule="0 14 * * *", work_pool="risk-pool"))
    set_worker_online(world, "risk-pool", False)
    seen = record_touches(world)
    clock = FrozenClock(datetime(2026, 11, 25, 13, 59, tzinfo=NY))
    run_for(world, clock, 60 + 14, step=1)
    (run,) = world.runs_of("p")
    assert run.state is RunState.SCHEDULED

    run_for(world, clock, 2, step=1)
    assert run.state is RunState.LATE and run.queued_at is None

    run_for(world, clock, 10 * 60, step=5)
    assert run.state is RunState.LATE  # still no worker: stays Late, no tasks
    set_worker_online(world, "risk-pool", True)
    run_for(world, clock, 5 * 60, step=5)
    assert states_of(seen, run.id) == [
        RunState.SCHEDULED,
        RunState.LATE,
        RunState.QUEUED,
        RunState.RUNNING,
        RunState.SUCCESS,
    ]


# ------------------------------------------------------------------------------------------ determinism


def mixed_world(seed: int) -> World:
    return world_of(
        pipeline("af", schedule="*/5 * * * *", fail_probability=0.2, slow_probability=0.2, retry_probability=0.3),
        pipeline("af2", schedule="*/5 * * * *", fail_probability=0.2, retry_probability=0.3),
        pipeline("pf", system="prefect", schedule="1-59/3 * * * *", fail_probability=0.1, retry_probability=0.2),
        seed=seed,
    )


def outcome(seed: int, step: float) -> dict[str, str]:
    world = mixed_world(seed)
    run_for(world, FrozenClock(START), 2 * 3600, step=step)
    return snapshot(world)


def test_same_seed_gives_the_same_world_however_often_it_is_advanced() -> None:
    fine = outcome(seed=3, step=1)
    assert len(fine) > 80
    assert outcome(seed=3, step=1) == fine
    assert outcome(seed=3, step=13) == fine  # outcomes are keyed by run, not by call count
    assert outcome(seed=4, step=1) != fine


def test_airflow_run_ids_stay_unique_when_dags_share_a_tick() -> None:
    world = world_of(*(pipeline(f"dag_{i}", schedule="0 14 * * *") for i in range(50)))
    run_for(world, FrozenClock(START), 3600 + 1, step=30)
    assert len(world.runs) == 50
    assert all(r.id.startswith("scheduled__2026-11-25T19:00:00+00:00_") for r in world.runs.values())


# -------------------------------------------------------------------------------------------- helpers


def test_inject_failure_fails_the_active_run_now_or_else_the_next_one() -> None:
    world = world_of(pipeline(mean_task_seconds=60.0, retries=0))
    clock = FrozenClock(START)
    run_for(world, clock, 60 + 30)  # the 13:01 run is in its first (one-minute) task
    active = world.runs_of("p")[-1]
    assert active.state is RunState.RUNNING

    clock.advance(3)
    failed = inject_failure(world, "p", clock.now())
    assert failed is active and active.state is RunState.FAILED and active.ended_at == clock.now()
    assert [t.state for t in active.tasks] == [RunState.FAILED, RunState.SKIPPED, RunState.SKIPPED]
    assert world.changed_since("airflow", clock.now()) == [active]

    run_for(world, clock, 20)  # 13:01:53, before the 13:02 tick: nothing active
    assert inject_failure(world, "p", clock.now()) is None
    run_for(world, clock, 90)
    assert world.runs_of("p")[1].state is RunState.FAILED
    assert world.runs_of("p")[1].tasks[0].state is RunState.FAILED


def test_trigger_run_starts_a_manual_run_that_lives_like_the_others() -> None:
    world = world_of(pipeline(system="prefect", schedule="0 3 * * *"))
    clock = FrozenClock(START)
    world.advance(clock.now())
    clock.advance(5)
    run = trigger_run(world, "p", clock.now())
    assert run.run_type == "manual" and run.scheduled_for == clock.now() and run.state is RunState.SCHEDULED
    run_for(world, clock, 120)
    assert run.state is RunState.SUCCESS


def test_set_api_up_takes_the_api_down_and_back() -> None:
    world = world_of(pipeline())
    set_api_up(world, False)
    assert world.health.api_up is False
    set_api_up(world, True)
    assert world.health.api_up is True


# ------------------------------------------------------------------------------------------- scenario


def test_investment_world_wires_the_three_pipelines() -> None:
    world = investment_world()
    market, risk, eod = (world.pipelines[n] for n in (MARKET_DATA_INGEST, PORTFOLIO_RISK, EOD_REPORTING))
    assert (market.system, market.tasks, market.tags[0]) == (
        "airflow",
        ("fetch_prices", "validate", "publish"),
        "market-data",
    )
    assert (risk.system, risk.work_pool, risk.upstreams) == ("prefect", "risk-pool", (MARKET_DATA_INGEST,))
    assert (eod.system, eod.upstreams) == ("airflow", (PORTFOLIO_RISK,))
    assert world.health.workers_online == {"risk-pool": True}

    clock = FrozenClock(START)
    run_for(world, clock, 5 * 3600, step=30)
    local = {r.pipeline: r.scheduled_for.astimezone(NY).strftime("%H:%M") for r in world.runs.values()}
    assert local == {MARKET_DATA_INGEST: "16:20", PORTFOLIO_RISK: "17:00", EOD_REPORTING: "17:45"}


def test_demo_world_shows_a_market_data_failure_within_seconds_at_demo_speed() -> None:
    world = investment_world(demo=True)
    clock = FrozenClock(DEMO_START)
    run_for(world, clock, 10 * 60, step=0.2 * DEMO_SPEED)  # the server's default tick at demo speed

    seeded, *runs = world.runs_of(MARKET_DATA_INGEST)
    assert seeded.scheduled_for < DEMO_START and seeded.state is RunState.SUCCESS  # yesterday's session ran
    first, second = runs[:2]
    assert first.state is RunState.SUCCESS and second.state is RunState.FAILED
    real_seconds = (second.ended_at - DEMO_START).total_seconds() / DEMO_SPEED  # type: ignore[operator]
    print(f"\ndemo: market_data_ingest fails {real_seconds:.1f} real seconds in")
    assert real_seconds < 10
    assert {r.pipeline for r in world.runs.values() if r.state is RunState.SUCCESS} == {
        MARKET_DATA_INGEST,
        PORTFOLIO_RISK,
        EOD_REPORTING,
    }


def test_synthetic_pipelines_are_split_between_airflow_and_prefect_with_online_workers() -> None:
    world = investment_world(synthetic=100)
    synthetic = [p for p in world.pipelines.values() if "synthetic" in p.tags]
    assert len(synthetic) == 100
    assert sum(p.system == "airflow" for p in synthetic) == 50
    pools = {p.work_pool for p in world.pipelines.values() if p.system == "prefect"}
    assert all(world.health.workers_online[pool] for pool in pools)
    clock = FrozenClock(START)
    run_for(world, clock, 3600, step=10)
    assert len({r.pipeline for r in world.runs.values()}) > 80
    assert not any(r.state is RunState.LATE for r in world.runs.values())


def test_cost_of_advancing_ten_thousand_pipelines() -> None:
    """Prints timings only: the numbers depend on the machine, the assertions only on behaviour."""
    world = investment_world(synthetic=10_000)
    clock = FrozenClock(START)
    lines = [f"\n{len(world.pipelines)} pipelines"]
    lines.append(f"first advance (registers schedules): {timed(lambda: world.advance(clock.now())):.3f}s")
    lines.append(f"warm-up, 10 sim-minutes: {timed(lambda: steps(world, clock, 60, 10)):.3f}s")
    lines.append(f"60 sim-seconds in 1 s steps: {timed(lambda: steps(world, clock, 60, 1)):.3f}s")
    lines.append(f"60 sim-seconds in 12 s steps: {timed(lambda: steps(world, clock, 5, 12)):.3f}s")
    lines.append(f"1 sim-second: {timed(lambda: steps(world, clock, 1, 1)) * 1000:.1f}ms")
    lines.append(f"runs {len(world.runs)}, active {len(world.dynamics.active)}")  # type: ignore[union-attr]
    print("\n  ".join(lines))
    assert len(world.runs) > 5000


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def steps(world: World, clock: FrozenClock, n: int, seconds: float) -> None:
    for _ in range(n):
        world.advance(clock.advance(seconds))


# ------------------------------------------------------------------------------------------- SimClock


def test_sim_clock_runs_speed_times_faster_from_its_start() -> None:
    real = [1000.0]
    clock = SimClock(datetime(2026, 11, 25, 13, 0, tzinfo=NY), speed=60, real=lambda: real[0])
    assert clock.now() == datetime(2026, 11, 25, 18, 0, tzinfo=UTC) and clock.now().tzinfo is UTC
    assert clock.monotonic() == 0.0

    real[0] += 10
    assert clock.now() == datetime(2026, 11, 25, 18, 10, tzinfo=UTC)
    assert clock.monotonic() == 600.0
    assert clock.real_seconds(60) == 1.0

    clock.set_speed(1)
    real[0] += 10
    assert clock.now() == datetime(2026, 11, 25, 18, 10, 10, tzinfo=UTC)
    assert clock.monotonic() == 610.0


def test_sim_clock_rejects_naive_start_and_bad_speed() -> None:
    with pytest.raises(ValueError):
        SimClock(datetime(2026, 11, 25, 13, 0))
    with pytest.raises(ValueError):
        SimClock(START, speed=0)


# --------------------------------------------------------------------------------------------- server


@pytest.fixture
def stub_faces(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stand-ins for the API faces, so the server's mounting and ticking are tested on their own."""

    def face(route: str) -> Callable[[World, object], web.Application]:
        def make(world: World, clock: object) -> web.Application:
            async def handler(request: web.Request) -> web.Response:
                return web.json_response({"runs": len(world.runs)})

            app = web.Application()
            app.router.add_get(route, handler)
            return app

        return make

    for module, attr, route in (
        ("sentinel.sim.airflow_api", "airflow_app", "/api/v2/monitor/health"),
        ("sentinel.sim.prefect_api", "prefect_app", "/api/health"),
    ):
        stub = types.ModuleType(module)
        setattr(stub, attr, face(route))
        monkeypatch.setitem(sys.modules, module, stub)
    yield


@pytest.mark.usefixtures("stub_faces")
async def test_simulator_serves_both_faces_and_keeps_the_world_moving() -> None:
    from sentinel.sim.server import start_simulator

    world = world_of(pipeline(), pipeline("pf", system="prefect"))
    clock = FrozenClock(START)
    server = await start_simulator(world, clock, tick=0.01)
    try:
        assert server.airflow_url.endswith("/airflow") and server.prefect_url.endswith("/prefect/api")
        clock.advance(150)  # one jump past two ticks: catch-up creates the latest one only
        for _ in range(200):
            if len(world.runs) >= 2:
                break
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.airflow_url}/api/v2/monitor/health") as resp:
                assert resp.status == 200 and (await resp.json())["runs"] == 2
            async with http.get(f"{server.prefect_url}/health") as resp:
                assert resp.status == 200
    finally:
        await server.stop()
    assert server._ticker.done()
