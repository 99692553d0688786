"""Prefect 3's REST API over the simulated world: the subset Sentinel's Prefect adapter reads.

Mounted under `/prefect/`, so a source's url is `http://host:port/prefect/api`. It answers like a real
3.9.1 server where the adapter can tell: response shapes, `limit` > 200 → 422 `{"detail": ...}`, unknown
filter keys → 422 `{"exception_message", "exception_detail", "request_body"}`, start_time filters on
coalesce(start_time, expected_start_time), a `Date` header on every response (from the simulated clock),
and 503 everywhere while `world.health.api_up` is False.

Cheap at 10,000 pipelines: time-bounded filters start from a time index of every time a filter compares
(`sim.timeindex`), kept to runs changed since the earliest bound as `World.changed_since` would give
(dynamics create a run when it falls due and stamp every change, so each time on a run is at or before its
last change); state filters from an index of runs by state brought up to date from the same change feed.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from sentinel.clock import Clock
from sentinel.model import RunState
from sentinel.sim.dynamics import LATE_AFTER
from sentinel.sim.timeindex import TimeIndex
from sentinel.sim.world import SimPipeline, SimRun, SimTask, World

__all__ = ["PREFECT_STATES", "prefect_app"]

VERSION = "3.9.1"
LIMIT = 200
_NS = uuid.UUID("5b0c4a52-34f1-4c59-9a5e-7f0d1c2e3a44")  # derived ids stay stable across restarts

# RunState → (Prefect state type, state name): the words the adapter maps back by type (and name).
PREFECT_STATES: dict[RunState, tuple[str, str]] = {
    RunState.SCHEDULED: ("SCHEDULED", "Scheduled"),
    RunState.LATE: ("SCHEDULED", "Late"),
    RunState.QUEUED: ("PENDING", "Pending"),
    RunState.RUNNING: ("RUNNING", "Running"),
    RunState.RETRYING: ("RUNNING", "Retrying"),
    RunState.PAUSED: ("PAUSED", "Paused"),
    RunState.SUCCESS: ("COMPLETED", "Completed"),
    RunState.SKIPPED: ("COMPLETED", "Skipped"),  # Prefect has no skipped state
    RunState.FAILED: ("FAILED", "Failed"),
    RunState.CRASHED: ("CRASHED", "Crashed"),
    RunState.CANCELLED: ("CANCELLED", "Cancelled"),
    RunState.UNKNOWN: ("UNKNOWN", "Unknown"),  # what a future server's new type looks like to the adapter
}
# A task waiting out its retry delay is Prefect's AwaitingRetry, a SCHEDULED-type state.
_TASK_STATES = {**PREFECT_STATES, RunState.RETRYING: ("SCHEDULED", "AwaitingRetry")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # Prefect's filters reject unknown keys with a 422


class _Values(_Strict):
    any_: list[str] | None = None
    not_any_: list[str] | None = None


class _Times(_Strict):
    after_: datetime | None = None
    before_: datetime | None = None
    is_null_: bool | None = None


class _StateFilter(_Strict):
    operator: Literal["and_", "or_"] = "and_"
    type: _Values | None = None
    name: _Values | None = None


class _FlowRunFilter(_Strict):
    operator: Literal["and_", "or_"] = "and_"
    id: _Values | None = None
    state: _StateFilter | None = None
    start_time: _Times | None = None
    end_time: _Times | None = None
    expected_start_time: _Times | None = None


class _TaskRunFilter(_Strict):
    flow_run_id: _Values | None = None


class _ByIdFilter(_Strict):
    id: _Values | None = None


class _Body(_Strict):
    sort: str | None = None
    limit: int | None = None
    offset: int = 0
    flow_runs: _FlowRunFilter | None = None
    task_runs: _TaskRunFilter | None = None
    flows: _ByIdFilter | None = None
    deployments: _ByIdFilter | None = None


class _Rejected(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


def _uid(*parts: object) -> str:
    return str(uuid.uuid5(_NS, "|".join(str(p) for p in parts)))


@functools.lru_cache(maxsize=65536)
def _name_uid(kind: str, name: str | None) -> str | None:
    """Ids of flows, deployments, pools: asked for on every serialized run, so derived once."""
    return _uid(kind, name) if name is not None else None


def _in(value: datetime | None, times: _Times, raw: datetime | None = None) -> bool:
    if times.is_null_ is not None and (raw is None) != times.is_null_:
        return False
    if value is None:
        return times.after_ is None and times.before_ is None
    return (times.after_ is None or value >= times.after_) and (times.before_ is None or value <= times.before_)


def _words_match(states: dict[RunState, tuple[str, str]], state: RunState, f: _StateFilter) -> bool:
    type_, name = states[state]
    checks = [
        (v.any_ is None or word in v.any_) and (not v.not_any_ or word not in v.not_any_)
        for v, word in ((f.type, type_), (f.name, name))
        if v is not None
    ]
    return not checks or (all(checks) if f.operator == "and_" else any(checks))


class _StateIndex:
    """Prefect run ids by current state, brought up to date from the world's change feed on each read."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.synced: datetime | None = None
        self.state_of: dict[str, RunState] = {}
        self.by_state: dict[RunState, set[str]] = {s: set() for s in RunState}

    def runs_in(self, states: Iterable[RunState]) -> list[SimRun]:
        changed = self.world.changed_since("prefect", self.synced)
        for run in changed:
            old = self.state_of.get(run.id)
            if old is not run.state:
                if old is not None:
                    self.by_state[old].discard(run.id)
                self.by_state[run.state].add(run.id)
                self.state_of[run.id] = run.state
        if changed:
            self.synced = changed[-1].updated_at
        out = []
        for state in states:
            for run_id in list(self.by_state[state]):
                run = self.world.runs.get(run_id)
                if run is None:  # dropped by the history bound
                    self.by_state[state].discard(run_id)
                    self.state_of.pop(run_id, None)
                elif run.state is state:
                    out.append(run)
        return out


