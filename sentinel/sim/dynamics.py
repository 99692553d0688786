"""How the simulated world moves: schedules come due, runs queue, start, run their tasks and end.

`advance` is a small discrete-event simulation. Everything that will happen next sits in one time-ordered
queue — a pipeline's next cron tick, the next step of each active run, a Prefect "late" check — and
`advance(world, now)` applies the entries due by `now` in time order, stamping each change with its own
instant. Three properties follow, and the rest of the simulator relies on them:

- The change feed stays sorted (`World.changed_since` bisects it) because touches happen in time order.
- A world advanced in 1-second steps ends identical to one advanced in 13-second steps: each run draws all
  of its randomness up front from its own generator, keyed by (world seed, pipeline, scheduled time).
  Only "latest tick" catch-up (a step longer than a schedule period) and worker outages depend on steps.
- The work per call is proportional to what falls due, not to the number of pipelines or runs.

Each run is a generator ("script") that yields how long to wait before its next step, or None to wait
for a Prefect worker; the queue resumes it with the instant it woke up at.
"""

from __future__ import annotations

import heapq
import itertools
import random
import string
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from sentinel.clock import utc
from sentinel.model import RunState
from sentinel.sim.world import SimPipeline, SimRun, SimTask, World

__all__ = [
    "LATE_AFTER",
    "DynamicsState",
    "advance",
    "fail_next_run",
    "inject_failure",
    "next_due",
    "set_api_up",
    "set_paused",
    "set_worker_online",
    "trigger_run",
]

# Prefect's late-runs service marks a Scheduled run Late this long after its expected start.
LATE_AFTER = timedelta(seconds=15)
# A Prefect worker polls its pool every few seconds; always under LATE_AFTER, so a healthy pool is never late.
_PICKUP_SECONDS = (1.0, 10.0)
_START_SECONDS = (1.0, 5.0)  # scheduler loop / infrastructure start-up before the run is Running
_TASK_QUEUE_SECONDS = (0.5, 3.0)
_SLOW_FACTOR = (3.0, 5.0)
# World.compact walks the whole feed, so run it only once the feed has roughly doubled.
_COMPACT_MIN_TOUCHES = 10_000
_STREAM_MEMO_LIMIT = 64
_ANY_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)  # cronsim validates at construction; any start will do
_RUN_ID_ALPHABET = string.ascii_letters + string.digits
_FAILURE_REASONS = (
    "upstream API returned HTTP 503",
    "connection reset by peer",
    "worker ran out of memory",
    "data check failed: 0 rows loaded",
    "timed out waiting for lock",
)
_IN_FLIGHT = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.RETRYING})

RunType = Literal["scheduled", "manual"]
_Script = Generator[float | None, datetime, None]


# --------------------------------------------------------------------------------------------- schedules


class _CronStream:
    """The ticks of one (cron, timezone) pair as UTC instants, shared by every pipeline that uses it.

    Synthetic worlds put thousands of pipelines on a few hundred schedules, and a cron step costs tens of
    microseconds: computing each tick once per schedule rather than once per pipeline keeps cron cheap.
    """

    def __init__(self, expr: str, timezone: str) -> None:
        self.key = (expr, timezone)
        self._expr = expr
        self._tz = ZoneInfo(timezone)
        self._after: dict[datetime, datetime | None] = {}
        self._live: CronSim | None = None
        self._live_last: datetime | None = None  # the tick `_live` yielded last, so it can go on from there
        self._latest: tuple[datetime, datetime | None] | None = None  # (horizon, answer): one catch-up at a time

    def after(self, t: datetime) -> datetime | None:
        """First tick strictly after `t`; None when the expression never matches again."""
        if t in self._after:
            return self._after[t]
        if self._live is None or self._live_last != t:
            self._live = CronSim(self._expr, t.astimezone(self._tz))
        nxt = self._pull()
        # Local wall-clock iteration can land on or before `t` around a DST fold; insist on progress.
        while nxt is not None and nxt <= t:
            nxt = self._pull()
        if len(self._after) >= _STREAM_MEMO_LIMIT:
            # Timers fire in time order, so ticks before `t` are rarely asked for again (and a miss
            # only costs a recomputation).
            self._after = {k: v for k, v in self._after.items() if k >= t}
        self._after[t] = nxt
        return nxt

    def latest_until(self, horizon: datetime) -> datetime | None:
        """Last tick at or before `horizon` (cronsim's reverse walk is exclusive; ticks are whole seconds)."""
        if self._latest is None or self._latest[0] != horizon:
            walk = CronSim(self._expr, (horizon + timedelta(microseconds=1)).astimezone(self._tz), reverse=True)
            try:
                tick: datetime | None = next(walk).astimezone(UTC)
            except StopIteration:
                tick = None
            self._latest = (horizon, tick if tick is not None and tick <= horizon else None)
        return self._latest[1]

    def _pull(self) -> datetime | None:
        assert self._live is not None
        try:
            tick = next(self._live).astimezone(UTC)
        except StopIteration:
            self._live, self._live_last = None, None
            return None
        self._live_last = tick
        return tick


