"""The Airflow adapter against real Airflow 3.3 and 2.10 servers (fixtures `airflow3`, `airflow2`).

Proves what the fake and the simulator cannot: that each version accepts exactly the query parameters the
adapter sends (v1 answers 400 to any it does not know), that field names and state words are the real ones,
that a change feed holding more rows than a page is read completely (v1: split windows and offset pages;
v2: cursor pages), that mapped task instances are found under a percent-encoded run id, and that a
second poll with the returned cursor reports nothing twice.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from adapters.airflow import AirflowAdapter
from adapters.http import PoliteClient
from sentinel.clock import SystemClock
from sentinel.model import PollResult, RunState, RunUpdate, SourceSpec, TaskUpdate
from tests.servers.airflow import DAGS_DIR, AirflowServer

pytestmark = pytest.mark.integration

STACKS = ["airflow3", "airflow2"]
WIDE_DAG = "sentinel_wide_pipeline"
FAN_OUT = 150  # task instances behind one failing task: more than one page (100) of the change feed

_WIDE_DAG_SOURCE = textwrap.dedent(
    f'''
    from __future__ import annotations

    from datetime import datetime, timezone

    try:
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import DAG
    except ImportError:
        from airflow import DAG
        from airflow.operators.bash import BashOperator
        from airflow.operators.empty import EmptyOperator

    with DAG(dag_id="{WIDE_DAG}", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
             catchup=False, tags=["sentinel-test"]):
        first = BashOperator(task_id="start", bash_command="exit 1", retries=0)
        for i in range({FAN_OUT}):
            first >> EmptyOperator(task_id=f"t{{i:03}}")
        BashOperator.partial(task_id="fan", retries=0).expand(bash_command=["echo 1", "echo 2", "exit 3"])
    '''
)


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real network, plus every request the adapter made and the status it got."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[httpx.Request, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.seen.append((request, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class Watcher:
    def __init__(self, server: AirflowServer) -> None:
        self.spec = SourceSpec(
            name=f"it-{server.stack}", kind="airflow", url=server.url, username=server.username,
            password=server.password, max_requests_per_second=50, burst=50, overlap="60s",
        )  # fmt: skip
        self.transport = RecordingTransport()
        self.outcomes: list[str] = []
        self.client = PoliteClient(
            self.spec, transport=self.transport, on_request=lambda o, _s: self.outcomes.append(o)
        )
        self.adapter = AirflowAdapter(self.spec, SystemClock(), self.client)
        self.cursor: dict[str, Any] = {}
        self.runs: list[RunUpdate] = []
        self.tasks: list[TaskUpdate] = []

    async def poll(self) -> PollResult:
        result = await self.adapter.poll(self.cursor)
        assert result.health.reachable, result.health.error
        self.cursor = result.cursor
        self.runs += result.runs
        self.tasks += result.tasks
        return result

    async def poll_until(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll until `done()`. Airflow's Date header (the cursor's "now") has 1 s resolution and trails
        by up to ~2 s, so a change made just before a poll is legitimately left for the next one."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await self.poll()
            if done():
                return
            assert asyncio.get_running_loop().time() < deadline, "change never reported"
            await asyncio.sleep(1)

    def has_run(self, run_id: str, state: RunState) -> bool:
        return any(u.run_id == run_id and u.state is state for u in self.runs)

    def run(self, run_id: str) -> RunUpdate:
        return [u for u in self.runs if u.run_id == run_id][-1]

    def task_states(self, run_id: str) -> dict[str, TaskUpdate]:
        return {t.task: t for t in self.tasks if t.run_id == run_id}

    def refused(self) -> list[str]:
        """Requests answered 4xx, apart from the one probe that tells Airflow 2 from 3."""
        return [
            f"{q.method} {q.url} -> {status}"
            for q, status in self.transport.seen
            if status >= 400 and q.url.path != "/api/v2/version"
        ]

    async def aclose(self) -> None:
        await self.client.aclose()


async def _run_to_end(server: AirflowServer, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    run_id = await asyncio.to_thread(server.trigger, dag_id, conf)
    await asyncio.to_thread(server.wait_run, dag_id, run_id)
    return run_id


def _no_repeats(updates: list[Any]) -> None:
    """The same change (equal content) is never reported twice."""
    keys = [u.model_dump_json() for u in updates]
    assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1][:3]


@pytest.mark.parametrize("stack", STACKS)
async def test_failed_and_successful_runs_health_and_no_duplicates(request: pytest.FixtureRequest, stack: str) -> None:
    server: AirflowServer = request.getfixturevalue(stack)
    await asyncio.to_thread(server.wait_dag_loaded, "toggle_pipeline")
    await asyncio.to_thread(server.unpause, "toggle_pipeline")
    watcher = Watcher(server)
    try:
        first = await watcher.poll()
        major = "3.3.2" if server.major == 3 else "2.10.5"
        assert first.health.version == major
        assert first.health.api == ("airflow-v2" if server.major == 3 else "airflow-v1")
        components = {c.name: c for c in first.health.components}
        assert components["scheduler"].healthy and components["scheduler"].last_heartbeat is not None
        assert ("dag_processor" in components) == (server.major == 3)
        assert "triggerer" not in components  # none runs in this harness: status null, not watched
        assert first.pipelines is not None and "toggle_pipeline" in {p.pipeline for p in first.pipelines}

        failed_id = await _run_to_end(server, "toggle_pipeline", {"fail": True})
        ok_id = await _run_to_end(server, "toggle_pipeline")
        await watcher.poll_until(
            lambda: (
                watcher.has_run(failed_id, RunState.FAILED)
                and watcher.has_run(ok_id, RunState.SUCCESS)
                and len(watcher.task_states(ok_id)) == 2
                and all(t.state.terminal for t in watcher.task_states(ok_id).values())
            )
        )

        failed, ok = watcher.run(failed_id), watcher.run(ok_id)
        assert (failed.state, failed.raw_state) == (RunState.FAILED, "failed")
        assert ok.state is RunState.SUCCESS and ok.ended_at is not None and ok.scheduled_for is not None
        assert failed.url is not None and "%3A" in failed.url and "%2B" in failed.url
        tasks = watcher.task_states(failed_id)
        assert tasks["load"].state is RunState.FAILED and tasks["extract"].state is RunState.SUCCESS
        assert {t.state for t in watcher.task_states(ok_id).values()} == {RunState.SUCCESS}

        # The returned cursor, even in a fresh adapter (a restart), reports none of it again.
        second = await watcher.poll()
        assert second.runs == () and second.tasks == ()
        restarted = AirflowAdapter(watcher.spec, SystemClock(), watcher.client)
        again = await restarted.poll(watcher.cursor)
        assert again.health.reachable and again.runs == () and again.tasks == ()
        _no_repeats(watcher.runs)
        _no_repeats(watcher.tasks)
        assert watcher.refused() == []
        assert second.requests <= 5
    finally:
        await watcher.aclose()


@pytest.mark.parametrize("stack", STACKS)
async def test_a_feed_bigger_than_a_page_and_mapped_tasks(request: pytest.FixtureRequest, stack: str) -> None:
    server: AirflowServer = request.getfixturevalue(stack)
    (server.dags_folder / f"{WIDE_DAG}.py").write_text(_WIDE_DAG_SOURCE)
    await asyncio.to_thread(server.wait_dag_loaded, WIDE_DAG, 120.0)
    await asyncio.to_thread(server.unpause, WIDE_DAG)
    watcher = Watcher(server)
    try:
        await watcher.poll()
        run_id = await _run_to_end(server, WIDE_DAG)
        await watcher.poll_until(
            lambda: (
                watcher.has_run(run_id, RunState.FAILED)
                and len(watcher.task_states(run_id)) == FAN_OUT + 2
                and all(t.state.terminal for t in watcher.task_states(run_id).values())
            )
        )
        await watcher.poll()  # the overlap re-read: still nothing twice

        assert watcher.run(run_id).state is RunState.FAILED
        tasks = watcher.task_states(run_id)
        assert len(tasks) == FAN_OUT + 2  # start, fan (folded), t000..t149
        assert tasks["start"].state is RunState.FAILED
        behind = [tasks[f"t{i:03}"] for i in range(FAN_OUT)]
        assert {(t.state, t.raw_state) for t in behind} == {(RunState.SKIPPED, "upstream_failed")}
        assert (tasks["fan"].state, tasks["fan"].map_count) == (RunState.FAILED, 3)
        _no_repeats(watcher.tasks)

        paths = [q.url for q, _ in watcher.transport.seen]
        mapped = [u for u in paths if u.path.endswith("/listMapped")]
        assert mapped and "%3A" in mapped[0].raw_path.decode() and "%2B" in mapped[0].raw_path.decode()
        feed = [u for u in paths if u.path.endswith("/dags/~/dagRuns/~/taskInstances")]
        if server.major == 3:
            assert any(u.params.get("cursor") not in (None, "") for u in feed)  # followed next_cursor
        else:
            assert any("offset" in u.params for u in feed) or len(feed) > 3  # split windows / offset pages
        assert watcher.refused() == []
    finally:
        await watcher.aclose()


async def test_a_refused_token_is_replaced_on_a_real_airflow_3(airflow3: AirflowServer) -> None:
    watcher = Watcher(airflow3)
    try:
        await watcher.poll()
        # As after the server's JWT secret rotated: Airflow answers 403 to a token it cannot verify.
        watcher.adapter._api.auth._token = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.forged"
        before = len(watcher.transport.seen)
        result = await watcher.poll()
        assert result.health.reachable
        statuses = [(q.url.path, s) for q, s in watcher.transport.seen[before:]]  # this poll's requests
        refused = [i for i, (_, s) in enumerate(statuses) if s == 403]
        assert refused and ("/auth/token", 201) in statuses[refused[0] :], statuses  # refused, then renewed
    finally:
        await watcher.aclose()


@pytest.mark.parametrize("stack", STACKS)
async def test_upstreams_come_from_assets_and_datasets(request: pytest.FixtureRequest, stack: str) -> None:
    server: AirflowServer = request.getfixturevalue(stack)
    for name in ("asset_producer", "asset_consumer"):
        target = server.dags_folder / f"{name}.py"
        if not target.exists():  # a server started before these files were added to tests/servers/dags
            target.write_text((DAGS_DIR / f"{name}.py").read_text())
        await asyncio.to_thread(server.wait_dag_loaded, name, 120.0)
    watcher = Watcher(server)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            # A fresh adapter reads the assets on its first cycle; the whole DAG list fits in one page here.
            watcher.adapter = AirflowAdapter(watcher.spec, SystemClock(), watcher.client)
            result = await watcher.poll()
            ups = {p.pipeline: p.upstreams for p in result.pipelines or ()}
            if ups.get("asset_consumer"):
                break
            assert asyncio.get_running_loop().time() < deadline, ups
            await asyncio.sleep(2)
        assert ups["asset_consumer"] == ("asset_producer",)
        assert ups["asset_producer"] == ()
        path = "/api/v2/assets" if server.major == 3 else "/api/v1/datasets"
        assert any(q.url.path == path for q, _ in watcher.transport.seen)
        assert watcher.refused() == []
    finally:
        await watcher.aclose()
