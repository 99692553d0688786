"""Prefect adapter against a fake Prefect 3 API (httpx.MockTransport) and against the simulator.

The fake answers with the shapes recorded from a real 3.9.1 server (shared/api-samples/prefect; the
templates below are trimmed copies) and implements the filter semantics the adapter relies on, which were
checked on a real server: `operator: or_`, start_time = coalesce(start_time, expected_start_time), limit
> 200 → 422, unknown filter keys → 422 with `exception_detail`.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from aiohttp import web

import adapters.prefect as prefect_mod
from adapters.http import PoliteClient
from adapters.prefect import PrefectAdapter
from adapters.prefect_mapping import map_state, task_name
from adapters.prefect_models import TaskRun
from sentinel.clock import FrozenClock
from sentinel.model import PollResult, RunState, SourceSpec
from sentinel.sim.prefect_api import prefect_app
from sentinel.sim.world import SimPipeline, World

T0 = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
FLOW_ID = "98c3ce63-82d9-4d75-9028-4aadad3da2f1"
DEPLOYMENT_ID = "d735f18c-92cc-421d-a09b-644f2c4bbb09"
POLLING_PATHS = ("get_runs", "get_scheduled_flow_runs")

# Trimmed from shared/api-samples/prefect/flow_runs_filter_failed.json (a real 3.9.1 response).
FLOW_RUN_TEMPLATE: dict[str, Any] = {
    "id": "71494ab4-d1c3-4877-afcc-561b9ee0c439",
    "created": "2026-11-26T13:12:17.549907Z",
    "updated": "2026-11-26T13:12:18.733000Z",
    "name": "manipulative-shrimp",
    "flow_id": FLOW_ID,
    "state_id": "01a217fc-4616-7110-816a-5340bc61f05d",
    "deployment_id": None,
    "deployment_version": None,
    "work_queue_id": None,
    "work_queue_name": None,
    "flow_version": "647df54d4c16211a82acb40963d260a6",
    "parameters": {"n": 1},
    "idempotency_key": None,
    "context": {},
    "empirical_policy": {
        "max_retries": 0,
        "retry_delay_seconds": 0,
        "retries": 0,
        "retry_delay": 0,
        "pause_keys": [],
        "resuming": False,
        "retry_type": None,
    },
    "tags": [],
    "labels": {"prefect.flow.id": FLOW_ID},
    "parent_task_run_id": None,
    "state_type": "FAILED",
    "state_name": "Failed",
    "run_count": 1,
    "expected_start_time": "2026-11-26T13:12:17.549345Z",
    "next_scheduled_start_time": None,
    "start_time": "2026-11-26T13:12:17.604404Z",
    "end_time": "2026-11-26T13:12:18.710081Z",
    "total_run_time": 1.105677,
    "estimated_run_time": 1.105677,
    "estimated_start_time_delta": 0.055059,
    "auto_scheduled": False,
    "infrastructure_document_id": None,
    "infrastructure_pid": None,
    "created_by": None,
    "work_pool_id": None,
    "work_pool_name": None,
    "state": {
        "id": "01a217fc-4616-7110-816a-5340bc61f05d",
        "type": "FAILED",
        "name": "Failed",
        "timestamp": "2026-11-26T13:12:18.710081Z",
        "message": "Flow run encountered an exception: RuntimeError: demo failure for input 1",
        "data": None,
        "state_details": {
            "flow_run_id": "71494ab4-d1c3-4877-afcc-561b9ee0c439",
            "task_run_id": None,
            "scheduled_time": None,
            "retriable": False,
        },
    },
    "job_variables": {},
}

# Trimmed from shared/api-samples/prefect/task_runs_filter.json.
TASK_RUN_TEMPLATE: dict[str, Any] = {
    "id": "01a217fc-4220-7d61-89b5-64c9aa7bfb25",
    "created": "2026-11-26T13:12:17.801615Z",
    "updated": "2026-11-26T13:12:17.846710Z",
    "name": "explode-07b",
    "flow_run_id": "71494ab4-d1c3-4877-afcc-561b9ee0c439",
    "task_key": "explode-89f38aa7",
    "dynamic_key": "07bba4c5-ec10-4cfb-ab8d-0df704f05bcf",
    "cache_key": None,
    "empirical_policy": {
        "max_retries": 0,
        "retry_delay_seconds": 0,
        "retries": 2,
        "retry_delay": 0,
        "retry_jitter_factor": None,
    },
    "tags": [],
    "labels": {},
    "state_id": "01a217fc-422c-768f-af00-4f8d644b012a",
    "task_inputs": {"x": []},
    "state_type": "FAILED",
    "state_name": "Failed",
    "run_count": 3,
    "flow_run_run_count": 1,
    "expected_start_time": "2026-11-26T13:12:17.696397Z",
    "start_time": "2026-11-26T13:12:17.697512Z",
    "end_time": "2026-11-26T13:12:17.708813Z",
    "total_run_time": 0.011301,
    "state": {
        "id": "01a217fc-422c-768f-af00-4f8d644b012a",
        "type": "FAILED",
        "name": "Failed",
        "timestamp": "2026-11-26T13:12:17.708813Z",
        "message": "Task run encountered an exception RuntimeError: demo failure for input 1",
        "data": None,
        "state_details": {"flow_run_id": "71494ab4-d1c3-4877-afcc-561b9ee0c439"},
    },
}


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


def parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class FakePrefect:
    """A Prefect 3 API in memory: the endpoints and filter semantics the adapter uses, and a request log."""

    def __init__(self, server_clock: FrozenClock, version: str = "3.9.1") -> None:
        self.clock = server_clock
        self.version = version
        self.flow_runs: dict[str, dict[str, Any]] = {}
        self.task_runs: dict[str, dict[str, Any]] = {}
        self.flows: dict[str, str] = {FLOW_ID: "portfolio_risk"}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.pools: list[dict[str, Any]] = []
        self.workers: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[httpx.Request] = []
        self.override: Callable[[httpx.Request], httpx.Response | None] | None = None

    # -- data ----------------------------------------------------------------------------------------

    def add_run(
        self,
        state_type: str,
        state_name: str,
        *,
        expected: datetime,
        start: datetime | None = None,
        end: datetime | None = None,
        deployment_id: str | None = None,
        message: str | None = None,
        run_id: str | None = None,
    ) -> str:
        run = copy.deepcopy(FLOW_RUN_TEMPLATE)
        run["id"] = run_id or str(uuid.uuid4())
        run["deployment_id"] = deployment_id
        run["expected_start_time"] = iso(expected)
        self.flow_runs[run["id"]] = run
        self.set_state(
            run["id"], state_type, state_name, at=end or start or expected, start=start, end=end, message=message
        )
        return str(run["id"])

    def set_state(
        self,
        run_id: str,
        state_type: str,
        state_name: str,
        *,
        at: datetime,
        start: datetime | None = None,
        end: datetime | None = None,
        message: str | None = None,
    ) -> None:
        run = self.flow_runs[run_id]
        state_id = str(uuid.uuid4())  # Prefect gives each transition a new state id
        run.update(state_id=state_id, state_type=state_type, state_name=state_name)
        if start is not None:
            run["start_time"] = iso(start)
        run["end_time"] = iso(end)
        run["state"] = {
            **run["state"],
            "id": state_id,
            "type": state_type,
            "name": state_name,
            "timestamp": iso(at),
            "message": message,
        }
        if start is None and state_type in ("SCHEDULED", "PENDING"):
            run["start_time"] = None

    def add_task(self, flow_run_id: str, name: str, state_type: str, run_count: int = 1) -> str:
        task = copy.deepcopy(TASK_RUN_TEMPLATE)
        task["id"] = str(uuid.uuid4())
        dynamic_key = str(uuid.uuid4())
        task.update(
            flow_run_id=flow_run_id,
            name=f"{name}-{dynamic_key[:3]}",
            dynamic_key=dynamic_key,
            task_key=f"{name}-1a2b3c4d",
            state_type=state_type,
            state_name=state_type.title(),
            run_count=run_count,
            state_id=str(uuid.uuid4()),
        )
        task["state"] = {**task["state"], "id": task["state_id"], "type": state_type, "name": state_type.title()}
        self.task_runs[task["id"]] = task
        return str(task["id"])

    def add_deployment(self, name: str, dep_id: str | None = None, paused: bool = False) -> str:
        dep_id = dep_id or str(uuid.uuid4())
        self.deployments[dep_id] = {
            "id": dep_id,
            "created": iso(T0),
            "name": name,
            "flow_id": FLOW_ID,
            "paused": paused,
            "schedules": [
                {
                    "id": str(uuid.uuid4()),
                    "deployment_id": dep_id,
                    "active": True,
                    "schedule": {"cron": "0 17 * * 1-5", "timezone": "America/New_York", "day_or": True},
                }
            ],
            "tags": ["risk"],
            "work_pool_name": "risk-pool",
            "status": "READY",
        }
        return dep_id

    # -- HTTP ----------------------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.override is not None and (resp := self.override(request)) is not None:
            return resp
        path = request.url.path.removeprefix("/api")
        body = json.loads(request.content) if request.content else {}
        if body.get("limit", 0) > 200:
            return self.reply({"detail": "Invalid limit: must be less than or equal to 200."}, 422)
        if path == "/health":
            return self.reply(True)
        if path == "/admin/version":
            return self.reply(self.version)
        if path == "/flow_runs/filter":
            f = body.get("flow_runs", {})
            if "end_time" in f and tuple(int(x) for x in self.version.split(".")[:3]) < (3, 0, 4):
                return self.reply(
                    {
                        "exception_message": "Invalid request received.",
                        "exception_detail": [
                            {
                                "type": "extra_forbidden",
                                "loc": ["body", "flow_runs", "end_time"],
                                "msg": "Extra inputs are not permitted",
                            }
                        ],
                        "request_body": body,
                    },
                    422,
                )
            key, descending = _SORTS[body.get("sort", "ID_DESC")]
            runs = sorted((r for r in self.flow_runs.values() if self._match(r, f)), key=key, reverse=descending)
            return self.reply(self._page(runs, body))
        if path == "/task_runs/filter":
            ids = body["task_runs"]["flow_run_id"]["any_"]
            tasks = sorted((t for t in self.task_runs.values() if t["flow_run_id"] in ids), key=lambda t: t["id"])
            return self.reply(self._page(tasks[::-1], body))
        if path == "/flows/filter":
            ids = body["flows"]["id"]["any_"]
            return self.reply([{"id": i, "name": n} for i, n in self.flows.items() if i in ids])
        if path == "/deployments/filter":
            ids = body.get("deployments", {}).get("id", {}).get("any_")
            deps = [d for d in reversed(self.deployments.values()) if ids is None or d["id"] in ids]
            return self.reply(self._page(deps, body))
        if path == "/work_pools/filter":
            return self.reply(self._page(self.pools, body))
        if path.startswith("/work_pools/") and path.endswith("/workers/filter"):
            return self.reply(self._page(self.workers.get(path.split("/")[2], []), body))
        return self.reply({"detail": "Not Found"}, 404)

    def reply(self, data: Any, status: int = 200) -> httpx.Response:
        return httpx.Response(status, json=data, headers={"date": format_datetime(self.clock.now(), usegmt=True)})

    @staticmethod
    def _page(items: list[Any], body: dict[str, Any]) -> list[Any]:
        offset, limit = body.get("offset", 0), body.get("limit", 200)
        return items[offset : offset + limit]

    @staticmethod
    def _match(run: dict[str, Any], f: dict[str, Any]) -> bool:
        def within(value: str | None, span: dict[str, Any], column: str | None = None) -> bool:
            if "is_null_" in span and ((run[column] if column else value) is None) != span["is_null_"]:
                return False
            t = parse(value)
            return t is not None and all(
                (k != "after_" or t >= parse(v)) and (k != "before_" or t <= parse(v))  # type: ignore[operator]
                for k, v in span.items()
                if k != "is_null_"
            )

        checks = []
        for key, crit in f.items():
            if key == "id":
                checks.append(run["id"] in crit["any_"])
            elif key == "state":
                parts = [run["state_type"] in crit["type"]["any_"]] if "type" in crit else []
                parts += [run["state_name"] in crit["name"]["any_"]] if "name" in crit else []
                checks.append(all(parts))
            elif key == "start_time":
                checks.append(within(run["start_time"] or run["expected_start_time"], crit, "start_time"))
            elif key in ("end_time", "expected_start_time"):
                checks.append(within(run[key], crit))
            elif key != "operator":
                raise AssertionError(f"fake does not know filter {key}")
        return all(checks) if f.get("operator", "and_") == "and_" else any(checks)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path == f"/api{path}"]


_SORTS: dict[str, tuple[Callable[[dict[str, Any]], Any], bool]] = {
    "ID_DESC": (lambda r: r["id"], True),
    "EXPECTED_START_TIME_ASC": (lambda r: r["expected_start_time"], False),
}


class Harness:
    def __init__(self, *, version: str = "3.9.1", overlap: float = 60, **spec: Any) -> None:
        self.clock = FrozenClock(T0)
        self.server_clock = FrozenClock(T0 + timedelta(seconds=3600))  # the server's clock is what counts
        self.fake = FakePrefect(self.server_clock, version)
        self.spec = SourceSpec(
            name="prefect-prod",
            kind="prefect",
            url="http://prefect.test/api",
            max_requests_per_second=100,
            burst=100,
            overlap=overlap,
            **spec,
        )
        self.outcomes: list[str] = []
        self.client = PoliteClient(
            self.spec,
            transport=httpx.MockTransport(self.fake.handler),
            on_request=lambda o, _s: self.outcomes.append(o),
        )
        self.adapter = PrefectAdapter(self.spec, self.clock, self.client)
        self.cursor: dict[str, Any] = {}

    @property
    def now(self) -> datetime:
        return self.server_clock.now()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.server_clock.advance(seconds)

    async def poll(self) -> PollResult:
        mark = len(self.fake.requests)
        result = await self.adapter.poll(self.cursor)
        assert result.requests == len(self.fake.requests) - mark
        if result.health.reachable:
            self.cursor = result.cursor
            json.dumps(self.cursor)  # must stay plain JSON for the store
        return result


# ------------------------------------------------------------------------------------------ state mapping


@pytest.mark.parametrize(
    ("state_type", "state_name", "expected"),
    [
        ("SCHEDULED", "Scheduled", RunState.SCHEDULED),
        ("SCHEDULED", "Late", RunState.LATE),
        ("SCHEDULED", "AwaitingRetry", RunState.RETRYING),
        ("SCHEDULED", "AwaitingConcurrencySlot", RunState.QUEUED),
        ("SCHEDULED", "MyOwnName", RunState.SCHEDULED),
        ("PENDING", "Pending", RunState.QUEUED),
        ("RUNNING", "Running", RunState.RUNNING),
        ("RUNNING", "Retrying", RunState.RETRYING),
        ("COMPLETED", "Completed", RunState.SUCCESS),
        ("COMPLETED", "Cached", RunState.SUCCESS),
        ("FAILED", "Failed", RunState.FAILED),
        ("CRASHED", "Crashed", RunState.CRASHED),
        ("CANCELLED", "Cancelled", RunState.CANCELLED),
        ("CANCELLING", "Cancelling", RunState.RUNNING),
        ("PAUSED", "Paused", RunState.PAUSED),
        ("PAUSED", "Suspended", RunState.PAUSED),
        ("FAILED", "Late", RunState.FAILED),  # a name only refines the type it belongs to
        ("QUANTUM", "Superposed", None),
    ],
)
def test_state_mapping_goes_by_type(state_type: str, state_name: str, expected: RunState | None) -> None:
    assert map_state(state_type, state_name) == expected


def test_crashed_is_a_failure_but_not_failed() -> None:
    crashed = map_state("CRASHED", "Crashed")
    assert crashed is RunState.CRASHED and crashed.failure and crashed.terminal
    assert crashed != map_state("FAILED", "Failed")
    # Cancellation in progress is not yet an end: the run's infrastructure may still be working.
    assert map_state("CANCELLING", "Cancelling") is not None and not map_state("CANCELLING", "Cancelling").terminal  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "dynamic_key", "task_key", "expected"),
    [
        ("nap-948", "94845b29-abdc-4fb5-9d0f-122fb9453447", "nap-bbb2f824", "nap"),
        ("Load Prices-026", "026e2b6b-fb71-40c3-a0aa-5c8b8b8f458d", "load-eadc854f", "Load Prices"),
        ("load-prices-2026-11-26", "5dd64571-3e3d", "load_prices-7693a5f2", "load_prices"),  # custom run name
        ("compute-risk-0", "0", "compute_risk-unknown", "compute-risk"),  # counter-style dynamic key
    ],
)
def test_task_name_drops_the_per_run_suffix(name: str, dynamic_key: str, task_key: str, expected: str) -> None:
    tr = TaskRun(id="t", name=name, dynamic_key=dynamic_key, task_key=task_key)
    assert task_name(tr) == expected


# ------------------------------------------------------------------------------------------ polling


async def test_first_poll_reports_runs_tasks_and_pipeline_names() -> None:
    h = Harness()
    now = h.now
    failed = h.fake.add_run(
        "FAILED",
        "Failed",
        expected=now - timedelta(minutes=5),
        start=now - timedelta(minutes=5),
        end=now - timedelta(minutes=4),
        message="boom",
    )
    dep = h.fake.add_deployment("daily")
    ok = h.fake.add_run(
        "COMPLETED",
        "Completed",
        expected=now - timedelta(minutes=3),
        start=now - timedelta(minutes=3),
        end=now - timedelta(minutes=2),
        deployment_id=dep,
    )
    h.fake.flow_runs[ok]["auto_scheduled"] = True
    h.fake.add_task(failed, "explode", "FAILED", run_count=3)
    h.fake.add_task(ok, "load_positions", "COMPLETED")

    result = await h.poll()

    assert result.health.reachable and result.health.version == "3.9.1" and result.health.api == "prefect"
    by_id = {u.run_id: u for u in result.runs}
    assert by_id[failed].pipeline == "portfolio_risk"  # ad-hoc run: flow name
    assert by_id[failed].state is RunState.FAILED and by_id[failed].message == "boom"
    assert by_id[failed].run_type == "manual"
    assert by_id[failed].scheduled_for == now - timedelta(minutes=5)
    assert by_id[failed].ended_at == now - timedelta(minutes=4)
    assert by_id[failed].url == f"http://prefect.test/runs/flow-run/{failed}"
    assert by_id[ok].pipeline == "portfolio_risk/daily" and by_id[ok].state is RunState.SUCCESS
    assert by_id[ok].run_type == "scheduled"
    tasks = {t.task: t for t in result.tasks}
    assert tasks["explode"].state is RunState.FAILED and tasks["explode"].pipeline == "portfolio_risk"
    assert tasks["explode"].try_number == 3 and tasks["explode"].max_tries == 2  # retries=2: three tries
    assert tasks["load_positions"].pipeline == "portfolio_risk/daily"
    assert result.pipelines is not None and [p.pipeline for p in result.pipelines] == ["portfolio_risk/daily"]
    assert result.pipelines[0].schedule == "cron 0 17 * * 1-5 (America/New_York)"


async def test_cursor_follows_the_server_clock_not_ours() -> None:
    h = Harness()
    await h.poll()
    # the next window starts one overlap before the server's now (an hour ahead of the adapter's clock)
    assert parse(h.cursor["since"]) == h.server_clock.now() - timedelta(seconds=60)
    window = h.fake.bodies("/flow_runs/filter")[0]["flow_runs"]
    assert parse(window["start_time"]["before_"]) == h.server_clock.now()


async def test_overlap_rereads_but_never_repeats_and_a_new_state_is_reported_once() -> None:
    h = Harness()
    now = h.now
    run = h.fake.add_run("RUNNING", "Running", expected=now - timedelta(seconds=30), start=now - timedelta(seconds=20))
    first = await h.poll()
    assert [(u.run_id, u.state) for u in first.runs] == [(run, RunState.RUNNING)]

    h.advance(15)  # still inside the overlap and still active: read again, not reported again
    second = await h.poll()
    assert second.runs == () and second.tasks == ()

    h.fake.set_state(run, "COMPLETED", "Completed", at=h.now - timedelta(seconds=2), end=h.now - timedelta(seconds=2))
    h.fake.add_task(run, "load", "COMPLETED")
    h.advance(15)
    third = await h.poll()
    assert [(u.run_id, u.state) for u in third.runs] == [(run, RunState.SUCCESS)]
    assert [t.task for t in third.tasks] == ["load"]

    for _ in range(6):  # the end stays in the overlap for a while, then leaves every read
        h.advance(15)
        assert (await h.poll()).runs == ()
    assert run not in h.cursor["runs"]  # the de-dup set only holds what reads still return


async def test_steady_state_cycle_costs_five_requests_whatever_the_deployment_count() -> None:
    h = Harness()
    for i in range(450):
        h.fake.add_deployment(f"deploy-{i:03d}")
    await h.poll()  # first cycle also reads version and work pools
    counts = []
    for _ in range(3):
        h.advance(15)
        counts.append((await h.poll()).requests)
    # health, window, active, late, one deployments page (pools every POOL_EVERY cycles, not here)
    assert counts == [5, 5, 5]


async def test_deployments_round_robin_reports_partials_then_the_full_set() -> None:
    h = Harness()
    ids = [h.fake.add_deployment(f"deploy-{i:03d}", paused=i == 7) for i in range(450)]
    results = []
    for _ in range(3):
        results.append(await h.poll())
        h.advance(15)
    assert [len(r.pipelines_partial) for r in results] == [200, 200, 50]
    assert results[0].pipelines is None and results[1].pipelines is None
    full = results[2].pipelines
    assert full is not None and len(full) == 450 == len({p.pipeline for p in full})
    paused = [p.pipeline for p in full if p.paused]
    assert paused == ["portfolio_risk/deploy-007"]
    assert all(len(b) == 0 or b.get("limit", 0) <= 200 for b in h.fake.bodies("/deployments/filter"))
    # deployment names learned from the pages: a run of one of them needs no lookup
    run = h.fake.add_run("RUNNING", "Running", expected=h.now, start=h.now, deployment_id=ids[3])
    before = len(h.fake.bodies("/deployments/filter"))
    result = await h.poll()
    assert [u.pipeline for u in result.runs if u.run_id == run] == ["portfolio_risk/deploy-003"]
    assert len(h.fake.bodies("/deployments/filter")) == before + 1  # only the round-robin page


async def test_names_are_resolved_once_and_cached() -> None:
    h = Harness()
    dep = h.fake.add_deployment("daily")
    h.fake.deployments.clear()  # not in the round-robin pages: must be resolved by id
    h.fake.deployments[dep] = {"id": dep, "name": "daily", "flow_id": FLOW_ID}
    for i in range(3):
        h.fake.add_run("RUNNING", "Running", expected=h.now, start=h.now, deployment_id=dep)
        result = await h.poll()
        assert {u.pipeline for u in result.runs} == {"portfolio_risk/daily"}, i
        h.advance(15)
    flow_lookups = h.fake.bodies("/flows/filter")
    by_id = [b for b in h.fake.bodies("/deployments/filter") if "deployments" in b]
    assert len(flow_lookups) == 1 and flow_lookups[0]["flows"]["id"]["any_"] == [FLOW_ID]
    assert len(by_id) <= 1


async def test_window_that_overflows_the_page_is_split_and_nothing_is_lost() -> None:
    h = Harness(initial_lookback="1h")
    now = h.now
    ids = {
        h.fake.add_run(
            "COMPLETED",
            "Completed",
            expected=now - timedelta(seconds=i / 10),
            start=now - timedelta(seconds=i / 10),
            end=now - timedelta(seconds=i / 10),
        )
        for i in range(450)
    }
    result = await h.poll()
    reported = [u.run_id for u in result.runs]
    assert set(reported) == ids and len(reported) == len(ids)
    windows = [b for b in h.fake.bodies("/flow_runs/filter") if "operator" in b["flow_runs"]]
    assert len(windows) > 1 and all(b["limit"] == 200 for b in windows)
    assert parse(h.cursor["since"]) == now - timedelta(seconds=60)


async def test_burst_in_one_second_is_paged_by_offset() -> None:
    h = Harness()
    await h.poll()  # a quiet first cycle: the next window is just the poll interval plus the overlap
    h.advance(15)
    at = h.now - timedelta(seconds=10)
    ids = {h.fake.add_run("COMPLETED", "Completed", expected=at, start=at, end=at) for _ in range(450)}
    result = await h.poll()
    assert {u.run_id for u in result.runs} == ids and len(result.runs) == 450
    offsets = [b.get("offset", 0) for b in h.fake.bodies("/flow_runs/filter") if "operator" in b["flow_runs"]]
    assert len([o for o in offsets if o > 0]) >= 2  # one-second slice with 450 runs: three pages
    assert parse(h.cursor["since"]) == h.now - timedelta(seconds=60)


async def test_catch_up_beyond_the_budget_resumes_next_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_mod, "WINDOW_BUDGET", 3)
    h = Harness()
    now = h.now
    ids = {
        h.fake.add_run(
            "COMPLETED",
            "Completed",
            expected=now - timedelta(minutes=50 - i / 10),
            start=now - timedelta(minutes=50 - i / 10),
            end=now - timedelta(minutes=50 - i / 10),
        )
        for i in range(500)
    }
    seen: list[str] = []
    first = await h.poll()
    seen += [u.run_id for u in first.runs]
    assert parse(h.cursor["since"]) < now  # progress is partial but kept
    for _ in range(10):
        seen += [u.run_id for u in (await h.poll()).runs]
    assert set(seen) == ids and len(seen) == len(ids)


async def test_late_runs_are_read_by_name_with_expected_start_bounded_by_now() -> None:
    h = Harness()
    late = h.fake.add_run("SCHEDULED", "Late", expected=h.now - timedelta(minutes=30))
    h.fake.add_run("SCHEDULED", "Scheduled", expected=h.now + timedelta(hours=2))  # pre-created future run
    result = await h.poll()
    assert [(u.run_id, u.state) for u in result.runs] == [(late, RunState.LATE)]
    late_bodies = [b for b in h.fake.bodies("/flow_runs/filter") if "name" in b["flow_runs"].get("state", {})]
    assert late_bodies and all(
        b["flow_runs"]["state"]["name"]["any_"] == ["Late"]
        and parse(b["flow_runs"]["expected_start_time"]["before_"]) == h.now
        and "after_" in b["flow_runs"]["expected_start_time"]
        for b in late_bodies
    )


async def test_end_time_filter_only_where_the_server_has_it() -> None:
    new, old = Harness(version="3.9.1"), Harness(version="3.0.3")
    await new.poll()
    await old.poll()
    new_window = new.fake.bodies("/flow_runs/filter")[0]["flow_runs"]
    old_window = old.fake.bodies("/flow_runs/filter")[0]["flow_runs"]
    assert new_window["operator"] == "or_" and "end_time" in new_window and "start_time" in new_window
    assert "end_time" not in old_window and "operator" not in old_window


async def test_unknown_version_learns_end_time_support_from_the_422() -> None:
    h = Harness(version="3.0.1")
    h.fake.override = lambda r: (
        httpx.Response(404, json={"detail": "Not Found"}) if r.url.path.endswith("/version") else None
    )
    first = await h.poll()
    assert first.health.reachable and first.health.version is None
    second = await h.poll()
    assert second.health.reachable and second.requests == 5  # no second failed try


async def test_long_run_ending_on_an_old_server_is_followed_by_id() -> None:
    h = Harness(version="2.20.3")
    start = h.now - timedelta(hours=3)
    run = h.fake.add_run("RUNNING", "Running", expected=start, start=start)
    assert [u.state for u in (await h.poll()).runs] == [RunState.RUNNING]
    h.advance(15)
    h.fake.set_state(run, "COMPLETED", "Completed", at=h.now, end=h.now)  # no end_time filter to see this
    result = await h.poll()
    assert [(u.run_id, u.state) for u in result.runs] == [(run, RunState.SUCCESS)]
    by_id = [b for b in h.fake.bodies("/flow_runs/filter") if "id" in b["flow_runs"]]
    assert by_id and by_id[-1]["flow_runs"]["id"]["any_"] == [run]
    h.advance(15)
    assert (await h.poll()).runs == ()


async def test_run_waiting_for_a_retry_is_followed_until_it_runs_again() -> None:
    h = Harness()
    start = h.now - timedelta(hours=1)
    run = h.fake.add_run("RUNNING", "Running", expected=start, start=start)
    await h.poll()
    h.advance(15)
    h.fake.set_state(run, "SCHEDULED", "AwaitingRetry", at=h.now)  # leaves the active set, no end time
    assert [u.state for u in (await h.poll()).runs] == [RunState.RETRYING]
    h.advance(15)
    h.fake.set_state(run, "RUNNING", "Retrying", at=h.now)
    assert [u.state for u in (await h.poll()).runs] == [RunState.RETRYING]
    h.advance(15)
    assert (await h.poll()).runs == ()


async def test_work_pools_health_is_read_every_few_cycles() -> None:
    h = Harness()
    now = h.now
    h.fake.pools = [
        {"name": "risk-pool", "type": "process", "is_paused": False, "status": "READY"},
        {"name": "dead-pool", "type": "kubernetes", "is_paused": False, "status": "NOT_READY"},
        {"name": "empty-pool", "type": "process", "is_paused": False, "status": "NOT_READY"},
        {"name": "held-pool", "type": "process", "is_paused": True, "status": "PAUSED"},
        {"name": "cloud-pool", "type": "prefect:managed", "is_paused": False, "status": "READY"},
    ]
    h.fake.workers = {
        "risk-pool": [
            {
                "name": "w1",
                "last_heartbeat_time": iso(now - timedelta(seconds=5)),
                "heartbeat_interval_seconds": 30,
                "status": "ONLINE",
            }
        ],
        "dead-pool": [
            {
                "name": "w2",
                "last_heartbeat_time": iso(now - timedelta(minutes=10)),
                "heartbeat_interval_seconds": 30,
                "status": "OFFLINE",
            }
        ],
    }
    result = await h.poll()
    health = {c.name: c for c in result.health.components}
    assert set(health) == {"work_pool:risk-pool", "work_pool:dead-pool", "work_pool:empty-pool", "work_pool:held-pool"}
    assert health["work_pool:risk-pool"].healthy
    assert health["work_pool:risk-pool"].last_heartbeat == now - timedelta(seconds=5)
    assert not health["work_pool:dead-pool"].healthy and "10m" in (health["work_pool:dead-pool"].detail or "")
    assert not health["work_pool:empty-pool"].healthy
    assert health["work_pool:held-pool"].healthy and "paused" in (health["work_pool:held-pool"].detail or "")
    pool_reads = []
    for _ in range(8):
        h.advance(15)
        mark = len(h.fake.requests)
        r = await h.poll()
        # the last known health is reported every cycle, not only on the cycles that read it
        assert [(c.name, c.healthy) for c in r.health.components] == [
            (c.name, c.healthy) for c in result.health.components
        ]
        pool_reads.append(any("work_pools" in p for p in h.fake.paths()[mark:]))
    assert pool_reads == [False, False, False, True, False, False, False, True]


async def test_server_without_work_pools_is_watched_without_them() -> None:
    h = Harness(version="2.7.12")  # agents and work queues only: /work_pools/filter is a 404
    h.fake.add_run("RUNNING", "Running", expected=h.now, start=h.now)
    result = await h.poll()
    assert result.health.reachable and result.health.components == () and len(result.runs) == 1


async def test_task_states_are_reported_once_across_flow_run_changes() -> None:
    h = Harness()
    run = h.fake.add_run("RUNNING", "Running", expected=h.now, start=h.now)
    extract = h.fake.add_task(run, "extract", "COMPLETED")
    first = await h.poll()
    assert [(t.task, t.state) for t in first.tasks] == [("extract", RunState.SUCCESS)]
    h.advance(15)
    h.fake.set_state(run, "PAUSED", "Suspended", at=h.now)
    h.fake.add_task(run, "load", "RUNNING")
    second = await h.poll()
    assert [u.state for u in second.runs] == [RunState.PAUSED]
    assert [(t.task, t.state) for t in second.tasks] == [("load", RunState.RUNNING)]  # extract not again
    h.advance(15)
    h.fake.set_state(run, "FAILED", "Failed", at=h.now, end=h.now, message="boom")
    load = next(i for i, t in h.fake.task_runs.items() if i != extract)
    h.fake.task_runs[load].update(state_type="FAILED", state_id=str(uuid.uuid4()))
    h.fake.task_runs[load]["state"].update(type="FAILED", name="Failed", id=h.fake.task_runs[load]["state_id"])
    third = await h.poll()
    assert [(t.task, t.state) for t in third.tasks] == [("load", RunState.FAILED)]
    assert run not in h.cursor["tasks"]  # a finished run's task states need not be remembered


async def test_never_calls_endpoints_that_mark_queues_or_deployments_polled() -> None:
    h = Harness()
    now = h.now
    h.fake.pools = [{"name": "risk-pool", "type": "process", "is_paused": False, "status": "READY"}]
    dep = h.fake.add_deployment("daily")
    h.fake.add_run("SCHEDULED", "Late", expected=now - timedelta(minutes=2), deployment_id=dep)
    h.fake.add_run("SCHEDULED", "Scheduled", expected=now + timedelta(minutes=2), deployment_id=dep)
    run = h.fake.add_run("RUNNING", "Running", expected=now, start=now, deployment_id=dep)
    for i in range(10):
        if i == 3:
            h.fake.set_state(run, "COMPLETED", "Completed", at=h.now, end=h.now)
        await h.poll()
        h.advance(15)
    forbidden = [p for p in h.fake.paths() if any(word in p for word in POLLING_PATHS) or "/work_queues/" in p]
    assert forbidden == []
    assert {r.method for r in h.fake.requests} <= {"GET", "POST"}
    assert all(r.url.path.endswith(("/filter", "/health", "/admin/version")) for r in h.fake.requests)


@pytest.mark.parametrize(
    ("spec", "header"),
    [
        ({"auth_string": "sentinel:s3cret-pw"}, "Basic " + base64.b64encode(b"sentinel:s3cret-pw").decode()),
        ({"api_key": "pnu_secretkey123"}, "Bearer pnu_secretkey123"),
        ({}, None),
    ],
)
async def test_auth_header_is_sent_on_every_request(spec: dict[str, str], header: str | None) -> None:
    h = Harness(**spec)
    await h.poll()
    assert {r.headers.get("authorization") for r in h.fake.requests} == {header}


async def test_rejected_credentials_give_a_clear_error_without_the_secret() -> None:
    h = Harness(auth_string="sentinel:s3cret-pw")
    h.fake.override = lambda r: (
        None if r.url.path.endswith("/health") else httpx.Response(401, json={"exception_message": "Unauthorized"})
    )
    result = await h.poll()
    error = result.health.error or ""
    assert not result.health.reachable and "401" in error and "auth_string" in error
    assert "s3cret" not in error and "c2VudGluZWw6czNjcmV0LXB3" not in error  # nor its base64


def _respond(status: int, content: bytes | str = b"", **kw: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda r: httpx.Response(status, content=content, headers={"content-type": "application/json"}, **kw)


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


BAD_FLOW_RUNS: list[tuple[str, Callable[[httpx.Request], httpx.Response], str, str]] = [
    ("http 500", _respond(500, b'{"exception_message": "Internal Server Error"}'), "HTTP 500", "http_5xx"),
    ("timeout", _timeout, "timed out", "timeout"),
    ("invalid json", _respond(200, b"<html>proxy error</html>"), "not JSON", "invalid_json"),
    (
        "422 detail",
        _respond(422, json.dumps({"detail": "Invalid limit: must be less than or equal to 200."})),
        "Invalid limit",
        "http_4xx",
    ),
    (
        "422 exception_detail",
        _respond(
            422,
            json.dumps(
                {
                    "exception_message": "Invalid request received.",
                    "exception_detail": [
                        {
                            "type": "extra_forbidden",
                            "loc": ["body", "flow_runs", "updated"],
                            "msg": "Extra inputs are not permitted",
                        }
                    ],
                    "request_body": {"x": 1},
                }
            ),
        ),
        "flow_runs.updated: Extra inputs are not permitted",
        "http_4xx",
    ),
    ("object instead of list", _respond(200, b'{"results": []}'), "unexpected response shape", "invalid_payload"),
    (
        "run without id",
        _respond(200, json.dumps([{"flow_id": FLOW_ID, "state_type": "RUNNING"}])),
        "unexpected response shape",
        "invalid_payload",
    ),
    (
        "garbage timestamp",
        _respond(200, json.dumps([{**FLOW_RUN_TEMPLATE, "start_time": "yesterday-ish"}])),
        "start_time",
        "invalid_payload",
    ),
]


@pytest.mark.parametrize(("case", "respond", "message", "outcome"), BAD_FLOW_RUNS, ids=[c[0] for c in BAD_FLOW_RUNS])
async def test_bad_answers_make_the_source_unreachable_and_keep_the_cursor(
    case: str, respond: Callable[[httpx.Request], httpx.Response], message: str, outcome: str
) -> None:
    h = Harness()
    h.fake.add_run("RUNNING", "Running", expected=h.now, start=h.now)
    await h.poll()
    before = dict(h.cursor)
    h.advance(15)
    h.fake.override = lambda r: respond(r) if r.url.path.endswith("/flow_runs/filter") else None
    result = await h.poll()  # must not raise
    assert not result.health.reachable
    assert message in (result.health.error or "")
    assert result.cursor == before and result.runs == ()
    assert outcome in h.outcomes
    h.fake.override = None  # and it recovers on the next cycle, without repeating the old run
    h.advance(15)
    recovered = await h.poll()
    assert recovered.health.reachable and recovered.runs == ()


async def test_health_false_or_down_is_unreachable() -> None:
    h = Harness()
    h.fake.override = lambda r: httpx.Response(200, json=False) if r.url.path.endswith("/health") else None
    result = await h.poll()
    assert not result.health.reachable and "unhealthy" in (result.health.error or "")
    h.fake.override = lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r))
    result = await h.poll()
    assert not result.health.reachable and "ConnectError" in (result.health.error or "")
    assert "connect_error" in h.outcomes


async def test_unknown_state_types_are_reported_as_unknown_and_counted_once() -> None:
    h = Harness()
    run = h.fake.add_run("RUNNING", "Running", expected=h.now, start=h.now)
    h.fake.flow_runs[run].update(state_type="HIBERNATING", state_name="Hibernating")
    h.fake.flow_runs[run]["state"].update(type="HIBERNATING", name="Hibernating")
    h.fake.flow_runs[run]["end_time"] = iso(h.now)
    h.fake.add_task(run, "load", "WARPING")
    h.fake.task_runs[next(iter(h.fake.task_runs))]["state"]["type"] = "WARPING"
    result = await h.poll()
    assert result.health.reachable
    assert [(u.state, u.raw_state) for u in result.runs] == [(RunState.UNKNOWN, "Hibernating")]
    assert [t.state for t in result.tasks] == [RunState.UNKNOWN]
    assert h.outcomes.count("unknown_state") == 2
    h.advance(15)
    await h.poll()
    assert h.outcomes.count("unknown_state") == 2  # the same state is not counted again


async def test_server_without_health_or_admin_api_is_still_watched() -> None:
    h = Harness()  # e.g. a Prefect Cloud workspace URL: no /health, no /admin/version
    h.fake.override = lambda r: (
        h.fake.reply({"detail": "Not Found"}, 404) if r.url.path.endswith(("/health", "/version")) else None
    )
    h.fake.add_run("RUNNING", "Running", expected=h.now, start=h.now)
    result = await h.poll()
    assert result.health.reachable and result.health.version is None and len(result.runs) == 1
    assert parse(h.cursor["since"]) == h.now - timedelta(seconds=60)  # the 404 still carried the server's Date


async def test_unreadable_cursor_starts_afresh_instead_of_failing() -> None:
    h = Harness()
    h.fake.add_run("RUNNING", "Running", expected=h.now, start=h.now)
    h.cursor = {"v": 1, "since": "not a time", "runs": []}
    result = await h.poll()
    assert result.health.reachable and len(result.runs) == 1


# ------------------------------------------------------------------------------------------ simulator


async def test_adapter_against_the_simulator_end_to_end() -> None:
    clock = FrozenClock(datetime(2026, 11, 25, 21, 0, tzinfo=UTC))
    world = World(seed=3)
    world.add_pipeline(
        SimPipeline(
            name="portfolio_risk/daily",
            system="prefect",
            schedule="*/5 * * * *",
            timezone="UTC",
            tasks=("load_positions", "compute_risk"),
            tags=("risk",),
            mean_task_seconds=20,
            retries=1,
            work_pool="risk-pool",
        )
    )
    world.add_pipeline(
        SimPipeline(
            name="ingest/stalled", system="prefect", schedule="*/5 * * * *", timezone="UTC", work_pool="dead-pool"
        )
    )
    world.add_pipeline(SimPipeline(name="airflow_dag", system="airflow", schedule="*/5 * * * *", timezone="UTC"))
    world.health.workers_online.update({"risk-pool": True, "dead-pool": False})
    world.advance(clock.now())

    root = web.Application()
    root.add_subapp("/prefect/", prefect_app(world, clock))
    runner = web.AppRunner(root, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    spec = SourceSpec(
        name="sim", kind="prefect", url=f"http://127.0.0.1:{port}/prefect/api", max_requests_per_second=100, burst=100
    )
    client = PoliteClient(spec)
    adapter = PrefectAdapter(spec, clock, client)
    try:
        cursor: dict[str, Any] = {}
        runs, tasks = [], []
        for _ in range(60):  # 30 simulated minutes in 30 s steps
            clock.advance(30)
            world.advance(clock.now())
            result = await adapter.poll(cursor)
            assert result.health.reachable, result.health.error
            cursor = result.cursor
            runs += result.runs
            tasks += result.tasks
        pipelines = {u.pipeline for u in runs}
        assert pipelines == {"portfolio_risk/daily", "ingest/stalled"}
        risk = [u for u in runs if u.pipeline == "portfolio_risk/daily"]
        assert {RunState.RUNNING, RunState.SUCCESS} <= {u.state for u in risk}
        assert all(u.scheduled_for is not None and u.run_type == "scheduled" for u in risk)
        # a pool without a worker: its runs never start and turn Late, reported once each
        stalled = [u for u in runs if u.pipeline == "ingest/stalled"]
        assert stalled and {u.state for u in stalled} == {RunState.LATE}
        assert len(stalled) == len({u.run_id for u in stalled})
        changes = [(u.run_id, u.state, u.started_at, u.ended_at) for u in runs]
        assert len(changes) == len(set(changes)), "a state change was reported twice"
        assert {t.task for t in tasks} == {"load_positions", "compute_risk"}
        assert all(t.pipeline == "portfolio_risk/daily" for t in tasks)
        # every finished sim run was reported finished
        done = {r.id for r in world.runs.values() if r.system == "prefect" and r.state.terminal}
        assert done and done <= {u.run_id for u in runs if u.state.terminal}
        assert result.pipelines is not None and {p.pipeline for p in result.pipelines} == pipelines
        health = {c.name: c.healthy for c in result.health.components}
        assert health == {"work_pool:risk-pool": True, "work_pool:dead-pool": False}

        raw = await client.request("POST", "/flow_runs/filter", json={"limit": 201})
        assert raw.status_code == 422 and "limit" in raw.json()["detail"]
        raw = await client.request("POST", "/flow_runs/filter", json={"flow_runs": {"updated": {}}})
        assert raw.status_code == 422 and raw.json()["exception_detail"][0]["type"] == "extra_forbidden"

        world.health.api_up = False
        down = await adapter.poll(cursor)
        assert not down.health.reachable and "503" in (down.health.error or "") and down.cursor == cursor
        assert client.server_time == clock.now().replace(microsecond=0)  # Date header from the sim clock
    finally:
        await client.aclose()
        await runner.cleanup()


async def test_first_poll_reads_the_initial_lookback_over_several_cycles() -> None:
    h = Harness(initial_lookback="1d")
    now = h.now
    ids = {
        h.fake.add_run(
            "COMPLETED",
            "Completed",
            expected=now - timedelta(hours=i / 10),
            start=now - timedelta(hours=i / 10),
            end=now - timedelta(hours=i / 10) + timedelta(minutes=1),
        )
        for i in range(1, 230)
    }
    seen: set[str] = set()
    for _ in range(20):
        result = await h.poll()
        seen |= {u.run_id for u in result.runs}
        if result.caught_up:
            break
        h.advance(1)
    assert result.caught_up
    assert seen == ids  # a day back, nothing lost, whatever the number of cycles it took