@dataclass
class _Timer:
    """A pipeline's precomputed next due tick; the queue holds one `_Due` entry for it."""

    stream: _CronStream | None  # None: no schedule (manual runs only)
    due: datetime | None = None


# ------------------------------------------------------------------------------------------------ runs


@dataclass(frozen=True, slots=True)
class _TaskPlan:
    name: str
    id: str
    queue_seconds: float
    tries: tuple[float, ...]  # duration of each try; every try but the last fails
    fails: bool  # the last try fails too, and with it the run


@dataclass(frozen=True, slots=True)
class _Plan:
    pickup_seconds: float
    start_seconds: float
    tasks: tuple[_TaskPlan, ...]
    failure_reason: str


@dataclass(eq=False)
class _RunProcess:
    run: SimRun
    pipeline: SimPipeline
    plan: _Plan
    script: _Script | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class _Due:
    pipeline: str


@dataclass(frozen=True, slots=True)
class _Step:
    proc: _RunProcess


@dataclass(frozen=True, slots=True)
class _LateCheck:
    proc: _RunProcess


_Event = _Due | _Step | _LateCheck


@dataclass(eq=False)
class DynamicsState:
    """Everything `advance` keeps between calls; stored on `World.dynamics`. API faces need none of it."""

    now: datetime | None = None  # how far the world has been advanced
    queue: list[tuple[datetime, int, _Event]] = field(default_factory=list)
    order: Iterator[int] = field(default_factory=itertools.count)  # breaks ties in the queue, FIFO
    streams: dict[tuple[str, str], _CronStream] = field(default_factory=dict)
    timers: dict[str, _Timer] = field(default_factory=dict)
    active: dict[str, _RunProcess] = field(default_factory=dict)  # run id -> not yet terminal
    parked: dict[str, dict[str, _RunProcess]] = field(default_factory=dict)  # pool -> runs awaiting a worker
    created: dict[str, int] = field(default_factory=dict)  # runs created per pipeline (ordinals)
    forced: dict[str, set[int]] = field(default_factory=dict)  # pipeline -> ordinals that must fail
    touches: int = 0  # since the last compaction

    def push(self, when: datetime, event: _Event) -> None:
        heapq.heappush(self.queue, (when, next(self.order), event))


def _state(world: World) -> DynamicsState:
    if world.dynamics is None:
        world.dynamics = DynamicsState()
    return world.dynamics


# ------------------------------------------------------------------------------------------- advance


def advance(world: World, now: datetime) -> None:
    """Move `world` forward to `now`, applying every scheduled change in time order."""
    now = utc(now)
    state = _state(world)
    if state.now is not None and now < state.now:
        return  # time never runs backwards here: a late caller must not rewrite history
    _register_new_pipelines(world, state, now)
    _resume_parked(world, state)
    queue = state.queue
    while queue and queue[0][0] <= now:
        when, _, event = heapq.heappop(queue)
        _fire(world, state, event, when, now)
    state.now = now
    _compact_now_and_then(world, state)


