"""The Airflow adapter against an httpx.MockTransport fake and against the simulator's Airflow face.

The fake answers with the shapes of real Airflow 3.3.2 / 2.10.5 responses (recorded in
/work/shared/api-samples, copied here so the tests stand alone) and with the quirks measured on real
servers: v1 rejects unknown query parameters with 400, v2 refuses `order_by=updated_at` for task
instances, v2 pages by cursor only when `cursor` is sent, list responses never carry `updated_at`.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from loguru import logger

from adapters.airflow import ASSET_PAGES, ASSETS_EVERY, IMPORT_ERRORS_EVERY, AirflowAdapter
from adapters.airflow_auth import jwt_validity
from adapters.airflow_states import RUN_STATES, TASK_STATES, fold_mapped, run_state, task_state
from adapters.http import PoliteClient
from sentinel.clock import FrozenClock
from sentinel.model import PollResult, RunState, SourceSpec, TaskUpdate
from sentinel.sim.airflow_api import SIM_PASSWORD, SIM_USERNAME, airflow_app
from sentinel.sim.dynamics import fail_next_run
from sentinel.sim.world import SimPipeline, World

T0 = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
PASSWORD = "s3cret-pw"
RUN_ID = "manual__2026-11-26T13:16:47.960361+00:00"

# ------------------------------------------------------------------------------ recorded shapes

V3_RUN = {
    "dag_run_id": RUN_ID, "dag_id": "demo_fail", "logical_date": None,
    "queued_at": "2026-11-26T13:16:47.971945Z", "start_date": "2026-11-26T13:16:48.454696Z",
    "end_date": "2026-11-26T13:16:58.822614Z", "duration": 10.367918, "data_interval_start": None,
    "data_interval_end": None, "run_after": "2026-11-26T13:16:47.960361Z",
    "last_scheduling_decision": "2026-11-26T13:16:58.819576Z", "run_type": "manual", "state": "failed",
    "triggered_by": "rest_api", "triggering_user_name": "admin", "conf": {}, "note": None,
    "dag_versions": [{"id": "01a217ff-b82b-7dbf-a8cc-e71b368e3a6f", "version_number": 1, "dag_id": "demo_fail",
                      "bundle_name": "dags-folder", "bundle_version": None, "created_at": "2026-11-26T13:16:04.523610Z",
                      "dag_display_name": "demo_fail", "bundle_url": None}],
    "bundle_version": None, "dag_display_name": "demo_fail", "partition_key": None, "partition_date": None,
}  # fmt: skip
V2_RUN = {
    "conf": {}, "dag_id": "demo_fail", "dag_run_id": "manual__2026-11-26T13:32:37.956104+00:00",
    "data_interval_end": "2026-11-26T13:32:37.956104+00:00", "data_interval_start": "2026-11-26T13:32:37.956104+00:00",
    "end_date": "2026-11-26T13:32:47.881985+00:00", "execution_date": "2026-11-26T13:32:37.956104+00:00",
    "external_trigger": True, "last_scheduling_decision": "2026-11-26T13:32:47.879723+00:00",
    "logical_date": "2026-11-26T13:32:37.956104+00:00", "note": None, "run_type": "manual",
    "start_date": "2026-11-26T13:32:38.705875+00:00", "state": "failed",
}  # fmt: skip
V3_TI = {
    "id": "01a21800-61f0-7f02-99fe-05c8af70113e", "task_id": "explode", "dag_id": "demo_fail",
    "dag_run_id": RUN_ID, "map_index": -1, "logical_date": None, "run_after": "2026-11-26T13:16:47.960361Z",
    "start_date": "2026-11-26T13:16:51.935975Z", "end_date": "2026-11-26T13:16:57.764659Z", "duration": 5.829,
    "state": "failed", "try_number": 1, "max_tries": 0, "task_display_name": "explode",
    "dag_display_name": "demo_fail", "hostname": "vm", "unixname": "root", "pool": "default_pool",
    "pool_slots": 1, "queue": "default", "priority_weight": 2, "operator": "BashOperator",
    "operator_name": "BashOperator", "queued_when": "2026-11-26T13:16:51.839595Z",
    "scheduled_when": "2026-11-26T13:16:51.757443Z", "pid": 25167, "executor": None, "executor_config": "{}",
    "note": None, "rendered_map_index": None, "rendered_fields": {"bash_command": "exit 1"}, "trigger": None,
    "triggerer_job": None, "dag_version": {"id": "01a217ff", "version_number": 1, "dag_id": "demo_fail"},
}  # fmt: skip
V2_TI = {
    "dag_id": "demo_fail", "dag_run_id": "manual__2026-11-26T13:31:11.831118+00:00", "duration": 0.484405,
    "end_date": "2026-11-26T13:31:19.880853+00:00", "execution_date": "2026-11-26T13:31:11.831118+00:00",
    "executor": None, "executor_config": "{}", "hostname": "vm", "map_index": -1, "max_tries": 0, "note": None,
    "operator": "BashOperator", "pid": 10461, "pool": "default_pool", "pool_slots": 1, "priority_weight": 2,
    "queue": "default", "queued_when": "2026-11-26T13:31:16.070344+00:00", "rendered_fields": {},
    "rendered_map_index": None, "sla_miss": None, "start_date": "2026-11-26T13:31:19.396448+00:00",
    "state": "failed", "task_display_name": "explode", "task_id": "explode", "trigger": None,
    "triggerer_job": None, "try_number": 1, "unixname": "root",
}  # fmt: skip
V3_DAG = {
    "dag_id": "demo_every_2min", "dag_display_name": "demo_every_2min", "is_paused": False, "is_stale": False,
    "last_parsed_time": "2026-11-26T13:17:07.046787Z", "bundle_name": "dags-folder", "relative_fileloc": "demo_ok.py",
    "timetable_summary": "*/2 * * * *", "timetable_description": "Every 2 minutes",
    "tags": [{"name": "demo", "dag_id": "demo_every_2min", "dag_display_name": "demo_every_2min"}],
    "max_active_runs": 16, "has_import_errors": False, "next_dagrun_logical_date": "2026-11-26T13:18:00Z",
    "next_dagrun_run_after": "2026-11-26T13:18:00Z", "owners": ["airflow"], "is_backfillable": True,
}  # fmt: skip
V2_DAG = {
    "dag_display_name": "demo_every_2min", "dag_id": "demo_every_2min", "default_view": "grid", "is_active": True,
    "is_paused": False, "is_subdag": False, "next_dagrun": "2026-11-26T13:30:00+00:00",
    "next_dagrun_create_after": "2026-11-26T13:32:00+00:00", "owners": ["airflow"],
    "schedule_interval": {"__type": "CronExpression", "value": "*/2 * * * *"}, "tags": [{"name": "demo"}],
    "timetable_description": "Every 2 minutes",
}  # fmt: skip
V3_HEALTH = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-11-26T13:17:13.347739+00:00"},
    "triggerer": {"status": None, "latest_triggerer_heartbeat": None},
    "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-11-26T13:17:11.150979+00:00"},
}
V2_HEALTH = {
    "dag_processor": {"latest_dag_processor_heartbeat": None, "status": None},
    "metadatabase": {"status": "healthy"},
    "scheduler": {"latest_scheduler_heartbeat": "2026-11-26T13:31:10.960138+00:00", "status": "unhealthy"},
    "triggerer": {"latest_triggerer_heartbeat": None, "status": None},
}
IMPORT_ERROR = {
    "import_error_id": 1, "timestamp": "2026-11-26T13:17:07.125299Z", "filename": "demo_broken.py",
    "bundle_name": "dags-folder", "stack_trace": "Traceback ...\nModuleNotFoundError: No module named 'x'\n",
}  # fmt: skip

# v1 (connexion) rejects any query parameter its spec does not list; these are the ones it lists.
V1_PARAMS = {
    "dagRuns": {"updated_at_gte", "updated_at_lte", "order_by", "limit", "offset", "state"},
    "taskInstances": {"updated_at_gte", "updated_at_lte", "limit", "offset", "state"},
    "listMapped": {"limit", "offset", "order_by", "state"},
    "dags": {"limit", "offset", "order_by"},
    "importErrors": {"limit", "offset", "order_by"},
    "datasets": {"limit", "offset", "order_by", "uri_pattern", "dag_ids"},
}


def _jwt(iat: datetime, validity: timedelta, n: int) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(d)).decode().rstrip("=")

    exp = iat + validity
    return f"{b64({'alg': 'HS512'})}.{b64({'sub': 'x', 'iat': int(iat.timestamp()), 'exp': int(exp.timestamp())})}.s{n}"


def _ts(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


class FakeAirflow:
    """A scriptable Airflow behind httpx.MockTransport. Rows carry a hidden `_updated` the API never shows."""

    def __init__(self, clock: FrozenClock, major: int = 3, keyset: bool = True) -> None:
        self.clock = clock
        self.major = major
        self.keyset = keyset and major == 3
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.tis: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        self.dags: list[dict[str, Any]] = [copy.deepcopy(V3_DAG if major == 3 else V2_DAG)]
        self.import_errors: list[dict[str, Any]] = []
        self.assets: list[dict[str, Any]] = []
        self.health = copy.deepcopy(V3_HEALTH if major == 3 else V2_HEALTH)
        self.requests: list[httpx.Request] = []
        self.tokens: set[str] = set()
        self.token_validity = timedelta(hours=24)
        self.faults: dict[str, list[Callable[[httpx.Request], httpx.Response]]] = {}
        self.send_date = True

    @property
    def prefix(self) -> str:
        return "/api/v2" if self.major == 3 else "/api/v1"

    # -- seeding
    def add_run(self, dag: str, run_id: str, state: str | None, updated: datetime, **extra: Any) -> None:
        base = copy.deepcopy(V3_RUN if self.major == 3 else V2_RUN)
        base.update(dag_id=dag, dag_run_id=run_id, state=state, _updated=updated, **extra)
        self.runs[(dag, run_id)] = base

    def add_ti(
        self, dag: str, run_id: str, task: str, state: str | None, updated: datetime, map_index: int = -1, **extra: Any
    ) -> None:
        base = copy.deepcopy(V3_TI if self.major == 3 else V2_TI)
        base.update(dag_id=dag, dag_run_id=run_id, task_id=task, state=state, map_index=map_index, _updated=updated)
        base.update(id=f"{dag}|{run_id}|{task}|{map_index}", **extra)
        self.tis[(dag, run_id, task, map_index)] = base

    def add_asset(self, uri: str, producers: list[tuple[str, str]], consumers: list[str]) -> None:
        """An asset (Airflow 3) or dataset (Airflow 2) in the shape each version returns."""
        stamp = {"created_at": "2026-11-26T13:00:00Z", "updated_at": "2026-11-26T13:00:00Z"}
        tasks = [{"dag_id": d, "task_id": t, **stamp} for d, t in producers]
        dags = [{"dag_id": d, **stamp} for d in consumers]
        row: dict[str, Any] = {"id": len(self.assets) + 1, "uri": uri, "extra": {}, "producing_tasks": tasks, **stamp}
        if self.major == 3:
            row.update(name=uri, group="asset", scheduled_dags=dags, consuming_tasks=[], aliases=[], watchers=[])
            row.update(last_asset_event=None)
        else:
            row.update(consuming_dags=dags)
        self.assets.append(row)

    def fail(self, path_part: str, response: Callable[[httpx.Request], httpx.Response], times: int = 1) -> None:
        self.faults.setdefault(path_part, []).extend([response] * times)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    # -- transport
    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for part, queue in self.faults.items():
            if queue and part in request.url.path:
                return self._dated(queue.pop(0)(request))
        return self._dated(self._route(request))

    def _dated(self, resp: httpx.Response) -> httpx.Response:
        if self.send_date:
            resp.headers["Date"] = format_datetime(self.clock.now(), usegmt=True)
        return resp

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v2/version":
            if self.major == 2:
                return httpx.Response(404, text="<html><h1>Airflow 404</h1></html>")
            return httpx.Response(200, json={"version": "3.3.2", "git_version": ".release:aa19d2db"})
        if path == "/api/v1/version":
            if self.major == 3:
                return httpx.Response(404, json={"error": "/api/v1 has been removed in Airflow 3"})
            return httpx.Response(200, json={"git_version": ".release:b93c3db6", "version": "2.10.5"})
        if path == "/auth/token" and self.major == 3:
            body = orjson.loads(request.content)
            if body != {"username": "sentinel", "password": PASSWORD}:
                return httpx.Response(401, json={"detail": "Invalid credentials"})
            token = _jwt(self.clock.now(), self.token_validity, len(self.tokens))
            self.tokens.add(token)
            return httpx.Response(201, json={"access_token": token})
        if path in ("/api/v2/monitor/health", "/api/v1/health"):
            return httpx.Response(200, json=self.health)
        if denied := self._auth(request):
            return denied
        endpoint = path.rsplit("/", 1)[-1]
        if self.major == 2 and (extra := set(request.url.params) - V1_PARAMS.get(endpoint, set())):
            return httpx.Response(
                400, json={"detail": f"Extra query parameter(s) {','.join(sorted(extra))} not in spec"}
            )
        if path == f"{self.prefix}/dags/~/dagRuns":
            return self._list(request, "dag_runs", list(self.runs.values()), id_key="dag_run_id")
        if path == f"{self.prefix}/dags/~/dagRuns/~/taskInstances":
            if request.url.params.get("order_by", "").lstrip("-") == "updated_at":
                return httpx.Response(400, json={"detail": "Ordering with 'updated_at' is disallowed"})
            return self._list(request, "task_instances", list(self.tis.values()), id_key="id")
        if endpoint == "listMapped":
            _, dag, _, run, _, task, _ = path.removeprefix(self.prefix + "/").split("/")
            rows = [t for (d, r, k, m), t in self.tis.items() if (d, r, k) == (dag, run, task) and m >= 0]
            return self._list(request, "task_instances", rows, id_key="id")
        if path == f"{self.prefix}/dags":
            return self._list(request, "dags", self.dags, id_key="dag_id")
        if path == f"{self.prefix}/importErrors":
            return self._list(request, "import_errors", self.import_errors, id_key="import_error_id")
        if path == "/api/v2/assets" and self.major == 3:
            return self._list(request, "assets", self.assets, id_key="id")
        if path == "/api/v1/datasets" and self.major == 2:
            return self._list(request, "datasets", self.assets, id_key="id")
        return httpx.Response(404, json={"detail": "Not Found"})

    def _auth(self, request: httpx.Request) -> httpx.Response | None:
        header = request.headers.get("Authorization", "")
        if self.major == 2:
            good = "Basic " + base64.b64encode(f"sentinel:{PASSWORD}".encode()).decode()
            return None if header == good else httpx.Response(401, json={"title": "Unauthorized", "status": 401})
        if not header.startswith("Bearer "):
            return httpx.Response(401, json={"detail": "Not authenticated"})
        if header.removeprefix("Bearer ") not in self.tokens:
            return httpx.Response(403, json={"detail": "Invalid JWT token"})
        return None

    def _list(self, request: httpx.Request, field: str, rows: list[dict[str, Any]], id_key: str) -> httpx.Response:
        p = request.url.params
        lo, hi = p.get("updated_at_gte"), p.get("updated_at_lte")
        states = p.get_list("state")
        out = [
            r for r in rows
            if (lo is None or r["_updated"] >= datetime.fromisoformat(lo))
            and (hi is None or r["_updated"] <= datetime.fromisoformat(hi))
            and (not states or r.get("state") in states)
        ]  # fmt: skip
        order = p.get("order_by", id_key).lstrip("-")
        out.sort(key=lambda r: (r["_updated"], str(r[id_key])) if order == "updated_at" else (str(r.get(id_key)),))
        limit = min(int(p.get("limit", 50)), 100)
        body: dict[str, Any]
        if self.keyset and "cursor" in p:
            start = int(p["cursor"] or 0)
            page = out[start : start + limit]
            nxt = str(start + limit) if start + limit < len(out) else None
            body = {"total_entries": len(out), "total_entries_limit": 50000, "next_cursor": nxt}
        else:
            offset = int(p.get("offset", 0))
            page = out[offset : offset + limit]
            body = {"total_entries": len(out)}
            if self.major == 3:
                body.update(total_entries_limit=None, next_cursor=None, previous_cursor=None)
        body[field] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in page]
        return httpx.Response(200, json=body)


# ---------------------------------------------------------------------------------------- fixtures


class Harness:
    def __init__(self, major: int = 3, keyset: bool = True, **spec_kw: Any) -> None:
        self.clock = FrozenClock(T0)
        self.fake = FakeAirflow(self.clock, major, keyset)
        self.outcomes: Counter[str] = Counter()
        kw: dict[str, Any] = {
            "name": "af", "kind": "airflow", "url": "http://airflow.test", "username": "sentinel",
            "password": PASSWORD, "overlap": "60s", "max_requests_per_second": 100, "burst": 100,
        }  # fmt: skip
        kw.update(spec_kw)
        self.spec = SourceSpec(**kw)
        self.client = PoliteClient(
            self.spec,
            transport=httpx.MockTransport(self.fake.handler),
            on_request=lambda outcome, _s: self.outcomes.update([outcome]),
        )
        self.adapter = AirflowAdapter(self.spec, self.clock, self.client)
        self.cursor: dict[str, Any] = {}

    async def poll(self, advance: float = 15) -> PollResult:
        result = await self.adapter.poll(self.cursor)
        self.cursor = result.cursor
        self.clock.advance(advance)
        return result


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message} {exception}")
    yield lines
    logger.remove(sink)


def seconds_ago(s: float, clock: FrozenClock) -> datetime:
    return clock.now() - timedelta(seconds=s)


# ---------------------------------------------------------------------------------------- states


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, RunState.SCHEDULED), ("queued", RunState.QUEUED), ("running", RunState.RUNNING),
     ("success", RunState.SUCCESS), ("failed", RunState.FAILED), ("FAILED", RunState.FAILED),
     ("paused_forever", RunState.UNKNOWN)],
)  # fmt: skip
def test_dag_run_states(raw: str | None, expected: RunState) -> None:
    unknown = []
    assert run_state(raw, lambda: unknown.append(raw)) is expected
    assert bool(unknown) == (expected is RunState.UNKNOWN)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, RunState.SCHEDULED), ("none", RunState.SCHEDULED), ("scheduled", RunState.SCHEDULED),
     ("queued", RunState.QUEUED), ("running", RunState.RUNNING), ("success", RunState.SUCCESS),
     ("failed", RunState.FAILED), ("up_for_retry", RunState.RETRYING), ("up_for_reschedule", RunState.RUNNING),
     ("deferred", RunState.RUNNING), ("awaiting_input", RunState.RUNNING), ("restarting", RunState.QUEUED),
     ("upstream_failed", RunState.SKIPPED), ("skipped", RunState.SKIPPED), ("removed", RunState.SKIPPED),
     ("shutdown", RunState.CANCELLED), ("teleported", RunState.UNKNOWN)],
)  # fmt: skip
def test_task_states(raw: str | None, expected: RunState) -> None:
    unknown = []
    assert task_state(raw, lambda: unknown.append(raw)) is expected
    assert bool(unknown) == (expected is RunState.UNKNOWN)


def test_upstream_failed_is_not_a_failure_to_page_on() -> None:
    # One root cause must page once: the failed task and the failed run say it; the tasks behind it do not.
    assert not TASK_STATES["upstream_failed"].failure and TASK_STATES["upstream_failed"].terminal
    assert all(isinstance(v, RunState) for v in (*RUN_STATES.values(), *TASK_STATES.values()))


def _ti(state: RunState, start: int | None, end: int | None, tries: int = 1) -> TaskUpdate:
    at = lambda s: None if s is None else T0 + timedelta(seconds=s)  # noqa: E731
    return TaskUpdate(source="af", pipeline="p", run_id="r", task="fan", state=state, raw_state=state.value,
                      try_number=tries, started_at=at(start), ended_at=at(end))  # fmt: skip


def test_mapped_instances_fold_into_one_task() -> None:
    folded = fold_mapped([_ti(RunState.SUCCESS, 0, 5), _ti(RunState.FAILED, 1, 9, 2), _ti(RunState.SUCCESS, 2, 4)])
    assert (folded.state, folded.map_count, folded.try_number) == (RunState.FAILED, 3, 2)
    assert folded.started_at == T0 and folded.ended_at == T0 + timedelta(seconds=9)
    running = fold_mapped([_ti(RunState.SUCCESS, 0, 5), _ti(RunState.RUNNING, 1, None)], map_count=40)
    assert running.state is RunState.RUNNING and running.ended_at is None and running.map_count == 40


# ----------------------------------------------------------------------------- detection and auth


async def test_airflow_3_is_detected_and_uses_a_jwt() -> None:
    h = Harness(major=3)
    h.fake.add_run("demo_fail", RUN_ID, "failed", seconds_ago(5, h.clock))
    r = await h.poll()
    assert r.health.reachable and r.health.api == "airflow-v2" and r.health.version == "3.3.2"
    assert h.fake.paths()[:3] == ["/api/v2/version", "/auth/token", "/api/v2/monitor/health"]
    feed = [q for q in h.fake.requests if q.url.path == "/api/v2/dags/~/dagRuns" and "updated_at_gte" in q.url.params]
    assert feed[0].headers["Authorization"].startswith("Bearer ")
    assert feed[0].url.params["order_by"] == "updated_at" and feed[0].url.params["cursor"] == ""
    [run] = r.runs
    assert run.state is RunState.FAILED and run.scheduled_for == datetime.fromisoformat("2026-11-26T13:16:47.960361Z")
    assert run.version == "1" and run.run_type == "manual" and run.queued_at is not None


async def test_airflow_2_is_detected_uses_basic_auth_and_never_sends_v2_only_parameters() -> None:
    h = Harness(major=2)
    h.fake.add_run("demo_fail", V2_RUN["dag_run_id"], "failed", seconds_ago(5, h.clock))
    h.fake.add_ti("demo_fail", V2_RUN["dag_run_id"], "explode", "failed", seconds_ago(5, h.clock))
    r = await h.poll()
    assert r.health.reachable, r.health.error
    assert (r.health.api, r.health.version) == ("airflow-v1", "2.10.5")
    assert "/auth/token" not in h.fake.paths()
    assert all(q.headers["Authorization"].startswith("Basic ") for q in h.fake.requests if "/dags" in q.url.path)
    # The fake answers 400 to any parameter v1 does not list (cursor, order_by on task instances): none was sent.
    assert all(q.url.params.get("cursor") is None for q in h.fake.requests)
    assert [t.state for t in r.tasks] == [RunState.FAILED]
    assert r.runs[0].scheduled_for == datetime.fromisoformat(V2_RUN["execution_date"])
    assert r.runs[0].url == ("http://airflow.test/dags/demo_fail/grid?dag_run_id="
                             "manual__2026-11-26T13%3A32%3A37.956104%2B00%3A00")  # fmt: skip


async def test_health_components() -> None:
    h3 = Harness(major=3)
    r3 = await h3.poll()
    names = {c.name: c for c in r3.health.components}
    # triggerer status null: never deployed, so not watched.
    assert set(names) == {"metadatabase", "scheduler", "dag_processor"}
    assert names["scheduler"].healthy and names["scheduler"].last_heartbeat == datetime.fromisoformat(
        "2026-11-26T13:17:13.347739+00:00"
    )
    h3.fake.health["triggerer"] = {"status": "unhealthy", "latest_triggerer_heartbeat": "2026-11-26T12:00:00+00:00"}
    r3b = await h3.poll()
    assert {c.name: c.healthy for c in r3b.health.components}["triggerer"] is False
    h2 = Harness(major=2)
    r2 = await h2.poll()
    assert {c.name: c.healthy for c in r2.health.components} == {"metadatabase": True, "scheduler": False}


async def test_expired_or_revoked_token_is_renewed_once_on_401_or_403() -> None:
    h = Harness(major=3)
    await h.poll()
    h.fake.tokens.clear()  # server restarted with a new secret: our token is now foreign (403)
    h.fake.add_run("demo_fail", RUN_ID, "failed", seconds_ago(1, h.clock))
    r = await h.poll()
    assert r.health.reachable and len(r.runs) == 1
    assert h.fake.paths().count("/auth/token") == 2
    # When even a fresh token is refused, the source is down and says why, without the secret.
    h.fake.fail("/dagRuns", lambda q: httpx.Response(401, json={"detail": "Not authenticated"}), times=2)
    r = await h.poll()
    assert not r.health.reachable and "HTTP 401" in (r.health.error or "")


async def test_token_is_renewed_before_it_expires_from_its_own_exp_claim() -> None:
    h = Harness(major=3)
    h.fake.token_validity = timedelta(minutes=10)
    await h.poll(advance=0)
    h.clock.advance(timedelta(minutes=8))  # before exp, past the renewal margin (10 % of validity)
    await h.poll()
    assert h.fake.paths().count("/auth/token") == 1
    h.clock.advance(timedelta(minutes=1))
    await h.poll()
    assert h.fake.paths().count("/auth/token") == 2
    # Nothing was ever refused: renewal happened before expiry.
    assert h.outcomes["http_4xx"] == 0


def test_jwt_validity_is_read_from_the_payload_and_tolerates_garbage() -> None:
    assert jwt_validity(_jwt(T0, timedelta(hours=24), 0)) == timedelta(hours=24)
    assert jwt_validity("not-a-jwt") is None
    assert jwt_validity("a.bm90IGpzb24.c") is None


async def test_wrong_password_is_reported_without_any_secret(logs: list[str]) -> None:
    h = Harness(major=3, password="wrong-" + PASSWORD)
    r = await h.poll()
    assert not r.health.reachable and "credentials rejected" in (r.health.error or "")
    h2 = Harness(major=2, password="wrong-" + PASSWORD)
    r2 = await h2.poll()
    assert not r2.health.reachable and "HTTP 401" in (r2.health.error or "")
    text = "\n".join(logs) + repr(r) + repr(r2)
    assert PASSWORD not in text and "Bearer" not in text and "Basic " not in text


async def test_secrets_never_reach_logs_or_health(logs: list[str]) -> None:
    h = Harness(major=3)
    h.fake.add_run("demo_fail", RUN_ID, "failed", seconds_ago(1, h.clock))
    await h.poll()
    h.fake.fail("/dagRuns", lambda q: httpx.Response(500, text="boom"))
    r = await h.poll()
    text = "\n".join(logs) + repr(r)
    assert PASSWORD not in text
    assert not any(token in text for token in h.fake.tokens)


# ------------------------------------------------------------------------- incremental polling


async def test_second_poll_with_the_cursor_reports_nothing_twice() -> None:
    h = Harness(major=3)
    h.fake.add_run("demo_fail", RUN_ID, "failed", seconds_ago(5, h.clock))
    h.fake.add_ti("demo_fail", RUN_ID, "explode", "failed", seconds_ago(5, h.clock))
    first = await h.poll()
    assert len(first.runs) == 1 and len(first.tasks) == 1
    again = await h.poll()  # same rows re-read inside the overlap
    assert again.health.reachable and again.runs == () and again.tasks == ()


async def test_a_run_updated_twice_is_reported_for_each_change_but_never_twice_for_one() -> None:
    h = Harness(major=3)
    run_id = "scheduled__2026-11-26T12:00:00+00:00"
    h.fake.add_run("etl", run_id, "queued", seconds_ago(2, h.clock), start_date=None, end_date=None)
    seen = [(u.state, u.started_at is not None) for u in (await h.poll()).runs]
    h.fake.add_run("etl", run_id, "running", seconds_ago(1, h.clock), end_date=None)
    seen += [(u.state, u.started_at is not None) for u in (await h.poll()).runs]
    seen += [(u.state, True) for u in (await h.poll()).runs]  # nothing new
    h.fake.add_run("etl", run_id, "success", seconds_ago(1, h.clock))
    seen += [(u.state, True) for u in (await h.poll()).runs]
    seen += [(u.state, True) for u in (await h.poll()).runs]
    assert seen == [(RunState.QUEUED, False), (RunState.RUNNING, True), (RunState.SUCCESS, True)]


async def test_a_change_committed_late_inside_the_overlap_is_not_missed() -> None:
    h = Harness(major=3)
    await h.poll()
    cursor_hwm = datetime.fromisoformat(h.cursor["runs"]["hwm"])
    # A transaction stamped before our last high-water mark that only became visible after that poll.
    h.fake.add_run("etl", "late_commit", "failed", cursor_hwm - timedelta(seconds=30))
    r = await h.poll()
    assert [u.run_id for u in r.runs] == ["late_commit"]
    # Older than the overlap is out of reach by design; that is what the overlap setting is for.
    h.fake.add_run("etl", "too_late", "failed", cursor_hwm - timedelta(seconds=120))
    assert (await h.poll()).runs == ()


async def test_cursor_is_small_json_on_the_server_clock_and_survives_a_restart() -> None:
    h = Harness(major=3)
    h.fake.add_run("etl", "r1", "running", seconds_ago(5, h.clock), end_date=None)
    await h.poll()
    assert orjson.loads(orjson.dumps(h.cursor)) == h.cursor
    assert h.cursor["v"] == 1 and h.cursor["runs"]["hwm"] == T0.isoformat()  # from the Date header
    restarted = AirflowAdapter(h.spec, h.clock, h.client)
    r = await restarted.poll(h.cursor)
    # The active set is re-read after a restart, but a change already reported in the overlap is not repeated.
    assert r.runs == ()


async def test_the_cursor_follows_the_servers_clock_not_ours() -> None:
    h = Harness(major=3)
    h.fake.clock = FrozenClock(T0 - timedelta(minutes=7))  # the scheduler's clock is 7 minutes behind ours
    await h.poll()
    assert datetime.fromisoformat(h.cursor["tasks"]["hwm"]) == T0 - timedelta(minutes=7)


async def test_a_running_run_that_does_not_change_is_known_after_a_restart() -> None:
    h = Harness(major=2)
    h.fake.add_run("etl", "long_one", "running", T0 - timedelta(hours=5), end_date=None)
    r = await h.poll()
    assert [(u.run_id, u.state) for u in r.runs] == [("long_one", RunState.RUNNING)]
    active = [q for q in h.fake.requests if q.url.params.get_list("state") == ["queued", "running"]]
    assert len(active) == 1
    later = await h.poll()
    assert later.runs == () and len([q for q in h.fake.requests if q.url.params.get_list("state")]) == 1


async def test_window_splits_when_a_page_overflows_on_airflow_2() -> None:
    h = Harness(major=2)
    await h.poll(advance=0)
    for i in range(250):
        h.fake.add_run("etl", f"r{i:03}", "success", h.clock.now() + timedelta(milliseconds=200 * i))
    h.clock.advance(60)
    r = await h.poll()
    assert r.health.reachable, r.health.error
    assert sorted(u.run_id for u in r.runs) == [f"r{i:03}" for i in range(250)]
    feed = [q for q in h.fake.requests if q.url.path.endswith("/dagRuns") and "updated_at_gte" in q.url.params]
    assert all("offset" not in q.url.params for q in feed)  # no offset paging was needed: windows fit a page
    assert 3 < len(feed) < 20


async def test_many_rows_with_one_timestamp_fall_back_to_offset_paging() -> None:
    h = Harness(major=2)
    await h.poll(advance=0)
    stamp = h.clock.now() + timedelta(seconds=3)
    for i in range(230):
        h.fake.add_ti("etl", "bulk", f"t{i:03}", "success", stamp)
    h.clock.advance(30)
    r = await h.poll()
    assert r.health.reachable, r.health.error
    assert len(r.tasks) == 230 and len({t.task for t in r.tasks}) == 230
    ti = [q for q in h.fake.requests if q.url.path.endswith("/taskInstances") and "offset" in q.url.params]
    assert ti  # the single-timestamp window was paged


async def test_airflow_3_3_follows_next_cursor_instead_of_splitting() -> None:
    h = Harness(major=3)
    await h.poll(advance=0)
    for i in range(250):
        h.fake.add_ti("etl", "r", f"t{i:03}", "success", h.clock.now() + timedelta(milliseconds=100 * i))
    h.clock.advance(30)
    r = await h.poll()
    assert len(r.tasks) == 250
    ti = [q for q in h.fake.requests[-8:] if q.url.path.endswith("/taskInstances")]
    assert [q.url.params["cursor"] for q in ti] == ["", "100", "200"]
    assert all(q.url.params["order_by"] == "id" for q in ti)


async def test_older_airflow_3_without_cursor_support_splits_windows() -> None:
    h = Harness(major=3, keyset=False)
    await h.poll(advance=0)
    for i in range(250):
        h.fake.add_run("etl", f"r{i:03}", "success", h.clock.now() + timedelta(milliseconds=200 * i))
    h.clock.advance(60)
    r = await h.poll()
    assert len(r.runs) == 250


async def test_a_backlog_larger_than_the_budget_is_read_over_several_cycles() -> None:
    h = Harness(major=2)
    await h.poll(advance=0)
    start = h.clock.now()
    for i in range(4000):
        h.fake.add_run("etl", f"r{i:04}", "success", start + timedelta(milliseconds=75 * i))
    h.clock.advance(400)
    got: set[str] = set()
    marks = []
    for _ in range(30):
        r = await h.poll(advance=0)
        assert r.health.reachable and r.requests <= 60  # bounded per cycle, whatever the backlog
        got |= {u.run_id for u in r.runs}
        marks.append(h.cursor["runs"]["hwm"])
        if len(got) == 4000:
            break
    assert len(got) == 4000
    assert marks == sorted(set(marks))  # the high-water mark moved forward on every cycle


# --------------------------------------------------------------------------- mapped tasks, paths


async def test_mapped_instances_are_folded_and_run_ids_are_percent_encoded_in_paths() -> None:
    h = Harness(major=3)
    for i, state in enumerate(["success", "failed", "running"]):
        h.fake.add_ti("demo_fail", RUN_ID, "fan", state, seconds_ago(2, h.clock), map_index=i)
    r = await h.poll()
    [task] = r.tasks
    assert (task.task, task.state, task.map_count) == ("fan", RunState.FAILED, 3)
    [mapped] = [q for q in h.fake.requests if q.url.path.endswith("/listMapped")]
    assert mapped.url.raw_path.decode().startswith(
        "/api/v2/dags/demo_fail/dagRuns/manual__2026-11-26T13%3A16%3A47.960361%2B00%3A00/taskInstances/fan/listMapped"
    )
    assert unquote(mapped.url.raw_path.decode().split("/")[6]) == RUN_ID
    # Unchanged instances re-read inside the overlap do not cost another listMapped request.
    await h.poll()
    assert len([q for q in h.fake.requests if q.url.path.endswith("/listMapped")]) == 1


async def test_run_url_percent_encodes_the_run_id() -> None:
    h = Harness(major=3)
    h.fake.add_run("demo_fail", RUN_ID, "failed", seconds_ago(2, h.clock))
    [run] = (await h.poll()).runs
    assert run.url == "http://airflow.test/dags/demo_fail/runs/manual__2026-11-26T13%3A16%3A47.960361%2B00%3A00"


# ------------------------------------------------------------------- DAG list and import errors


async def test_dag_list_is_read_one_page_per_cycle_round_robin() -> None:
    h = Harness(major=3)
    h.fake.dags = [dict(V3_DAG, dag_id=f"dag_{i:03}") for i in range(250)]
    counts, results = [], []
    for _ in range(4):
        r = await h.poll()
        results.append(r)
        counts.append(len([q for q in h.fake.requests if q.url.path == "/api/v2/dags"]))
    assert counts == [1, 2, 3, 4]  # one page per cycle, whatever the DAG count
    assert [len(r.pipelines_partial) for r in results[:2]] == [100, 100]
    assert results[0].pipelines is None and results[1].pipelines is None
    assert results[2].pipelines is not None and len(results[2].pipelines) == 250
    assert results[3].pipelines is None and results[3].pipelines_partial[0].pipeline == "dag_000"
    info = results[2].pipelines[0]
    assert (info.schedule, info.tags, info.next_run) == (
        "*/2 * * * *",
        ("demo",),
        datetime(2026, 11, 26, 13, 18, tzinfo=UTC),
    )


async def test_steady_state_cost_does_not_depend_on_dag_count() -> None:
    costs = []
    for dags in (1, 5000):
        h = Harness(major=3)
        h.fake.dags = [dict(V3_DAG, dag_id=f"dag_{i:05}") for i in range(dags)]
        await h.poll()
        costs.append([(await h.poll()).requests for _ in range(IMPORT_ERRORS_EVERY)])
    # health, runs, tasks, one DAG page (+ assets half-way, + import errors): never both in one cycle
    assert costs[0] == costs[1] == [4, 5, 4, 5]


async def test_airflow_2_pipeline_info() -> None:
    h = Harness(major=2)
    [info] = (await h.poll()).pipelines or ()
    assert info.schedule == "*/2 * * * *" and info.next_run == datetime(2026, 11, 26, 13, 32, tzinfo=UTC)
    assert info.url == "http://airflow.test/dags/demo_every_2min/grid"


async def test_import_errors_are_read_every_few_cycles_as_a_complete_list() -> None:
    h = Harness(major=3)
    h.fake.import_errors = [IMPORT_ERROR]
    got = [(await h.poll()).import_errors for _ in range(IMPORT_ERRORS_EVERY + 1)]
    assert got[0] is not None and got[0][0].filename == "demo_broken.py" and "ModuleNotFoundError" in got[0][0].message
    assert all(g is None for g in got[1:IMPORT_ERRORS_EVERY])
    assert got[IMPORT_ERRORS_EVERY] is not None


# ------------------------------------------------------------------------------------ bad input


def _boom(status: int, **kw: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda q: httpx.Response(status, **kw)


def _timeout(q: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=q)


@pytest.mark.parametrize(
    ("where", "fault", "outcome", "error"),
    [
        ("/dagRuns", _boom(500, text="Internal Server Error"), "http_5xx", "HTTP 500"),
        ("/taskInstances", _timeout, "timeout", "timed out"),
        ("/monitor/health", _boom(200, text="<html>proxy login</html>"), "invalid_json", "not JSON"),
        ("/dagRuns", _boom(200, json={"dag_runs": "nope", "total_entries": 1}), "invalid_payload", "dag_runs"),
        ("/taskInstances", _boom(200, json={"items": []}), "invalid_payload", "task_instances"),
        ("/dags", _boom(200, json=[1, 2, 3]), "invalid_payload", "unexpected response"),
        ("/dagRuns", _boom(422, json={"detail": [{"msg": "bad"}]}), "http_4xx", "HTTP 422"),
    ],
)
async def test_scheduler_trouble_never_raises_and_keeps_the_cursor(
    where: str, fault: Callable[[httpx.Request], httpx.Response], outcome: str, error: str
) -> None:
    h = Harness(major=3)
    h.fake.add_run("etl", "r1", "running", seconds_ago(3, h.clock), end_date=None)
    good = await h.poll()
    before = dict(h.cursor)
    h.fake.fail(where, fault)
    bad = await h.poll()
    assert not bad.health.reachable and error in (bad.health.error or ""), bad.health.error
    assert bad.cursor == before and bad.runs == () and bad.tasks == ()
    assert h.outcomes[outcome] >= 1
    # Recovery: the API is redetected and polling resumes from the cursor it had.
    h.fake.add_run("etl", "r1", "success", seconds_ago(1, h.clock))
    again = await h.poll()
    assert again.health.reachable and [u.state for u in again.runs] == [RunState.SUCCESS]
    assert h.fake.paths().count("/api/v2/version") == 2
    assert good.health.reachable


async def test_unknown_states_are_counted_not_fatal() -> None:
    h = Harness(major=3)
    h.fake.add_run("etl", "r1", "frozen", seconds_ago(3, h.clock))
    h.fake.add_ti("etl", "r1", "t", "teleported", seconds_ago(3, h.clock))
    r = await h.poll()
    assert r.health.reachable
    assert [(u.state, u.raw_state) for u in r.runs] == [(RunState.UNKNOWN, "frozen")]
    assert [(u.state, u.raw_state) for u in r.tasks] == [(RunState.UNKNOWN, "teleported")]
    assert h.outcomes["unknown_state"] == 2


async def test_something_that_is_not_airflow_is_unreachable() -> None:
    h = Harness(major=3)
    h.fake.fail("/version", _boom(404, text="nginx"), times=2)
    r = await h.poll()
    assert not r.health.reachable and "no Airflow REST API" in (r.health.error or "")


async def test_connect_error_is_unreachable() -> None:
    def refuse(q: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=q)

    h = Harness(major=3)
    h.fake.fail("/api/v2/version", refuse)
    r = await h.poll()
    assert not r.health.reachable and h.outcomes["connect_error"] == 1 and r.cursor == {}


async def test_missing_date_header_falls_back_to_the_local_clock() -> None:
    h = Harness(major=3)
    h.fake.send_date = False
    r = await h.poll()
    assert r.health.reachable and h.cursor["runs"]["hwm"] == T0.isoformat()


async def test_a_garbled_cursor_starts_afresh() -> None:
    h = Harness(major=3)
    h.fake.add_run("etl", "r1", "failed", seconds_ago(3, h.clock))
    r = await h.adapter.poll({"v": 1, "runs": {"hwm": "yesterday", "seen": "x"}, "tasks": 7})
    assert r.health.reachable and len(r.runs) == 1


# ------------------------------------------------------------------------ against the simulator


def _sim_world() -> World:
    world = World(seed=3)
    world.add_pipeline(SimPipeline("market_data_ingest", "airflow", "*/10 * * * *", timezone="UTC",
                                   tasks=("extract", "load"), mean_task_seconds=20, retries=0))  # fmt: skip
    world.add_pipeline(SimPipeline("eod_reporting", "airflow", "*/10 * * * *", timezone="UTC",
                                   tasks=("report",), mean_task_seconds=30, tags=("reporting",)))  # fmt: skip
    fail_next_run(world, "market_data_ingest")
    return world


async def _sim(world: World, clock: FrozenClock) -> TestServer:
    root = web.Application()
    root.add_subapp("/airflow/", airflow_app(world, clock))
    server = TestServer(root, host="127.0.0.1")
    await server.start_server()
    return server


async def test_end_to_end_against_the_simulator() -> None:
    clock = FrozenClock(datetime(2026, 11, 26, 14, 55, tzinfo=UTC))
    world = _sim_world()
    world.advance(clock.now())
    server = await _sim(world, clock)
    spec = SourceSpec(name="sim", kind="airflow", url=str(server.make_url("/airflow")), username=SIM_USERNAME,
                      password=SIM_PASSWORD, max_requests_per_second=100, burst=100)  # fmt: skip
    client = PoliteClient(spec)
    adapter = AirflowAdapter(spec, clock, client)
    try:
        cursor: dict[str, Any] = {}
        reported: list[tuple[str, str]] = []
        last_run: dict[str, RunState] = {}
        last_task: dict[tuple[str, str], RunState] = {}
        for _ in range(3 * 40):  # 40 simulated minutes in 20 s steps
            clock.advance(20)
            world.advance(clock.now())
            r = await adapter.poll(cursor)
            assert r.health.reachable, r.health.error
            assert r.health.api == "airflow-v2"
            cursor = r.cursor
            for u in r.runs:
                reported.append((u.run_id, u.state))
                last_run[u.run_id] = u.state
            for t in r.tasks:
                last_task[(t.run_id, t.task)] = t.state
        # Never the same state of a run twice in a row; every run ends as the world has it.
        for run_id in last_run:
            states = [s for rid, s in reported if rid == run_id]
            assert all(a != b for a, b in itertools.pairwise(states)), states
        airflow_runs = {r.id: r for r in world.runs.values() if r.system == "airflow"}
        assert set(last_run) == set(airflow_runs)
        assert all(last_run[rid] == run.state for rid, run in airflow_runs.items())
        failed = [rid for rid, s in last_run.items() if s is RunState.FAILED]
        assert failed and any(last_task[(rid, "extract")] is RunState.FAILED for rid in failed)
        assert any(s is RunState.SUCCESS for s in last_run.values())
        # The API going down is a reachable=False result, and polling resumes where it was.
        world.health.api_up = False
        down = await adapter.poll(cursor)
        assert not down.health.reachable and "503" in (down.health.error or "") and down.cursor == cursor
        world.health.api_up = True
        # A token outlives nothing: 25 simulated hours later the adapter renews it and carries on.
        clock.advance(timedelta(hours=25))
        world.advance(clock.now())
        assert (await adapter.poll(cursor)).health.reachable
    finally:
        await client.aclose()
        await server.close()


async def test_simulator_speaks_airflow_3_3() -> None:
    clock = FrozenClock(datetime(2026, 11, 26, 14, 55, tzinfo=UTC))
    world = _sim_world()
    for _ in range(60):
        clock.advance(60)
        world.advance(clock.now())
    server = await _sim(world, clock)
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url("/airflow"))) as http:
            version = await http.get("/api/v2/version")
            assert version.json()["version"] == "3.3.2"
            assert version.headers["Date"] == format_datetime(clock.now(), usegmt=True)
            assert (await http.get("/api/v2/dags")).status_code == 401
            assert (await http.get("/api/v2/dags", headers={"Authorization": "Bearer x.y.z"})).status_code == 403
            bad = await http.post("/auth/token", json={"username": SIM_USERNAME, "password": "nope"})
            assert bad.status_code == 401
            tok = await http.post("/auth/token", json={"username": SIM_USERNAME, "password": SIM_PASSWORD})
            assert tok.status_code == 201
            auth = {"Authorization": f"Bearer {tok.json()['access_token']}"}
            dags = (await http.get("/api/v2/dags", params={"limit": 500}, headers=auth)).json()
            assert dags["total_entries"] == 2 and dags["dags"][0]["dag_id"] == "eod_reporting"
            # Keyset paging over every run, one page at a time, each run once.
            ids, token, pages = [], "", 0
            while token is not None:
                params = {"order_by": "updated_at", "limit": 5, "cursor": token}
                page = (await http.get("/api/v2/dags/~/dagRuns", headers=auth, params=params)).json()
                ids += [r["dag_run_id"] for r in page["dag_runs"]]
                token, pages = page["next_cursor"], pages + 1
            assert len(ids) == len(set(ids)) == len(world.runs) and pages > 1
            since = (clock.now() - timedelta(minutes=10)).isoformat()
            recent = (await http.get("/api/v2/dags/~/dagRuns", headers=auth, params={"updated_at_gte": since})).json()
            assert recent["total_entries_limit"] is None and 0 < recent["total_entries"] < len(world.runs)
            refused = await http.get("/api/v2/dags/~/dagRuns/~/taskInstances", headers=auth,
                                     params={"order_by": "updated_at"})  # fmt: skip
            assert refused.status_code == 400
            bad_state = await http.get("/api/v2/dags/~/dagRuns", headers=auth, params={"state": "bogus"})
            assert bad_state.status_code == 422
            run_id = ids[0]
            run = world.runs[run_id]
            tis = await http.get(f"/api/v2/dags/{run.pipeline}/dagRuns/{run_id.replace(':', '%3A').replace('+', '%2B')}"
                                 "/taskInstances", headers=auth)  # fmt: skip
            assert tis.status_code == 200 and {t["task_id"] for t in tis.json()["task_instances"]} == {
                t.task for t in run.tasks
            }
            world.health.api_up = False
            assert (await http.get("/api/v2/version")).status_code == 503
            assert (await http.get("/api/v2/monitor/health")).status_code == 503
    finally:
        await server.close()


# ------------------------------------------------------------------ cross-DAG dependencies (assets)


def _asset_harness(major: int) -> Harness:
    h = Harness(major=major)
    base = V3_DAG if major == 3 else V2_DAG
    h.fake.dags = [dict(base, dag_id=d) for d in ("asset_consumer", "asset_producer", "other_producer", "loner")]
    h.fake.add_asset("sentinel://prices", [("asset_producer", "publish"), ("other_producer", "a")], ["asset_consumer"])
    h.fake.add_asset("sentinel://fx", [("asset_producer", "publish_fx")], ["asset_consumer", "other_producer"])
    h.fake.add_asset("sentinel://self", [("loner", "t")], ["loner"])  # a DAG is not its own upstream
    h.fake.add_asset("sentinel://orphan", [], ["loner"])
    return h


@pytest.mark.parametrize("major", [3, 2])
async def test_upstreams_come_from_airflow_assets_and_datasets(major: int) -> None:
    h = _asset_harness(major)
    r = await h.poll()
    ups = {p.pipeline: p.upstreams for p in r.pipelines or ()}
    assert ups == {
        "asset_consumer": ("asset_producer", "other_producer"),
        "asset_producer": (),
        "other_producer": ("asset_producer",),
        "loner": (),
    }
    path = "/api/v2/assets" if major == 3 else "/api/v1/datasets"
    assert h.fake.paths().count(path) == 1
    assert r.health.reachable and h.outcomes["http_4xx"] == (0 if major == 3 else 1)  # v1: /api/v2/version 404


async def _until_assets_are_due(h: Harness) -> None:
    """Poll the first cycle (which reads assets) and the ones before the next asset read."""
    for _ in range(ASSETS_EVERY // 2):
        await h.poll()


async def test_assets_are_read_on_the_first_cycle_then_every_few_cycles() -> None:
    h = _asset_harness(3)
    await _until_assets_are_due(h)
    h.fake.assets = []
    cleared = (await h.poll()).pipelines  # a one-page DAG list is complete every cycle
    assert h.fake.paths().count("/api/v2/assets") == 2
    ups = {p.pipeline: p.upstreams for p in cleared or ()}
    assert ups["asset_consumer"] == ()  # an emptied list clears the map, it does not keep the previous one
    for _ in range(2 * ASSETS_EVERY):
        await h.poll()
    assert h.fake.paths().count("/api/v2/assets") == 4


async def test_partial_dag_pages_carry_upstreams() -> None:
    h = Harness(major=3)
    h.fake.dags = [dict(V3_DAG, dag_id=f"dag_{i:03}") for i in range(150)]
    h.fake.add_asset("sentinel://x", [("dag_000", "t")], ["dag_005", "dag_120"])
    first, second = await h.poll(), await h.poll()
    assert {p.pipeline: p.upstreams for p in first.pipelines_partial}["dag_005"] == ("dag_000",)
    assert {p.pipeline: p.upstreams for p in second.pipelines or ()}["dag_120"] == ("dag_000",)


@pytest.mark.parametrize(
    ("major", "fault", "times", "outcome"),
    [
        (3, _boom(404, json={"detail": "Not Found"}), 1, "http_4xx"),
        (3, _boom(403, json={"detail": "Forbidden"}), 2, "http_4xx"),  # v2 retries once with a fresh token
        (2, _boom(404, text="<html>404</html>"), 1, "http_4xx"),
        (2, _boom(403, json={"title": "Forbidden"}), 1, "http_4xx"),
        (3, _boom(500, text="oops"), 1, "http_5xx"),
        (3, _timeout, 1, "timeout"),
    ],
)
async def test_a_failed_or_unsupported_asset_read_keeps_the_source_reachable_and_the_last_map(
    major: int, fault: Callable[[httpx.Request], httpx.Response], times: int, outcome: str
) -> None:
    h = _asset_harness(major)
    path = "/api/v2/assets" if major == 3 else "/api/v1/datasets"
    await _until_assets_are_due(h)
    h.fake.fail(path, fault, times=times)
    h.outcomes.clear()
    r = await h.poll()
    assert r.health.reachable, r.health.error
    ups = {p.pipeline: p.upstreams for p in r.pipelines or ()}
    assert ups["asset_consumer"] == ("asset_producer", "other_producer")  # the last map is kept
    assert h.outcomes[outcome] >= 1


async def test_an_unsupported_asset_endpoint_on_the_first_read_leaves_no_upstreams() -> None:
    h = _asset_harness(2)
    h.fake.fail("/api/v1/datasets", _boom(404, text="nope"))
    r = await h.poll()
    assert r.health.reachable and all(p.upstreams == () for p in r.pipelines or ())
    assert h.outcomes["http_4xx"] == 2  # detection's /api/v2/version, then /api/v1/datasets


async def test_an_asset_list_beyond_the_page_budget_keeps_the_previous_map() -> None:
    h = _asset_harness(3)
    await _until_assets_are_due(h)
    for i in range(ASSET_PAGES * 100 + 1):
        h.fake.add_asset(f"sentinel://bulk/{i}", [("loner", "t")], ["asset_producer"])
    before = len(h.fake.requests)
    r = await h.poll()
    reads = [q for q in h.fake.requests[before:] if q.url.path == "/api/v2/assets"]
    assert len(reads) == ASSET_PAGES  # bounded, whatever the number of assets
    ups = {p.pipeline: p.upstreams for p in r.pipelines or ()}
    assert ups["asset_producer"] == () and ups["asset_consumer"] == ("asset_producer", "other_producer")
    assert h.outcomes["assets_truncated"] == 1
