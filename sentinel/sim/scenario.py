"""Ready-made worlds: the three investment pipelines of the demo, plus synthetic load for benchmarks."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sentinel.model import RunState
from sentinel.sim.dynamics import fail_next_run
from sentinel.sim.world import SimPipeline, SimRun, SimTask, World

__all__ = [
    "DEMO_SPEED",
    "DEMO_START",
    "EOD_REPORTING",
    "MARKET_DATA_INGEST",
    "PORTFOLIO_RISK",
    "investment_world",
]

NEW_YORK = "America/New_York"
# A regular NYSE session (the day before Thanksgiving), a few hours before the close.
DEMO_START = datetime(2026, 11, 25, 13, 0, tzinfo=ZoneInfo(NEW_YORK))
DEMO_SPEED = 60.0  # one simulated minute per real second

MARKET_DATA_INGEST = "market_data_ingest"
PORTFOLIO_RISK = "portfolio_risk/daily"  # Prefect pipelines are named flow/deployment
EOD_REPORTING = "eod_reporting"
RISK_POOL = "risk-pool"


def investment_world(
    seed: int = 7,
    synthetic: int = 0,
    *,
    demo: bool = False,
    max_runs_per_pipeline: int = 200,
) -> World:
    """market_data_ingest (Airflow) → portfolio_risk/daily (Prefect) → eod_reporting (Airflow).

    Normally they run once per weekday after the New York close. With `demo=True` each runs every three
    simulated minutes (staggered by one) with short tasks, and market_data_ingest's second run fails, so at
    DEMO_SPEED a failure shows within seconds. `synthetic` adds that many extra pipelines for benchmarks.
    """
    world = World(max_runs_per_pipeline=max_runs_per_pipeline, seed=seed)
    for pipeline in _investment_pipelines(demo):
        world.add_pipeline(pipeline)
    for pipeline in _synthetic_pipelines(synthetic, random.Random(f"{seed}|synthetic")):
        world.add_pipeline(pipeline)
    for pipeline in world.pipelines.values():
        if pipeline.system == "prefect":
            world.health.workers_online[pipeline.work_pool] = True
    if demo:
        fail_next_run(world, MARKET_DATA_INGEST, skip=1)
        _seed_previous_session(world)
    return world


# When each pipeline normally runs after the New York close (the non-demo schedules above).
_NORMAL_TIMES = {MARKET_DATA_INGEST: time(16, 20), PORTFOLIO_RISK: time(17, 0), EOD_REPORTING: time(17, 45)}


def _seed_previous_session(world: World) -> None:
    """Yesterday's session ran fine: without it, the demo would open on deadlines missed before it began."""
    day = DEMO_START.date() - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    for name, at in _NORMAL_TIMES.items():
        pipeline = world.pipelines[name]
        start = datetime.combine(day, at, tzinfo=ZoneInfo(NEW_YORK)).astimezone(UTC)
        step = timedelta(seconds=pipeline.mean_task_seconds * 10)
        end = start + step * len(pipeline.tasks)
        airflow = pipeline.system == "airflow"
        run = SimRun(
            id=f"scheduled__{start.isoformat()}"
            if airflow
            else str(uuid.uuid5(uuid.NAMESPACE_URL, f"sentinel-demo-seed:{name}")),
            pipeline=name,
            system=pipeline.system,
            scheduled_for=start,
            state=RunState.SUCCESS,
            updated_at=end,
            queued_at=start,
            started_at=start,
            ended_at=end,
            tasks=[
                SimTask(
                    task=t,
                    state=RunState.SUCCESS,
                    try_number=1,
                    max_tries=pipeline.retries,
                    started_at=start + step * i,
                    ended_at=start + step * (i + 1),
                    updated_at=start + step * (i + 1),
                    pool=pipeline.work_pool,
                    id=f"{name}.{t}.seed",
                )
                for i, t in enumerate(pipeline.tasks)
            ],
        )
        world.touch(run, end)