def _fire(world: World, state: DynamicsState, event: _Event, when: datetime, horizon: datetime) -> None:
    match event:
        case _Due(pipeline):
            _on_due(world, state, pipeline, when, horizon)
        case _Step(proc):
            if not proc.done:
                _resume(world, state, proc, when)
        case _LateCheck(proc):
            _on_late_check(world, state, proc, when)


def _register_new_pipelines(world: World, state: DynamicsState, now: datetime) -> None:
    # Comparing sizes keeps the common case O(1); a mismatch means pipelines were added or removed.
    if len(world.pipelines) == len(state.timers):
        return
    for gone in state.timers.keys() - world.pipelines.keys():
        del state.timers[gone]
    since = state.now if state.now is not None else now
    for name, pipeline in world.pipelines.items():
        if name not in state.timers:
            state.timers[name] = timer = _Timer(_stream_for(state, pipeline))
            _arm(state, name, timer, timer.stream.after(since) if timer.stream else None)


def _stream_for(state: DynamicsState, pipeline: SimPipeline) -> _CronStream | None:
    if not pipeline.schedule:
        return None
    key = (pipeline.schedule, pipeline.timezone)
    stream = state.streams.get(key)
    if stream is None:
        try:
            CronSim(pipeline.schedule, _ANY_INSTANT.astimezone(ZoneInfo(pipeline.timezone)))
        except CronSimError as e:
            raise ValueError(f"pipeline {pipeline.name!r}: bad schedule {pipeline.schedule!r}: {e}") from e
        stream = state.streams[key] = _CronStream(*key)
    return stream


def _arm(state: DynamicsState, name: str, timer: _Timer, due: datetime | None) -> None:
    timer.due = due
    if due is not None:
        state.push(due, _Due(name))


def _on_due(world: World, state: DynamicsState, name: str, when: datetime, horizon: datetime) -> None:
    timer = state.timers.get(name)
    if timer is None or timer.due != when or timer.stream is None:
        return  # superseded: the pipeline was re-registered or removed since this entry was queued
    pipeline = world.pipelines.get(name)
    if pipeline is None:
        del state.timers[name]
        return
    if timer.stream.key != (pipeline.schedule, pipeline.timezone):
        timer.stream = _stream_for(state, pipeline)  # schedule edited: follow it from here, no run now
        _arm(state, name, timer, timer.stream.after(when) if timer.stream else None)
        return
    following = timer.stream.after(when)
    if following is not None and following <= horizon:
        # catchup=False: of several ticks that passed unseen, only the latest gets a run.
        latest = timer.stream.latest_until(horizon)
        _arm(state, name, timer, latest if latest is not None and latest > following else following)
        return
    if not pipeline.paused:
        _create_run(world, state, pipeline, when, "scheduled", when)
    _arm(state, name, timer, following)


def _resume_parked(world: World, state: DynamicsState) -> None:
    """Hand runs that waited for a worker back to the queue once their pool has one again."""
    if not state.parked or state.now is None:
        return
    for pool in [p for p in state.parked if world.health.workers_online.get(p, False)]:
        # The earliest instant the world can have noticed the worker: all earlier events are applied.
        for proc in state.parked.pop(pool).values():
            state.push(state.now, _Step(proc))


def _on_late_check(world: World, state: DynamicsState, proc: _RunProcess, when: datetime) -> None:
    # Still Scheduled 15 s after its start time means no worker took it: that is what Late says.
    if not proc.done and proc.run.state is RunState.SCHEDULED:
        proc.run.state = RunState.LATE
        _touch(world, state, proc.run, when)


def _compact_now_and_then(world: World, state: DynamicsState) -> None:
    if state.touches >= max(_COMPACT_MIN_TOUCHES, 2 * len(world.runs)):
        world.compact()
        state.touches = 0


