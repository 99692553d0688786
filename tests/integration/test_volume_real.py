"""A successful run's data volume, read from real servers as `volume:` of a source configures it.

Airflow 3.3 and 2.10: DAG `volume_pipeline` (tests/servers/dags) pushes XCom `rows` = 1234 from task
`publish`. Prefect 3.9: flow tests/servers/flows/volume_flow.py records artifact `rows-loaded` = 1234.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.airflow import AirflowAdapter
from adapters.http import PoliteClient
from adapters.prefect import PrefectAdapter
from sentinel.clock import SystemClock
from sentinel.model import RunState, RunUpdate, SourceSpec
from tests.servers.airflow import AirflowServer
from tests.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

ROWS = 1234.0
VOLUME_FLOW = Path(__file__).resolve().parents[1] / "servers" / "flows" / "volume_flow.py"


class Recording(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str, int]] = []  # method, path, status

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.seen.append((request.method, request.url.path, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _poll_until_success(adapter: Any, run_ids: set[str], timeout: float = 60.0) -> dict[str, RunUpdate]:
    """Poll until every run in `run_ids` was reported successful; returns the last update of each."""
    cursor: dict[str, Any] = {}
    seen: dict[str, RunUpdate] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await adapter.poll(cursor)
        assert result.health.reachable, result.health.error
        cursor = result.cursor
        seen.update({u.run_id: u for u in result.runs if u.run_id in run_ids})
        if all(rid in seen and seen[rid].state is RunState.SUCCESS for rid in run_ids):
            return seen
        assert asyncio.get_running_loop().time() < deadline, f"runs never reported successful: {seen}"
        await asyncio.sleep(1)


class PerCycle:
    """An adapter that notes, per poll, the configured flows' runs first seen successful and the artifact reads."""

    def __init__(self, inner: PrefectAdapter, transport: Recording) -> None:
        self.inner = inner
        self.transport = transport
        self.known: set[str] = set()
        self.cycles: list[tuple[int, list[tuple[str, int]]]] = []

    async def poll(self, cursor: dict[str, Any]) -> Any:
        before = len(self.transport.seen)
        result = await self.inner.poll(cursor)
        reads = [(m, status) for m, path, status in self.transport.seen[before:] if path.endswith("/artifacts/filter")]
        fresh = {
            u.run_id for u in result.runs
            if u.state is RunState.SUCCESS and u.pipeline.startswith("sentinel-") and u.run_id not in self.known
        }  # fmt: skip
        self.known |= fresh
        self.cycles.append((len(fresh), reads))
        return result


@pytest.mark.parametrize("stack", ["airflow3", "airflow2"])
async def test_airflow_successful_run_carries_its_xcom_volume(request: pytest.FixtureRequest, stack: str) -> None:
    server: AirflowServer = request.getfixturevalue(stack)
    for dag_id in ("volume_pipeline", "healthy_pipeline"):
        await asyncio.to_thread(server.wait_dag_loaded, dag_id)
        await asyncio.to_thread(server.unpause, dag_id)
    ids = {}
    for dag_id in ("volume_pipeline", "healthy_pipeline"):
        ids[dag_id] = await asyncio.to_thread(server.trigger, dag_id)
        await asyncio.to_thread(server.wait_run, dag_id, ids[dag_id])
    spec = SourceSpec(
        name=f"vol-{stack}", kind="airflow", url=server.url, username=server.username, password=server.password,
        max_requests_per_second=50, burst=50,
        volume={"pipelines": ["volume_*"], "key": "rows", "task_id": "publish"},
    )  # fmt: skip
    transport = Recording()
    client = PoliteClient(spec, transport=transport)
    try:
        runs = await _poll_until_success(AirflowAdapter(spec, SystemClock(), client), set(ids.values()))
        assert runs[ids["volume_pipeline"]].volume == ROWS
        assert runs[ids["healthy_pipeline"]].volume is None  # not a configured pipeline: never asked
        xcom_reads = [s for s in transport.seen if "/xcomEntries/" in s[1]]
        assert [(m, status) for m, _, status in xcom_reads] == [("GET", 200)]  # once, for the one run
    finally:
        await client.aclose()


async def test_prefect_successful_run_carries_its_artifact_volume(prefect3: PrefectServer) -> None:
    with_volume = await asyncio.to_thread(prefect3.run_flow, "sentinel-volume", script=VOLUME_FLOW)
    without = await asyncio.to_thread(prefect3.run_flow, "sentinel-no-volume")
    spec = SourceSpec(
        name="vol-prefect", kind="prefect", url=prefect3.api_url, max_requests_per_second=50, burst=50,
        volume={"pipelines": ["sentinel-*"], "key": "rows-loaded"},
    )  # fmt: skip
    transport = Recording()
    client = PoliteClient(spec, transport=transport)
    try:
        adapter = PerCycle(PrefectAdapter(spec, SystemClock(), client), transport)
        runs = await _poll_until_success(adapter, {with_volume, without})
        assert runs[with_volume].volume == ROWS
        assert runs[without].volume is None  # configured, but the run recorded no such artifact
        # One batch per cycle that brought successful runs of configured flows, however many they were (the
        # first cycle reads the history of earlier tests too); a cycle with none asks nothing.
        assert adapter.cycles and adapter.cycles[0][0] >= 1
        for newly_successful, reads in adapter.cycles:
            assert reads == ([("POST", 200)] if newly_successful else [])
    finally:
        await client.aclose()
