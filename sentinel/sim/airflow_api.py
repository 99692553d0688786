"""The Airflow 3.3 REST API face of the simulator: the subset Sentinel's Airflow adapter reads.

Served as a sub-application (mounted under /airflow/), from `World` data, on the simulator's clock: the
HTTP `Date` header and every token expiry follow `clock.now()`, so a fast clock ages tokens and cursors
just as a real server's clock would. Shapes and quirks follow a real 3.3.2 server: `POST /auth/token`
answers 201, no token is 401 and a bad or expired one 403; list `limit` is capped at 100 silently;
`cursor` ("" for the first page) switches to keyset paging with `next_cursor` and a capped
`total_entries`; task instances refuse `order_by=updated_at` (400); bad dates and states are 422.

Change-feed queries (`updated_at_gte`/`_lte`) cost what changed inside their window: runs by bisecting the
world's change feed at both ends, task instances by a time index (`sim.timeindex`); the sorted rows of a
query are kept for its next pages, and a big window of an unchanged world is a slice of a per-version
table. Only a query without a time bound (the active set, read once by a starting adapter) walks all runs.
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
from aiohttp import web

from sentinel.clock import Clock, utc
from sentinel.model import RunState
from sentinel.sim.timeindex import TimeIndex
from sentinel.sim.world import SimRun, SimTask, World

__all__ = ["SIM_PASSWORD", "SIM_USERNAME", "airflow_app"]

SIM_USERNAME = "sentinel"
SIM_PASSWORD = "sim-demo-password"
VERSION = "3.3.2"
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
CURSOR_COUNT_LIMIT = 50_000  # Airflow 3.3 caps total_entries at this in cursor mode
TOKEN_VALIDITY = timedelta(hours=24)

_RUN_WORDS = {
    RunState.SCHEDULED: "queued",
    RunState.LATE: "queued",
    RunState.QUEUED: "queued",
    RunState.PAUSED: "queued",
    RunState.RUNNING: "running",
    RunState.RETRYING: "running",
    RunState.SUCCESS: "success",
    RunState.SKIPPED: "success",
    RunState.FAILED: "failed",
    RunState.CRASHED: "failed",
    RunState.CANCELLED: "failed",
    RunState.UNKNOWN: "running",
}
_TASK_WORDS: dict[RunState, str | None] = {
    RunState.SCHEDULED: None,  # created with its run, waiting for upstreams: Airflow shows no state
    RunState.LATE: None,
    RunState.PAUSED: None,
    RunState.UNKNOWN: None,
    RunState.QUEUED: "queued",
    RunState.RUNNING: "running",
    RunState.RETRYING: "up_for_retry",
    RunState.SUCCESS: "success",
    RunState.SKIPPED: "skipped",
    RunState.FAILED: "failed",
    RunState.CRASHED: "failed",
    RunState.CANCELLED: "upstream_failed",
}
_RUN_STATE_WORDS = ("queued", "running", "success", "failed")
_TASK_STATE_WORDS = frozenset(
    {"none", "scheduled", "queued", "running", "success", "failed", "up_for_retry", "up_for_reschedule",
     "upstream_failed", "skipped", "removed", "restarting", "deferred", "awaiting_input"}
)  # fmt: skip

_PAGING_PARAMS = frozenset({"cursor", "offset", "limit"})
_VIEWS_KEPT = 16  # queries whose sorted rows are kept: a few feeds, each paged by one client at a time

_Rows = tuple[list[Any], list[tuple[Any, ...]] | None]  # a query's rows, and their sort keys when known
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SortKey = Callable[[Any], tuple[Any, ...]]


class _ApiError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def airflow_app(world: World, clock: Clock) -> web.Application:
    face = _AirflowFace(world, clock)
    app = web.Application(middlewares=[face.middleware])
    app.router.add_get("/api/v2/version", face.version)
    app.router.add_post("/auth/token", face.token)
    app.router.add_get("/api/v2/monitor/health", face.health)
    app.router.add_get("/api/v2/dags", face.dags)
    app.router.add_get("/api/v2/dags/{dag_id}/dagRuns", face.dag_runs)
    app.router.add_get("/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", face.task_instances)
    app.router.add_get("/api/v2/importErrors", face.import_errors)
    return app


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else _iso_z(dt)


@functools.lru_cache(maxsize=1 << 17)
def _iso_z(dt: datetime) -> str:
    # Every row's times are formatted for its sort key and again for its JSON, page after page: once is enough.
    return utc(dt).isoformat().replace("+00:00", "Z")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _AirflowFace:
    def __init__(self, world: World, clock: Clock) -> None:
        self.world = world
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        self._dag_names: list[str] = []
        self._dag_count = -1
        self._last_beat: dict[str, datetime] = {}
        self._task_times = TimeIndex(world, "airflow", _task_instants)
        self._tables: dict[str, _Table] = {}
        self._views: OrderedDict[tuple[Any, ...], tuple[list[Any], list[tuple[Any, ...]]]] = OrderedDict()

    # ---------------------------------------------------------------------------------- plumbing

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if not self.world.health.api_up:
                raise _ApiError(503, "Service Unavailable")
            resp = await handler(request)
        except _ApiError as exc:
            resp = _json({"detail": exc.detail}, exc.status)
        except web.HTTPException as exc:
            resp = _json({"detail": exc.reason}, exc.status)
        # The simulator's clock, not the wall clock: adapters take "now" for their cursors from here.
        resp.headers["Date"] = format_datetime(utc(self.clock.now()), usegmt=True)
        return resp

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise _ApiError(401, "Not authenticated")
        if not self._valid(header.removeprefix("Bearer ").strip()):
            raise _ApiError(403, "Invalid JWT token")

    def _issue(self, user: str) -> str:
        now = int(utc(self.clock.now()).timestamp())
        header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
        claims = {"sub": user, "iat": now, "nbf": now, "exp": now + int(TOKEN_VALIDITY.total_seconds())}
        body = _b64(orjson.dumps(claims))
        sig = _b64(hmac.new(self._secret, f"{header}.{body}".encode(), hashlib.sha256).digest())
        return f"{header}.{body}.{sig}"

    def _valid(self, token: str) -> bool:
        try:
            header, body, sig = token.split(".")
            expected = _b64(hmac.new(self._secret, f"{header}.{body}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(sig, expected):
                return False
            return float(orjson.loads(_unb64(body))["exp"]) > utc(self.clock.now()).timestamp()
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return False

    # ------------------------------------------------------------------------------------- routes

    async def version(self, request: web.Request) -> web.Response:
        return _json({"version": VERSION, "git_version": "sentinel-simulator"})

    async def token(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                raise _ApiError(422, "invalid JSON body") from None
        else:
            body = dict(await request.post())
        if not isinstance(body, dict) or "username" not in body or "password" not in body:
            raise _ApiError(422, "username and password are required")
        if body["username"] != SIM_USERNAME or body["password"] != SIM_PASSWORD:
            raise _ApiError(401, "Invalid credentials")
        return _json({"access_token": self._issue(str(body["username"]))}, 201)

    async def health(self, request: web.Request) -> web.Response:
        h = self.world.health

        def part(name: str, alive: bool | None) -> dict[str, Any]:
            if alive is None:  # never deployed
                return {"status": None, f"latest_{name}_heartbeat": None}
            now = utc(self.clock.now())
            if alive:
                self._last_beat[name] = now
            beat = self._last_beat.get(name, now - timedelta(minutes=5))
            return {"status": "healthy" if alive else "unhealthy", f"latest_{name}_heartbeat": beat.isoformat()}

        return _json(
            {
                "metadatabase": {"status": "healthy"},
                "scheduler": part("scheduler", h.scheduler_alive),
                "triggerer": part("triggerer", h.triggerer_alive),
                "dag_processor": part("dag_processor", h.dag_processor_alive),
            }
        )

    async def dags(self, request: web.Request) -> web.Response:
        self._authorize(request)
        q = request.query
        names = self._airflow_dags()
        if q.get("order_by", "dag_id").startswith("-"):
            names = names[::-1]
        if (paused := q.get("paused")) is not None:
            want = paused.lower() == "true"
            names = [n for n in names if self.world.pipelines[n].paused == want]
        limit, offset = _limit(q), _int(q, "offset", 0)
        page = names[offset : offset + limit]
        return _json({"dags": [self._dag(n) for n in page], "total_entries": len(names)})

    async def dag_runs(self, request: web.Request) -> web.Response:
        self._authorize(request)
        q = request.query
        dag_id = request.match_info["dag_id"]
        states = q.getall("state", [])
        if bad := [s for s in states if s not in _RUN_STATE_WORDS]:
            raise _ApiError(422, f"Invalid value for state: {bad[0]}. Valid values are {', '.join(_RUN_STATE_WORDS)}")
        lo, hi = _range(q, "updated_at")
        self._known_dag(dag_id)

        def rows() -> _Rows:
            if (
                dag_id == "~"
                and lo is not None
                and not states
                and (hit := self._table("runs").window(lo, hi, order_by))
            ):
                return hit
            return [
                r for r in self._runs(dag_id, lo, hi)
                if _within(r.updated_at, lo, hi) and (not states or _RUN_WORDS[r.state] in states)
            ], None  # fmt: skip

        order_by = q.get("order_by", "id")
        sort = _run_sort(order_by)
        return self._page(request, rows, sort, "dag_runs", self._run)

    async def task_instances(self, request: web.Request) -> web.Response:
        self._authorize(request)
        q = request.query
        dag_id, run_id = request.match_info["dag_id"], request.match_info["run_id"]
        if run_id != "~" and dag_id == "~":
            raise _ApiError(400, "dag_id is required when dag_run_id is specified")
        states = [s.lower() for s in q.getall("state", [])]
        if bad := [s for s in states if s not in _TASK_STATE_WORDS]:
            raise _ApiError(422, f"Invalid value for state: {bad[0]}")
        lo, hi = _range(q, "updated_at")
        if run_id != "~":
            run = self.world.runs.get(run_id)
            if run is None or run.pipeline != dag_id:
                raise _ApiError(404, f"DagRun with dag_id: `{dag_id}` and run_id: `{run_id}` was not found")
        else:
            self._known_dag(dag_id)
        task_id = q.get("task_id")
        order_by = q.get("order_by", "map_index")

        def rows() -> _Rows:
            runs: Iterable[SimRun]
            if run_id != "~":
                runs = [self.world.runs[run_id]]
            elif dag_id == "~" and lo is not None:
                # Tasks whose time is in the window, of runs changed since `lo`: found by bisection, not by
                # walking everything that changed after `lo` (a catch-up reads thousands of windows).
                if not states and task_id is None and (hit := self._table("tasks").window(lo, hi, order_by)):
                    return hit
                return self._tasks_within(lo, hi, states, task_id), None
            else:
                # A task change always touches its run, so runs changed since `lo` hold every task changed since.
                runs = self._runs(dag_id, lo, None)
            return [
                (run, t) for run in runs for t in run.tasks
                if _within(t.updated_at or run.queued_at or run.scheduled_for, lo, hi)
                and (not states or (_TASK_WORDS[t.state] or "none") in states)
                and (task_id is None or t.task == task_id)
            ], None  # fmt: skip

        sort = _task_sort(order_by)
        return self._page(request, rows, sort, "task_instances", lambda rt: self._task(*rt))

    async def import_errors(self, request: web.Request) -> web.Response:
        self._authorize(request)
        q = request.query
        errors = list(enumerate(self.world.import_errors, start=1))
        limit, offset = _limit(q), _int(q, "offset", 0)
        return _json(
            {
                "import_errors": [
                    {
                        "import_error_id": i,
                        "timestamp": _ts(e.timestamp),
                        "filename": e.filename,
                        "bundle_name": "dags-folder",
                        "stack_trace": e.message,
                    }
                    for i, e in errors[offset : offset + limit]
                ],
                "total_entries": len(errors),
            }
        )

    # ------------------------------------------------------------------------------------ helpers

    def _airflow_dags(self) -> list[str]:
        # Sorting 10,000 names on every page would dominate a benchmark; pipelines are only ever added.
        if len(self.world.pipelines) != self._dag_count:
            self._dag_count = len(self.world.pipelines)
            self._dag_names = sorted(n for n, p in self.world.pipelines.items() if p.system == "airflow")
        return self._dag_names

    def _tasks_within(
        self, lo: datetime, hi: datetime | None, states: list[str], task_id: str | None
    ) -> list[tuple[SimRun, SimTask]]:
        """What the general filter in `task_instances` keeps for dag "~" and run "~", from the time index.

        The index is current when read, so an entry's instant is its task's filtered time; a run the
        history bound dropped is skipped.
        """
        runs = self.world.runs
        out: list[tuple[SimRun, SimTask]] = []
        for _, rid, k in self._task_times.entries(lo, hi):
            run = runs.get(rid)
            if run is None or run.updated_at < lo:
                continue
            t = run.tasks[k]
            if (not states or (_TASK_WORDS[t.state] or "none") in states) and (task_id is None or t.task == task_id):
                out.append((run, t))
        return out

    def _table(self, feed: str) -> _Table:
        ident = (self.world.version, len(self.world.runs))
        table = self._tables.get(feed)
        if table is None or table.ident != ident:
            if feed == "tasks":
                table = _Table(
                    ident, lambda lo, hi: len(self._task_times.entries(lo, hi)), self._load_tasks, _task_sort
                )
            else:
                table = _Table(
                    ident, lambda lo, hi: len(self.world.changed_between("airflow", lo, hi)), self._load_runs, _run_sort
                )
            self._tables[feed] = table
        return table

    def _load_tasks(self) -> tuple[list[datetime], list[Any]] | None:
        # Only if every task's time is at or before its run's last change (the dynamics stamp both at once):
        # then "task in the window" implies "run changed since `lo`", which the general filter also asks.
        runs = self.world.runs
        times: list[datetime] = []
        rows: list[Any] = []
        for at, rid, k in self._task_times.entries(None, None):
            run = runs.get(rid)
            if run is None:
                continue
            if at > run.updated_at:
                return None
            times.append(at)
            rows.append((run, run.tasks[k]))
        return times, rows

    def _load_runs(self) -> tuple[list[datetime], list[Any]] | None:
        runs = self.world.changed_between("airflow", None, None)
        return [r.updated_at for r in runs], list(runs)

    def _known_dag(self, dag_id: str) -> None:
        if dag_id != "~":
            pipeline = self.world.pipelines.get(dag_id)
            if pipeline is None or pipeline.system != "airflow":
                raise _ApiError(404, f"The Dag with ID: `{dag_id}` was not found")

    def _runs(self, dag_id: str, lo: datetime | None, hi: datetime | None) -> Iterable[SimRun]:
        if dag_id != "~":
            self._known_dag(dag_id)
            return self.world.runs_of(dag_id)
        if lo is not None:  # a run's updated_at is its last change, so the feed window is exactly the rows
            return self.world.changed_between("airflow", lo, hi)
        return [r for r in self.world.runs.values() if r.system == "airflow"]

    def _view(
        self, request: web.Request, build: Callable[[], _Rows], sort: tuple[SortKey, bool]
    ) -> tuple[list[Any], list[tuple[Any, ...]]]:
        """The sorted rows of one query and their sort keys, shared by every page of it.

        A client follows a window's `next_cursor` page after page; filtering and sorting the whole window
        for each would make reading it cost its size times its page count. Any change to the world
        (a touch, or a run dropped by the history bound) makes a new view.
        """
        params = tuple(sorted((k, v) for k, v in request.query.items() if k not in _PAGING_PARAMS))
        ident = (request.path, params, self.world.version, len(self.world.runs))
        hit = self._views.get(ident)
        if hit is not None:
            self._views.move_to_end(ident)
            return hit
        key, desc = sort
        rows, keys = build()
        if keys is None:
            keys = list(map(key, rows))  # each key once: building them is most of a big window's cost
        order = sorted(range(len(rows)), key=keys.__getitem__, reverse=desc)
        view = [rows[i] for i in order], [keys[i] for i in order]
        self._views[ident] = view
        if len(self._views) > _VIEWS_KEPT:
            self._views.popitem(last=False)
        return view

    def _page(
        self,
        request: web.Request,
        build: Callable[[], _Rows],
        sort: tuple[SortKey, bool],
        field: str,
        render: Callable[[Any], Any],
    ) -> web.Response:
        q = request.query
        limit = _limit(q)
        if "cursor" not in q:
            offset = _int(q, "offset", 0)
            rows, _ = self._view(request, build, sort)
            return _json(
                {
                    field: [render(r) for r in rows[offset : offset + limit]],
                    "total_entries": len(rows),
                    "total_entries_limit": None,
                    "next_cursor": None,
                    "previous_cursor": None,
                }
            )
        after: tuple[Any, ...] | None = None
        if q["cursor"]:
            try:
                after = tuple(orjson.loads(_unb64(q["cursor"])))
            except (ValueError, orjson.JSONDecodeError):
                raise _ApiError(400, "Invalid cursor token") from None
        rows, keys = self._view(request, build, sort)
        total = min(len(rows), CURSOR_COUNT_LIMIT)
        key, desc = sort
        first = 0
        if after is not None:
            # Sorted, so the rows past the cursor are a suffix: find where it starts by bisection.
            if desc:
                cut = after
                first = bisect.bisect_left(range(len(keys)), True, key=lambda i: keys[i] < cut)
            else:
                first = bisect.bisect_right(keys, after)
        page = rows[first : first + limit]
        more = len(rows) - first > limit
        return _json(
            {
                field: [render(r) for r in page],
                "total_entries": total,
                "total_entries_limit": CURSOR_COUNT_LIMIT,
                "next_cursor": _b64(orjson.dumps(list(key(page[-1])))) if more and page else None,
                "previous_cursor": None,
            }
        )

    def _dag(self, name: str) -> dict[str, Any]:
        p = self.world.pipelines[name]
        nxt = None
        if self.world.dynamics is not None:
            from sentinel.sim.dynamics import next_due

            nxt = next_due(self.world, name)
        return {
            "dag_id": name,
            "dag_display_name": name,
            "is_paused": p.paused,
            "is_stale": False,
            "bundle_name": "dags-folder",
            "relative_fileloc": f"{name}.py",
            "timetable_summary": p.schedule or None,
            "timetable_description": f"{p.schedule} ({p.timezone})" if p.schedule else "Never, external triggers only",
            "tags": [{"name": t, "dag_id": name, "dag_display_name": name} for t in p.tags],
            "max_active_runs": 16,
            "has_import_errors": False,
            "next_dagrun_logical_date": _ts(nxt),
            "next_dagrun_run_after": _ts(nxt),
            "owners": ["airflow"],
        }

    def _run(self, r: SimRun) -> dict[str, Any]:
        scheduled = r.run_type == "scheduled"
        duration = (r.ended_at - r.started_at).total_seconds() if r.started_at and r.ended_at else None
        return {
            "dag_run_id": r.id,
            "dag_id": r.pipeline,
            "logical_date": _ts(r.scheduled_for) if scheduled else None,  # manual runs have none in Airflow 3
            "queued_at": _ts(r.queued_at),
            "start_date": _ts(r.started_at),
            "end_date": _ts(r.ended_at),
            "duration": duration,
            "data_interval_start": _ts(r.scheduled_for) if scheduled else None,
            "data_interval_end": _ts(r.scheduled_for) if scheduled else None,
            "run_after": _ts(r.scheduled_for),
            "last_scheduling_decision": _ts(r.updated_at),
            "run_type": r.run_type,
            "state": _RUN_WORDS[r.state],
            "triggered_by": "timetable" if scheduled else "rest_api",
            "triggering_user_name": None if scheduled else SIM_USERNAME,
            "conf": {},
            "note": r.message,
            "dag_versions": [{"id": f"{r.pipeline}-v1", "version_number": 1, "dag_id": r.pipeline}],
            "bundle_version": None,
            "dag_display_name": r.pipeline,
            "partition_key": None,
            "partition_date": None,
        }

    def _task(self, run: SimRun, t: SimTask) -> dict[str, Any]:
        duration = (t.ended_at - t.started_at).total_seconds() if t.started_at and t.ended_at else None
        return {
            "id": _task_id(run, t),
            "task_id": t.task,
            "dag_id": run.pipeline,
            "dag_run_id": run.id,
            "map_index": -1,
            "logical_date": _ts(run.scheduled_for) if run.run_type == "scheduled" else None,
            "run_after": _ts(run.scheduled_for),
            "start_date": _ts(t.started_at),
            "end_date": _ts(t.ended_at),
            "duration": duration,
            "state": _TASK_WORDS[t.state],
            "try_number": t.try_number,
            "max_tries": t.max_tries,
            "task_display_name": t.task,
            "dag_display_name": run.pipeline,
            "pool": t.pool,
            "pool_slots": 1,
            "queue": "default",
            "operator": "PythonOperator",
            "queued_when": None,
            "scheduled_when": None,
            "note": None,
            "rendered_map_index": None,
        }


class _Table:
    """A feed's rows by their filtered time, with sort keys, for one version of the world.

    A catch-up reads its history as windows halved until they fit a page, and starts that descent again
    every poll cycle: each big window's rows would be built and keyed again. In a table a window is a
    slice. `load` gives (times, rows) in time order, or None when a slice would not be exactly what the
    general filter keeps; `window` answers None then, and for windows small enough to build directly
    (a live world changes too often for a table to outlive a request).
    """

    MIN_ROWS = 2_000

    def __init__(
        self,
        ident: tuple[int, int],
        count: Callable[[datetime, datetime | None], int],
        load: Callable[[], tuple[list[datetime], list[Any]] | None],
        sorter: Callable[[str], tuple[SortKey, bool]],
    ) -> None:
        self.ident = ident
        self._count = count
        self._load = load
        self._sorter = sorter
        self._built = False
        self._times: list[datetime] = []
        self._rows: list[Any] | None = None
        self._keys: dict[str, list[tuple[Any, ...]]] = {}

    def window(self, lo: datetime, hi: datetime | None, order_by: str) -> _Rows | None:
        if not self._built:
            if self._count(lo, hi) < self.MIN_ROWS:
                return None
            self._built = True
            loaded = self._load()
            if loaded is not None:
                self._times, self._rows = loaded
        if self._rows is None:
            return None
        start = bisect.bisect_left(self._times, lo)
        stop = len(self._times) if hi is None else bisect.bisect_right(self._times, hi)
        if stop - start < self.MIN_ROWS:
            return None
        keys = self._keys.get(order_by)
        if keys is None:
            key, _ = self._sorter(order_by)
            keys = self._keys[order_by] = list(map(key, self._rows))
        return self._rows[start:stop], keys[start:stop]


def _task_instants(run: SimRun) -> tuple[datetime, ...]:
    """What `task_instances` filters `updated_at` on, per task of `run`."""
    return tuple(t.updated_at or run.queued_at or run.scheduled_for for t in run.tasks)


def _task_id(run: SimRun, t: SimTask) -> str:
    return t.id or f"{run.id}.{t.task}"


def _run_sort(order_by: str) -> tuple[SortKey, bool]:
    desc, name = order_by.startswith("-"), order_by.lstrip("-")
    # Ties break on the run id, as Airflow's keyset cursor breaks them on the primary key.
    keys: dict[str, SortKey] = {
        "id": lambda r: (_ts(r.queued_at or r.scheduled_for), r.id),
        "updated_at": lambda r: (_ts(r.updated_at), r.seq, r.id),
        "run_after": lambda r: (_ts(r.scheduled_for), r.id),
        "logical_date": lambda r: (_ts(r.scheduled_for), r.id),
        "start_date": lambda r: (_ts(r.started_at) or "", r.id),
        "end_date": lambda r: (_ts(r.ended_at) or "", r.id),
        "dag_run_id": lambda r: (r.id,),
        "dag_id": lambda r: (r.pipeline, r.id),
        "state": lambda r: (_RUN_WORDS[r.state], r.id),
    }
    if name not in keys:
        raise _ApiError(400, f"Ordering with '{name}' is disallowed or the attribute does not exist on the model")
    return keys[name], desc


def _task_sort(order_by: str) -> tuple[SortKey, bool]:
    desc, name = order_by.startswith("-"), order_by.lstrip("-")
    keys: dict[str, SortKey] = {
        "id": lambda rt: (_task_id(*rt),),
        "map_index": lambda rt: (-1, _task_id(*rt)),
        "start_date": lambda rt: (_ts(rt[1].started_at) or "", _task_id(*rt)),
        "end_date": lambda rt: (_ts(rt[1].ended_at) or "", _task_id(*rt)),
        "state": lambda rt: (_TASK_WORDS[rt[1].state] or "", _task_id(*rt)),
    }
    if name not in keys:  # updated_at included: a real 3.3 server refuses it here too
        raise _ApiError(400, f"Ordering with '{name}' is disallowed or the attribute does not exist on the model")
    return keys[name], desc


def _int(q: Any, name: str, default: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ApiError(422, f"{name}: Input should be a valid integer") from None
    if value < 0:
        raise _ApiError(422, f"{name}: Input should be greater than or equal to 0")
    return value


def _limit(q: Any) -> int:
    return min(_int(q, "limit", DEFAULT_LIMIT), MAX_LIMIT)


def _range(q: Any, name: str) -> tuple[datetime | None, datetime | None]:
    """The [lo, hi] bound from name_gte/_gt and name_lte/_lt (strict bounds nudged by a microsecond)."""
    tick = timedelta(microseconds=1)
    lo = _time(q, f"{name}_gte")
    if (gt := _time(q, f"{name}_gt")) is not None:
        lo = max(lo, gt + tick) if lo else gt + tick
    hi = _time(q, f"{name}_lte")
    if (lt := _time(q, f"{name}_lt")) is not None:
        hi = min(hi, lt - tick) if hi else lt - tick
    return lo, hi


def _time(q: Any, name: str) -> datetime | None:
    raw = q.get(name)
    if raw is None:
        return None
    try:
        # An unencoded '+' in a query string arrives as a space.
        return utc(datetime.fromisoformat(raw.replace(" ", "+")))
    except ValueError:
        raise _ApiError(422, f"{name}: Input should be a valid datetime") from None


def _within(t: datetime | None, lo: datetime | None, hi: datetime | None) -> bool:
    if t is None:
        return lo is None and hi is None
    return (lo is None or t >= lo) and (hi is None or t <= hi)
