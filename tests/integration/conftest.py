"""Fixtures that hand integration tests a real, running Airflow 3, Airflow 2 or Prefect 3 server.

Servers are session-scoped and lazy: a stack is installed (first time only, cached under
~/.cache/sentinel-test) and started only when some selected test asks for its fixture, then shared by every
test in the session. Each server registers its own atexit hook on start, so even an aborted session (or a
SIGTERM from CI) does not leave schedulers running.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol, TypeVar

import pytest

from tests.servers.airflow import AirflowServer
from tests.servers.prefect import PrefectServer
from tests.servers.procs import install_sigterm_exit
from tests.servers.venvs import ensure_venv

_START_TIMES = pytest.StashKey[dict[str, float]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs against real Airflow/Prefect servers (slow; first run installs them)"
    )
    config.stash[_START_TIMES] = {}
    # Here, not in the fixtures: tests may request a server fixture from a worker thread
    # (asyncio.to_thread), and signal handlers can only be installed from the main thread.
    install_sigterm_exit()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    # Start-up cost is the bulk of integration time; printing it makes a slowdown visible in CI logs.
    times = config.stash.get(_START_TIMES, {})
    if times:
        summary = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in times.items())
        terminalreporter.write_line(f"integration servers started: {summary}")


class _Server(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


def _serve(config: pytest.Config, name: str, server: S) -> Iterator[S]:
    started = time.monotonic()
    server.start()
    config.stash[_START_TIMES][name] = time.monotonic() - started
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def airflow3(pytestconfig: pytest.Config) -> Iterator[AirflowServer]:
    """Airflow 3.3 (api-server, scheduler, dag-processor), admin/admin, DAGs from tests/servers/dags."""
    yield from _serve(pytestconfig, "airflow3", AirflowServer(3, venv=ensure_venv("airflow3")))


@pytest.fixture(scope="session")
def airflow2(pytestconfig: pytest.Config) -> Iterator[AirflowServer]:
    """Airflow 2.10 (webserver, scheduler), admin/admin with basic auth, DAGs from tests/servers/dags."""
    yield from _serve(pytestconfig, "airflow2", AirflowServer(2, venv=ensure_venv("airflow2")))


@pytest.fixture(scope="session")
def prefect3(pytestconfig: pytest.Config) -> Iterator[PrefectServer]:
    """Prefect 3.9 server without auth; run flows with `prefect3.run_flow(name, fail=...)`."""
    yield from _serve(pytestconfig, "prefect3", PrefectServer(venv=ensure_venv("prefect3")))
