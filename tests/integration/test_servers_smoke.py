"""The harness itself works: each real server runs a failing and a succeeding pipeline, and a plain HTTP
client, logging in the way Sentinel's adapters will (Airflow 3 JWT, Airflow 2 basic auth, Prefect no auth),
reads back exactly those outcomes. (stop_api/start_api are exercised by test_pages_real's SourceDown step;
each restart costs 12-17 s, so they are not repeated here.)
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.servers.airflow import AirflowServer
from tests.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

AIRFLOW_STACKS = ["airflow3", "airflow2"]
# Generous: SQLite-backed servers on a loaded 2-core CI machine occasionally stall a request for seconds.
HTTP_TIMEOUT = 30


def _airflow_client(server: AirflowServer) -> httpx.Client:
    """A client built only from what a Sentinel user configures: url, username, password."""
    if server.major == 2:
        return httpx.Client(
            base_url=f"{server.url}/api/v1", auth=(server.username, server.password), timeout=HTTP_TIMEOUT
        )
    token = httpx.post(
        f"{server.url}/auth/token",
        json={"username": server.username, "password": server.password},
        timeout=HTTP_TIMEOUT,
    )
    assert token.status_code == 201, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=f"{server.url}/api/v2", headers=headers, timeout=HTTP_TIMEOUT)


@pytest.mark.parametrize("stack", AIRFLOW_STACKS)
def test_airflow_reports_failed_and_successful_runs(request: pytest.FixtureRequest, stack: str) -> None:
    server: AirflowServer = request.getfixturevalue(stack)
    server.wait_dag_loaded("toggle_pipeline")
    server.unpause("toggle_pipeline")

    failed_id = server.trigger("toggle_pipeline", {"fail": True})
    succeeded_id = server.trigger("toggle_pipeline")
    assert server.wait_run("toggle_pipeline", failed_id)["state"] == "failed"
    assert server.wait_run("toggle_pipeline", succeeded_id)["state"] == "success"

    with _airflow_client(server) as api:
        # By id rather than from the list: other tests in the session trigger this DAG too.
        for run_id, state in ((failed_id, "failed"), (succeeded_id, "success")):
            run = api.get(f"/dags/toggle_pipeline/dagRuns/{run_id}")
            assert run.status_code == 200, run.text
            assert run.json()["state"] == state

        # The failure is where the DAG puts it: extract ran fine, load raised.
        tasks = api.get(f"/dags/toggle_pipeline/dagRuns/{failed_id}/taskInstances")
        assert tasks.status_code == 200, tasks.text
        task_states = {ti["task_id"]: ti["state"] for ti in tasks.json()["task_instances"]}
        assert task_states == {"extract": "success", "load": "failed"}


def _flow_runs_named(server: PrefectServer, flow_name: str) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{server.api_url}/flow_runs/filter",
        json={"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 10},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()
    return runs


def test_prefect_reports_failed_and_completed_runs(prefect3: PrefectServer) -> None:
    failed_id = prefect3.run_flow("smoke-fails", fail=True)
    completed_id = prefect3.run_flow("smoke-completes", fail=False)

    assert [(r["id"], r["state_type"]) for r in _flow_runs_named(prefect3, "smoke-fails")] == [(failed_id, "FAILED")]
    assert [(r["id"], r["state_type"]) for r in _flow_runs_named(prefect3, "smoke-completes")] == [
        (completed_id, "COMPLETED")
    ]

    tasks = httpx.post(
        f"{prefect3.api_url}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [failed_id]}}},
        timeout=HTTP_TIMEOUT,
    )
    assert tasks.status_code == 200, tasks.text
    assert {t["task_key"].split("-")[0]: t["state_type"] for t in tasks.json()} == {
        "extract": "COMPLETED",
        "load": "FAILED",
    }
