"""The Prefect adapter against a real Prefect 3.9 server (fixture `prefect3`).

Proves what the fake and the simulator cannot: that the filter bodies are accepted (Prefect rejects
unknown keys with 422), that the field names and state words are the real ones, and that polling leaves no
trace a worker or deployment would show (no "polled" marks).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.http import PoliteClient
from adapters.prefect import PrefectAdapter
from sentinel.clock import SystemClock
from sentinel.model import PollResult, RunState, SourceSpec
from tests.servers.prefect import PrefectServer
from tests.servers.procs import wait_until

pytestmark = pytest.mark.integration

POLLING_PATHS = ("get_runs", "get_scheduled_flow_runs", "/work_queues/")


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real network, plus a list of every path the adapter asked for."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Watcher:
    def __init__(self, server: PrefectServer) -> None:
        self.spec = SourceSpec(
            name="prefect-it", kind="prefect", url=server.api_url, max_requests_per_second=50, burst=50
        )
        self.transport = RecordingTransport()
        self.outcomes: list[str] = []
        self.client = PoliteClient(
            self.spec, transport=self.transport, on_request=lambda o, _s: self.outcomes.append(o)
        )
        self.adapter = PrefectAdapter(self.spec, SystemClock(), self.client)
        self.cursor: dict[str, Any] = {}

    async def poll(self) -> PollResult:
        result = await self.adapter.poll(self.cursor)
        if result.health.reachable:
            self.cursor = result.cursor
        return result


async def test_failed_and_successful_adhoc_runs_are_seen_once(prefect3: PrefectServer) -> None:
    ok_id = prefect3.run_flow("sentinel-it-ok")
    bad_id = prefect3.run_flow("sentinel-it-bad", fail=True)
    watcher = Watcher(prefect3)
    try:
        first = await watcher.poll()
        assert first.health.reachable, first.health.error
        assert first.health.version == "3.9.1" and first.health.api == "prefect"
        assert watcher.adapter._end_time is True  # the or_(start_time, end_time) window was accepted

        runs = {u.run_id: u for u in first.runs}
        assert runs[ok_id].pipeline == "sentinel-it-ok" and runs[ok_id].state is RunState.SUCCESS
        assert runs[bad_id].pipeline == "sentinel-it-bad" and runs[bad_id].state is RunState.FAILED
        assert "load failed on purpose" in (runs[bad_id].message or "")
        for run in (runs[ok_id], runs[bad_id]):
            assert run.run_type == "manual" and run.scheduled_for is not None
            assert run.started_at is not None and run.ended_at is not None and run.ended_at >= run.started_at
            assert run.url == f"{prefect3.url}/runs/flow-run/{run.run_id}"

        tasks = {(t.run_id, t.task): t for t in first.tasks}
        assert tasks[(ok_id, "extract")].state is RunState.SUCCESS
        assert tasks[(ok_id, "load")].state is RunState.SUCCESS
        assert tasks[(bad_id, "extract")].state is RunState.SUCCESS
        assert tasks[(bad_id, "load")].state is RunState.FAILED
        assert tasks[(bad_id, "load")].try_number == 1 and tasks[(bad_id, "load")].max_tries == 0  # retries=0
        assert all(t.pipeline == "sentinel-it-bad" for t in first.tasks if t.run_id == bad_id)

        second = await watcher.poll()
        assert second.health.reachable, second.health.error
        said = {(u.run_id, u.state, u.ended_at) for u in first.runs}
        assert not said & {(u.run_id, u.state, u.ended_at) for u in second.runs}
        assert not {(t.run_id, t.task, t.state) for t in first.tasks} & {
            (t.run_id, t.task, t.state) for t in second.tasks
        }
        assert not [o for o in watcher.outcomes if o != "ok"]
    finally:
        await watcher.client.aclose()


async def test_late_deployment_run_and_a_pool_without_worker(prefect3: PrefectServer) -> None:
    def created(resp: httpx.Response) -> dict[str, Any]:
        assert resp.status_code in (200, 201), resp.text
        body: dict[str, Any] = resp.json()
        return body

    flow = created(prefect3.request("POST", "/flows/", json={"name": "sentinel-it-late"}))
    created(prefect3.request("POST", "/work_pools/", json={"name": "sentinel-it-pool", "type": "process"}))
    deployment = created(
        prefect3.request(
            "POST",
            "/deployments/",
            json={"name": "hourly", "flow_id": flow["id"], "work_pool_name": "sentinel-it-pool", "tags": ["it"]},
        )
    )
    due = datetime.now(UTC) - timedelta(minutes=2)
    run = created(
        prefect3.request(
            "POST",
            f"/deployments/{deployment['id']}/create_flow_run",
            json={
                "state": {
                    "type": "SCHEDULED",
                    "name": "Scheduled",
                    "state_details": {"scheduled_time": due.isoformat()},
                }
            },
        )
    )
    # The server's late-runs service marks it Late some seconds after it is overdue.
    wait_until(lambda: prefect3.flow_run(run["id"])["state_name"] == "Late", 90, "the run to turn Late", interval=1)

    watcher = Watcher(prefect3)
    try:
        result = await watcher.poll()
        assert result.health.reachable, result.health.error
        late = [u for u in result.runs if u.run_id == run["id"]]
        assert [(u.state, u.pipeline, u.raw_state) for u in late] == [
            (RunState.LATE, "sentinel-it-late/hourly", "Late")
        ]
        assert abs((late[0].scheduled_for - due).total_seconds()) < 1  # type: ignore[operator]

        pools = {c.name: c for c in result.health.components}
        assert not pools["work_pool:sentinel-it-pool"].healthy
        assert result.pipelines is not None
        info = {p.pipeline: p for p in result.pipelines}["sentinel-it-late/hourly"]
        assert info.tags == ("it",) and not info.paused

        for _ in range(3):
            assert run["id"] not in {u.run_id for u in (await watcher.poll()).runs}
        # Watching must not look like a worker: the deployment and pool stay NOT_READY.
        assert [p for p in watcher.transport.paths if any(w in p for w in POLLING_PATHS)] == []
        assert created(prefect3.request("GET", f"/deployments/{deployment['id']}"))["status"] == "NOT_READY"
        assert created(prefect3.request("GET", "/work_pools/sentinel-it-pool"))["status"] == "NOT_READY"
    finally:
        await watcher.client.aclose()


async def test_api_outage_is_reported_and_polling_resumes_without_repeats(prefect3: PrefectServer) -> None:
    watcher = Watcher(prefect3)
    try:
        before = prefect3.run_flow("sentinel-it-outage")
        first = await watcher.poll()
        assert before in {u.run_id for u in first.runs}
        cursor = watcher.cursor

        prefect3.stop_api()
        try:
            down = await watcher.poll()
        finally:
            prefect3.start_api()
        assert not down.health.reachable and down.cursor == cursor and "connect_error" in watcher.outcomes

        after = prefect3.run_flow("sentinel-it-outage", fail=True)
        back = await watcher.poll()
        assert back.health.reachable, back.health.error
        assert [u.state for u in back.runs if u.run_id == after] == [RunState.FAILED]
        assert before not in {u.run_id for u in back.runs}
    finally:
        await watcher.client.aclose()