# --------------------------------------------------------------------------------------- run lifecycle


def _create_run(
    world: World,
    state: DynamicsState,
    pipeline: SimPipeline,
    scheduled_for: datetime,
    run_type: RunType,
    now: datetime,
) -> SimRun:
    ordinal = state.created[pipeline.name] = state.created.get(pipeline.name, 0) + 1
    forced = state.forced.get(pipeline.name, set())
    must_fail = ordinal in forced
    forced.discard(ordinal)
    # Keyed by the scheduled instant, not by how many calls came before: replays do not depend on steps.
    salt = f"|{ordinal}" if run_type == "manual" else ""
    rng = random.Random(f"{world.seed}|{pipeline.name}|{run_type}|{scheduled_for.isoformat()}{salt}")
    run = SimRun(
        id=_new_run_id(world, pipeline, rng, run_type, scheduled_for),
        pipeline=pipeline.name,
        system=pipeline.system,
        scheduled_for=scheduled_for,
        state=RunState.QUEUED if pipeline.system == "airflow" else RunState.SCHEDULED,
        updated_at=now,
        queued_at=now if pipeline.system == "airflow" else None,
        run_type=run_type,
    )
    proc = _RunProcess(run, pipeline, _plan(pipeline, rng, must_fail))
    if pipeline.system == "airflow":
        # Airflow creates every task instance with its run; Prefect creates task runs as they start.
        run.tasks = [
            SimTask(task=t.name, max_tries=pipeline.retries, pool=_pool(pipeline), id=t.id) for t in proc.plan.tasks
        ]
    _touch(world, state, run, now)
    state.active[run.id] = proc
    proc.script = _script(world, state, proc)
    _resume(world, state, proc, now, first=True)
    if pipeline.system == "prefect":
        state.push(scheduled_for + LATE_AFTER, _LateCheck(proc))
    _bound_history(world, state, pipeline.name)
    return run


def _new_run_id(
    world: World, pipeline: SimPipeline, rng: random.Random, run_type: RunType, scheduled_for: datetime
) -> str:
    while True:
        if pipeline.system == "prefect":
            run_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        else:
            # Airflow's dag_run_id is unique per DAG only, but World keys runs by id alone: Airflow 3's
            # random-suffix form keeps ids distinct across DAGs that share a tick.
            suffix = "".join(rng.choices(_RUN_ID_ALPHABET, k=8))
            run_id = f"{run_type}__{scheduled_for.isoformat()}_{suffix}"
        if run_id not in world.runs:
            return run_id


def _plan(pipeline: SimPipeline, rng: random.Random, must_fail: bool) -> _Plan:
    """Draw a run's whole future at once, so its outcome cannot depend on when it is observed."""
    slow = rng.random() < pipeline.slow_probability
    factor = rng.uniform(*_SLOW_FACTOR) if slow else 1.0
    fails = must_fail or rng.random() < pipeline.fail_probability
    # A forced failure hits the first task, so demos and tests see it as early as possible.
    failing = (0 if must_fail else rng.randrange(len(pipeline.tasks))) if fails and pipeline.tasks else -1
    tasks = tuple(_plan_task(pipeline, rng, name, factor, i == failing) for i, name in enumerate(pipeline.tasks))
    return _Plan(
        pickup_seconds=rng.uniform(*_PICKUP_SECONDS),
        start_seconds=rng.uniform(*_START_SECONDS),
        tasks=tasks,
        failure_reason=rng.choice(_FAILURE_REASONS),
    )


def _plan_task(pipeline: SimPipeline, rng: random.Random, name: str, factor: float, fails: bool) -> _TaskPlan:
    if fails:
        n_tries = pipeline.retries + 1
    else:
        flaky = pipeline.retries > 0 and rng.random() < pipeline.retry_probability
        n_tries = 2 if flaky else 1
    full = max(0.1, pipeline.mean_task_seconds * factor * max(0.3, rng.gauss(1.0, 0.2)))
    # A failing try dies part-way through; the try that succeeds takes the full duration.
    tries = tuple(full if (i == n_tries - 1 and not fails) else full * rng.uniform(0.1, 0.9) for i in range(n_tries))
    task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if pipeline.system == "prefect" else ""
    return _TaskPlan(name, task_id, rng.uniform(*_TASK_QUEUE_SECONDS), tries, fails)