class _PrefectFace:
    def __init__(self, world: World, clock: Clock) -> None:
        self.world = world
        self.clock = clock
        self.index = _StateIndex(world)
        self.times = TimeIndex(world, "prefect", _filtered_times)
        self._catalog_size = -1
        self._deployments: list[SimPipeline] = []  # newest first, as CREATED_DESC
        self._flows: dict[str, str] = {}  # flow id -> name
        self._pools_seen_online: dict[str, datetime] = {}

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not self.world.health.api_up:
            resp: web.StreamResponse = _json({"detail": "Service Unavailable"}, 503)
        else:
            try:
                resp = await handler(request)
            except _Rejected as exc:
                resp = _json(exc.body, 422)
        resp.headers["Date"] = format_datetime(self.clock.now(), usegmt=True)
        return resp

    async def _body(self, request: web.Request, sorts: Iterable[str] = ()) -> _Body:
        try:
            raw = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            raise _Rejected({"detail": "There was an error parsing the body"}) from None
        try:
            body = _Body.model_validate(raw)
        except ValidationError as exc:
            errors = [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
            raise _Rejected({"exception_message": "Invalid request received.", "exception_detail": errors,
                             "request_body": raw}) from None  # fmt: skip
        if body.limit is not None and body.limit > LIMIT:
            raise _Rejected({"detail": f"Invalid limit: must be less than or equal to {LIMIT}."})
        if body.sort is not None and body.sort not in sorts:  # the sim knows only the orders the adapter uses
            problem = {"type": "enum", "loc": ["body", "sort"], "msg": f"Input should be one of {sorted(sorts)}"}
            raise _Rejected({"exception_message": "Invalid request received.", "exception_detail": [problem]})
        return body

    def _catalog(self) -> None:
        if self._catalog_size == len(self.world.pipelines):
            return
        prefect = [p for p in self.world.pipelines.values() if p.system == "prefect"]
        self._deployments = [p for p in reversed(prefect) if "/" in p.name]
        self._flows = {_name_uid("flow", _flow(p.name)): _flow(p.name) for p in prefect}
        self._catalog_size = len(self.world.pipelines)

    @staticmethod
    def _page(items: list[Any], body: _Body) -> list[Any]:
        limit = LIMIT if body.limit is None else body.limit
        return items[body.offset : body.offset + limit]

    async def health(self, request: web.Request) -> web.Response:
        return _json(True)

    async def version(self, request: web.Request) -> web.Response:
        return _json(VERSION)

    async def flow_runs(self, request: web.Request) -> web.Response:
        body = await self._body(request, _SORT_KEYS)
        sort = body.sort or "ID_DESC"
        f = body.flow_runs or _FlowRunFilter()
        runs = [r for r in self._candidates(f) if self._matches(r, f)]
        runs.sort(key=_SORT_KEYS[sort][0], reverse=_SORT_KEYS[sort][1])
        return _json([self._flow_run(r) for r in self._page(runs, body)])

    def _candidates(self, f: _FlowRunFilter) -> Iterable[SimRun]:
        """A superset of the runs `f` matches, found without scanning every run where possible.

        Id lists and state sets are small and cheap; a time bound costs a walk of the change feed from it,
        so under `and_` it is used only when nothing cheaper bounds the result.
        """
        cheap: list[list[SimRun]] = []
        lower: list[datetime] = []
        spans: list[tuple[datetime, datetime | None]] = []
        unbounded = False
        if f.id is not None:
            cheap.append([r for i in f.id.any_ or () if (r := self.world.runs.get(i)) is not None])
        if f.state is not None:
            wanted = [s for s in RunState if _words_match(PREFECT_STATES, s, f.state)]
            if len(wanted) < len(RunState):
                cheap.append(self.index.runs_in(wanted))
            else:
                unbounded = True
        for times in (f.start_time, f.end_time, f.expected_start_time):
            if times is not None:
                if times.after_ is None or times.is_null_:
                    unbounded = True
                else:
                    lower.append(times.after_)
                    spans.append((times.after_, times.before_))
        if f.operator == "and_":
            if cheap:
                return min(cheap, key=len)
            if lower:  # every criterion must hold, so the latest lower bound alone bounds the result
                return self._changed_within(max(lower), [max(spans, key=lambda s: s[0])])
        elif not unbounded and (cheap or lower):
            out = {r.id: r for runs in cheap for r in runs}
            if lower:
                out.update((r.id, r) for r in self._changed_within(min(lower), spans))
            return out.values()
        return (r for r in self.world.runs.values() if r.system == "prefect")

    def _changed_within(self, since: datetime, spans: list[tuple[datetime, datetime | None]]) -> list[SimRun]:
        """`changed_since(since)` narrowed to runs with a filtered time in one of `spans`, oldest change first.

        Every time a filter reads (coalesced start, end, expected start) lies in the index, so the runs a
        filter on them can match are all here; the order is the change feed's, as `changed_since` gives.
        """
        found: dict[str, SimRun] = {}
        for lo, hi in spans:
            found.update((r.id, r) for r in self.times.between(lo, hi) if r.updated_at >= since)
        return sorted(found.values(), key=_change_order)

    def _matches(self, run: SimRun, f: _FlowRunFilter) -> bool:
        if run.system != "prefect":
            return False
        checks = []
        if f.id is not None:
            checks.append(f.id.any_ is None or run.id in f.id.any_)
        if f.state is not None:
            checks.append(_words_match(PREFECT_STATES, run.state, f.state))
        if f.start_time is not None:  # range on coalesce(start_time, expected_start_time), is_null_ on start_time
            checks.append(_in(run.started_at or run.scheduled_for, f.start_time, run.started_at))
        if f.end_time is not None:
            checks.append(_in(run.ended_at, f.end_time, run.ended_at))
        if f.expected_start_time is not None:
            checks.append(_in(run.scheduled_for, f.expected_start_time))
        return not checks or (all(checks) if f.operator == "and_" else any(checks))

    def _flow_run(self, run: SimRun) -> dict[str, Any]:
        type_, name = PREFECT_STATES[run.state]
        state_id = _uid("state", run.id, run.state, run.queued_at, run.started_at, run.ended_at)
        stamp = _state_time(run)
        dep = _deployment_id(run.pipeline)
        pipeline = self.world.pipelines.get(run.pipeline)
        pool = pipeline.work_pool if pipeline is not None else None
        scheduled = run.run_type == "scheduled" and dep is not None
        duration = (run.ended_at - run.started_at).total_seconds() if run.started_at and run.ended_at else 0.0
        return {
            "id": run.id, "created": _iso(run.scheduled_for), "updated": _iso(run.updated_at),
            "name": f"sim-{run.id[:8]}", "flow_id": _name_uid("flow", _flow(run.pipeline)), "state_id": state_id,
            "deployment_id": dep, "deployment_version": "sim" if dep else None, "flow_version": "sim",
            "work_queue_name": "default" if dep else None, "parameters": {}, "idempotency_key": None,
            "context": {}, "tags": ["auto-scheduled"] if scheduled else [], "labels": {},
            "parent_task_run_id": None, "state_type": type_, "state_name": name,
            "run_count": 1 if run.started_at else 0, "expected_start_time": _iso(run.scheduled_for),
            "next_scheduled_start_time": _iso(run.scheduled_for) if type_ == "SCHEDULED" else None,
            "start_time": _iso(run.started_at), "end_time": _iso(run.ended_at), "total_run_time": duration,
            "estimated_run_time": duration, "auto_scheduled": scheduled,
            "created_by": {"id": _name_uid("schedule", run.pipeline), "type": "SCHEDULE",
                           "display_value": "CronSchedule"} if scheduled else None,
            "work_pool_id": _name_uid("pool", pool) if dep else None, "work_pool_name": pool if dep else None,
            "state": {"id": state_id, "type": type_, "name": name, "timestamp": _iso(stamp),
                      "message": run.message if run.state.terminal else None, "data": None,
                      "state_details": {"flow_run_id": run.id, "task_run_id": None}},
            "job_variables": {},
        }  # fmt: skip

    async def task_runs(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"ID_DESC"})
        ids = (body.task_runs.flow_run_id.any_ if body.task_runs and body.task_runs.flow_run_id else None) or []
        out = []
        for run_id in ids:
            run = self.world.runs.get(run_id)
            if run is not None and run.system == "prefect":
                out.extend(_task_run(run, i, t) for i, t in enumerate(run.tasks))
        out.sort(key=lambda t: t["id"], reverse=True)
        return _json(self._page(out, body))

    async def flows(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self._catalog()
        ids = body.flows.id.any_ if body.flows and body.flows.id else None
        flows = [
            {"id": i, "name": n, "tags": [], "labels": {}} for i, n in self._flows.items() if ids is None or i in ids
        ]
        return _json(self._page(flows, body))

    async def deployments(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"CREATED_DESC"})
        self._catalog()
        ids = set(body.deployments.id.any_ or ()) if body.deployments and body.deployments.id else None
        chosen = self._deployments if ids is None else [p for p in self._deployments if _deployment_id(p.name) in ids]
        return _json([_deployment(p) for p in self._page(chosen, body)])

    async def work_pools(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self._catalog()
        pools = sorted({p.work_pool for p in self.world.pipelines.values() if p.system == "prefect"}
                       | set(self.world.health.workers_online))  # fmt: skip
        out = [{"id": _uid("pool", name), "name": name, "type": "process", "is_paused": False,
                "status": "READY" if self.world.health.workers_online.get(name) else "NOT_READY",
                "concurrency_limit": None, "default_queue_id": _uid("queue", name), "base_job_template": {}}
               for name in pools]  # fmt: skip
        return _json(self._page(out, body))

    async def workers(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        pool = request.match_info["name"]
        known = {p.work_pool for p in self.world.pipelines.values() if p.system == "prefect"}
        if pool not in known and pool not in self.world.health.workers_online:
            return _json({"detail": f'Work pool "{pool}" not found.'}, 404)
        now = self.clock.now()
        if self.world.health.workers_online.get(pool):
            # A live worker beats every 30 simulated seconds, however rarely this endpoint is read.
            self._pools_seen_online[pool] = now - timedelta(seconds=now.timestamp() % 30)
        last = self._pools_seen_online.get(pool)
        if last is None:
            return _json([])
        online = bool(self.world.health.workers_online.get(pool))
        worker = {"id": _uid("worker", pool), "name": f"ProcessWorker {_uid('worker', pool)}", "work_pool_id":
                  _uid("pool", pool), "last_heartbeat_time": _iso(last), "heartbeat_interval_seconds": 30,
                  "status": "ONLINE" if online else "OFFLINE"}  # fmt: skip
        return _json(self._page([worker], body))


def _filtered_times(run: SimRun) -> tuple[datetime, ...]:
    """Every time a flow-run filter compares: start_time (coalesced), end_time, expected_start_time."""
    start = run.started_at or run.scheduled_for
    times = (start,) if run.ended_at is None else (start, run.ended_at)
    return times if start == run.scheduled_for else (*times, run.scheduled_for)


def _change_order(run: SimRun) -> tuple[datetime, int]:
    return run.updated_at, run.seq


def _flow(pipeline: str) -> str:
    return pipeline.split("/", 1)[0]


def _deployment_id(pipeline: str) -> str | None:
    return _name_uid("deployment", pipeline) if "/" in pipeline else None


def _state_time(run: SimRun) -> datetime:
    if run.state.terminal:
        return run.ended_at or run.updated_at
    if run.state in (RunState.RUNNING, RunState.RETRYING):
        return run.started_at or run.updated_at
    if run.state is RunState.QUEUED:
        return run.queued_at or run.updated_at
    if run.state is RunState.LATE:
        return run.scheduled_for + LATE_AFTER
    return run.scheduled_for if run.state is RunState.SCHEDULED else run.updated_at


def _task_run(run: SimRun, index: int, task: SimTask) -> dict[str, Any]:
    task_id = task.id or _uid("task", run.id, index)
    type_, name = _TASK_STATES[task.state]
    if type_ == "RUNNING" and task.try_number > 1:
        name = "Retrying"
    dynamic_key = _uid("dynamic", task_id)
    state_id = _uid("state", task_id, task.state, task.try_number, task.started_at, task.ended_at)
    return {
        "id": task_id, "created": _iso(task.started_at or run.started_at), "updated": _iso(task.updated_at),
        "name": f"{task.task}-{dynamic_key[:3]}", "flow_run_id": run.id,
        "task_key": f"{task.task}-{_uid('code', task.task)[:8]}", "dynamic_key": dynamic_key,
        "empirical_policy": {"max_retries": 0, "retry_delay_seconds": 0, "retries": task.max_tries,
                             "retry_delay": 0, "retry_jitter_factor": None},
        "tags": [], "labels": {}, "state_id": state_id, "task_inputs": {}, "state_type": type_,
        "state_name": name, "run_count": task.try_number, "flow_run_run_count": 1,
        "expected_start_time": _iso(task.started_at), "start_time": _iso(task.started_at),
        "end_time": _iso(task.ended_at),
        "state": {"id": state_id, "type": type_, "name": name, "timestamp": _iso(task.updated_at),
                  "message": run.message if task.state is RunState.FAILED else None, "data": None,
                  "state_details": {"flow_run_id": run.id, "task_run_id": task_id}},
    }  # fmt: skip


def _deployment(p: SimPipeline) -> dict[str, Any]:
    dep_id = _deployment_id(p.name)
    schedule = {"cron": p.schedule, "timezone": p.timezone, "day_or": True}
    return {
        "id": dep_id, "name": p.name.split("/", 1)[1], "flow_id": _name_uid("flow", _flow(p.name)), "version": "sim",
        "paused": p.paused, "tags": list(p.tags), "work_pool_name": p.work_pool, "work_queue_name": "default",
        "schedules": [{"id": _uid("schedule", p.name), "deployment_id": dep_id, "schedule": schedule,
                       "active": True, "max_scheduled_runs": None, "parameters": {}, "slug": None}],
        "parameters": {}, "status": "READY", "entrypoint": f"flows.py:{_flow(p.name)}",
    }  # fmt: skip


_SORT_KEYS: dict[str, tuple[Callable[[SimRun], Any], bool]] = {
    "ID_DESC": (lambda r: r.id, True),
    "START_TIME_ASC": (lambda r: r.started_at or r.scheduled_for, False),
    "START_TIME_DESC": (lambda r: r.started_at or r.scheduled_for, True),
    "EXPECTED_START_TIME_ASC": (lambda r: r.scheduled_for, False),
    "EXPECTED_START_TIME_DESC": (lambda r: r.scheduled_for, True),
    "END_TIME_DESC": (lambda r: (r.ended_at is not None, r.ended_at or r.scheduled_for), True),
}


def prefect_app(world: World, clock: Clock) -> web.Application:
    """The Prefect face of `world`; mount it with `add_subapp("/prefect/", ...)`."""
    face = _PrefectFace(world, clock)
    app = web.Application(middlewares=[face.middleware])
    app.router.add_get("/api/health", face.health)
    app.router.add_get("/api/admin/version", face.version)
    app.router.add_post("/api/flow_runs/filter", face.flow_runs)
    app.router.add_post("/api/task_runs/filter", face.task_runs)
    app.router.add_post("/api/flows/filter", face.flows)
    app.router.add_post("/api/deployments/filter", face.deployments)
    app.router.add_post("/api/work_pools/filter", face.work_pools)
    app.router.add_post("/api/work_pools/{name}/workers/filter", face.workers)
    return app