def _investment_pipelines(demo: bool) -> tuple[SimPipeline, ...]:
    def when(normal: str, every_three_minutes_from: int) -> str:
        return f"{every_three_minutes_from}-59/3 * * * *" if demo else normal

    # Demo tasks take seconds and retry quickly, so a whole run fits inside one three-minute period.
    scale = 0.1 if demo else 1.0
    retry_delay = 10.0 if demo else 120.0
    return (
        SimPipeline(
            name=MARKET_DATA_INGEST,
            system="airflow",
            schedule=when("20 16 * * 1-5", 0),
            timezone=NEW_YORK,
            tasks=("fetch_prices", "validate", "publish"),
            tags=("market-data", "prices"),
            mean_task_seconds=90.0 * scale,
            fail_probability=0.04,
            slow_probability=0.05,
            retries=1 if demo else 2,
            retry_probability=0.1,
            retry_delay_seconds=retry_delay,
            work_pool="default_pool",
        ),
        SimPipeline(
            name=PORTFOLIO_RISK,
            system="prefect",
            schedule=when("0 17 * * 1-5", 1),
            timezone=NEW_YORK,
            tasks=("load_positions", "compute_risk", "publish_risk"),
            tags=("risk",),
            mean_task_seconds=150.0 * scale,
            fail_probability=0.02,
            slow_probability=0.05,
            retries=1,
            retry_probability=0.05,
            retry_delay_seconds=retry_delay,
            upstreams=(MARKET_DATA_INGEST,),
            work_pool=RISK_POOL,
        ),
        SimPipeline(
            name=EOD_REPORTING,
            system="airflow",
            schedule=when("45 17 * * 1-5", 2),
            timezone=NEW_YORK,
            tasks=("gather_results", "render_reports", "distribute_reports"),
            tags=("reporting",),
            mean_task_seconds=60.0 * scale,
            fail_probability=0.02,
            slow_probability=0.05,
            retries=1,
            retry_probability=0.05,
            retry_delay_seconds=retry_delay,
            upstreams=(PORTFOLIO_RISK,),
            work_pool="default_pool",
        ),
    )


_SYNTHETIC_PERIODS_MINUTES = (5, 10, 15, 30, 60)
_SYNTHETIC_TIMEZONES = ("UTC", NEW_YORK, "Europe/London", "Asia/Tokyo")
_SYNTHETIC_POOLS = 8


def _synthetic_pipelines(n: int, rng: random.Random) -> Iterator[SimPipeline]:
    """Half Airflow, half Prefect; mostly intraday schedules with random offsets so ticks spread out."""
    for i in range(n):
        system = "airflow" if i % 2 == 0 else "prefect"
        yield SimPipeline(
            name=f"synthetic_dag_{i:05d}" if system == "airflow" else f"synthetic_flow_{i:05d}/deploy",
            system=system,
            schedule=_synthetic_schedule(rng),
            timezone=rng.choice(_SYNTHETIC_TIMEZONES),
            tasks=tuple(f"step_{k}" for k in range(rng.randint(1, 5))),
            tags=("synthetic", f"team-{i % 10}"),
            paused=rng.random() < 0.02,
            mean_task_seconds=rng.uniform(5.0, 120.0),
            fail_probability=0.01,
            slow_probability=0.02,
            retries=rng.choice((0, 1, 2)),
            retry_probability=0.03,
            retry_delay_seconds=30.0,
            work_pool="default_pool" if system == "airflow" else f"pool-{i % _SYNTHETIC_POOLS}",
        )


def _synthetic_schedule(rng: random.Random) -> str:
    if rng.random() < 0.1:  # some daily batch jobs among the intraday ones
        days = rng.choice(("*", "1-5"))
        return f"{rng.randrange(60)} {rng.randrange(24)} * * {days}"
    period = rng.choice(_SYNTHETIC_PERIODS_MINUTES)
    offset = rng.randrange(period)
    return f"{offset} * * * *" if period == 60 else f"{offset}-59/{period} * * * *"