def _resume(world: World, state: DynamicsState, proc: _RunProcess, when: datetime, first: bool = False) -> None:
    assert proc.script is not None
    try:
        wait = next(proc.script) if first else proc.script.send(when)
    except StopIteration:
        _finish(world, state, proc)
        return
    if wait is None:
        state.parked.setdefault(proc.pipeline.work_pool, {})[proc.run.id] = proc
    else:
        state.push(when + timedelta(seconds=wait), _Step(proc))


def _script(world: World, state: DynamicsState, proc: _RunProcess) -> _Script:
    """One run's life. Each `yield` is a wait in seconds (None: until a worker is online)."""
    run, plan, pipeline = proc.run, proc.plan, proc.pipeline
    if run.system == "prefect":
        now = yield plan.pickup_seconds
        while not world.health.workers_online.get(pipeline.work_pool, False):
            now = yield None
        _set_run(world, state, run, now, RunState.QUEUED, queued_at=now)  # Prefect: Pending
    now = yield plan.start_seconds
    _set_run(world, state, run, now, RunState.RUNNING, started_at=now)
    for index, task_plan in enumerate(plan.tasks):
        task = _task_for(run, index, task_plan, pipeline)
        for attempt, seconds in enumerate(task_plan.tries, start=1):
            if attempt > 1:
                now = yield pipeline.retry_delay_seconds
            _set_task(world, state, run, task, now, RunState.QUEUED, try_number=attempt)
            now = yield task_plan.queue_seconds
            _set_task(world, state, run, task, now, RunState.RUNNING, started_at=now, ended_at=None)
            now = yield seconds
            if attempt < len(task_plan.tries):
                _set_task(world, state, run, task, now, RunState.RETRYING, ended_at=now)
            elif task_plan.fails:
                _fail_run(world, state, run, task, now, f"{task.task} failed: {plan.failure_reason}")
                return
            else:
                _set_task(world, state, run, task, now, RunState.SUCCESS, ended_at=now)
    _set_run(world, state, run, now, RunState.SUCCESS, ended_at=now)


def _task_for(run: SimRun, index: int, task_plan: _TaskPlan, pipeline: SimPipeline) -> SimTask:
    if index < len(run.tasks):
        return run.tasks[index]
    task = SimTask(task=task_plan.name, max_tries=pipeline.retries, pool=_pool(pipeline), id=task_plan.id)
    run.tasks.append(task)
    return task


def _pool(pipeline: SimPipeline) -> str:
    # SimPipeline's default pool name is Prefect's; an Airflow task left unassigned sits in `default_pool`.
    if pipeline.system == "airflow" and pipeline.work_pool == "default":
        return "default_pool"
    return pipeline.work_pool


def _set_run(world: World, state: DynamicsState, run: SimRun, now: datetime, to: RunState, **times: datetime) -> None:
    run.state = to
    for name, value in times.items():
        setattr(run, name, value)
    _touch(world, state, run, now)


def _set_task(
    world: World,
    state: DynamicsState,
    run: SimRun,
    task: SimTask,
    now: datetime,
    to: RunState,
    try_number: int | None = None,
    **times: datetime | None,
) -> None:
    task.state = to
    task.updated_at = now
    if try_number is not None:
        task.try_number = try_number
    for name, value in times.items():
        setattr(task, name, value)
    _touch(world, state, run, now)


def _fail_run(
    world: World, state: DynamicsState, run: SimRun, task: SimTask | None, now: datetime, message: str
) -> None:
    if task is not None:
        task.state, task.ended_at, task.updated_at = RunState.FAILED, now, now
    # Airflow would mark the rest upstream_failed; RunState has no such word, and SKIPPED is what they are.
    for other in run.tasks:
        if other is not task and not other.state.terminal:
            other.state, other.ended_at, other.updated_at = RunState.SKIPPED, now, now
    run.state, run.ended_at, run.message = RunState.FAILED, now, message
    _touch(world, state, run, now)


def _finish(world: World, state: DynamicsState, proc: _RunProcess) -> None:
    proc.done = True
    state.active.pop(proc.run.id, None)
    _bound_history(world, state, proc.run.pipeline)


def _touch(world: World, state: DynamicsState, run: SimRun, now: datetime) -> None:
    world.touch(run, now)
    state.touches += 1


def _bound_history(world: World, state: DynamicsState, pipeline: str) -> None:
    runs = world.runs_of(pipeline)
    excess = len(runs) - world.max_runs_per_pipeline
    for run in runs:  # oldest first; a run still in progress is never dropped
        if excess <= 0:
            return
        if run.id not in state.active and run.state.terminal:
            world.remove_run(run.id)
            excess -= 1


# ----------------------------------------------------------------------------------- helpers for demo/tests


def next_due(world: World, pipeline: str) -> datetime | None:
    """When `pipeline`'s next scheduled run comes due (UTC), once the world has been advanced at all."""
    timer = _state(world).timers.get(pipeline)
    return timer.due if timer is not None else None


def trigger_run(world: World, pipeline: str, now: datetime, run_type: RunType = "manual") -> SimRun:
    """Start a run now, as a UI or API trigger would; it then lives like any other run."""
    state, at = _catch_up(world, now)
    return _create_run(world, state, world.pipelines[pipeline], at, run_type, at)


def fail_next_run(world: World, pipeline: str, skip: int = 0) -> None:
    """Make the (skip+1)-th run `pipeline` creates from here on fail, at its first task."""
    if pipeline not in world.pipelines:
        raise KeyError(pipeline)
    state = _state(world)
    state.forced.setdefault(pipeline, set()).add(state.created.get(pipeline, 0) + 1 + skip)


def inject_failure(world: World, pipeline: str, now: datetime) -> SimRun | None:
    """Fail `pipeline` now: its newest active run fails at `now` (returned), or else its next run will."""
    state, at = _catch_up(world, now)
    for run in reversed(world.runs_of(pipeline)):
        proc = state.active.get(run.id)
        if proc is not None:
            _abort(world, state, proc, at)
            return run
    fail_next_run(world, pipeline)
    return None


def set_api_up(world: World, up: bool) -> None:
    """Take both API faces down (they answer 503) or bring them back; the world keeps moving either way."""
    world.health.api_up = up


def set_worker_online(world: World, pool: str, online: bool) -> None:
    """Prefect runs in a pool without an online worker are not picked up and turn Late."""
    world.health.workers_online[pool] = online


def set_paused(world: World, pipeline: str, paused: bool) -> None:
    """A paused pipeline's ticks pass without runs; unpausing resumes at the next tick (catchup=False)."""
    world.pipelines[pipeline].paused = paused


def _catch_up(world: World, now: datetime) -> tuple[DynamicsState, datetime]:
    """Advance to `now` first: a change stamped `now` must not precede events still queued before it,
    or the change feed loses its order. Returns the instant to stamp (never before the world's now)."""
    advance(world, now)
    state = _state(world)
    assert state.now is not None
    return state, state.now


def _abort(world: World, state: DynamicsState, proc: _RunProcess, now: datetime) -> None:
    proc.done = True
    if proc.script is not None:
        proc.script.close()
    state.active.pop(proc.run.id, None)
    state.parked.get(proc.pipeline.work_pool, {}).pop(proc.run.id, None)
    in_flight = next((t for t in proc.run.tasks if t.state in _IN_FLIGHT), None)
    _fail_run(world, state, proc.run, in_flight, now, "failure injected by the simulator")
    _bound_history(world, state, proc.run.pipeline)
