"""A real Prefect 3 server on loopback, for integration tests.

`prefect server start` from the cached venv (see `venvs.py`), with its own PREFECT_HOME (SQLite database
inside) in a temporary directory. Flows run in separate processes of the same venv, pointed at the server
through PREFECT_API_URL: without it Prefect silently runs them against a throwaway ephemeral server.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.servers import procs
from tests.servers.venvs import ensure_venv

# In a folder of its own because a script's folder goes first on sys.path: next to this module,
# `import prefect` in the script would import this file instead of the real Prefect.
RUN_FLOW_SCRIPT = Path(__file__).resolve().parent / "flows" / "run_flow.py"
TERMINAL_STATE_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


class PrefectServer:
    """`prefect server start --host 127.0.0.1 --port P` with services, no auth, no UI."""

    def __init__(self, venv: Path | None = None) -> None:
        self._venv = venv
        self._home: Path | None = None
        self._port: int | None = None
        self._server: procs.ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        if self._port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """What clients need as PREFECT_API_URL, e.g. http://127.0.0.1:PORT/api."""
        return f"{self.url}/api"

    @property
    def home(self) -> Path:
        if self._home is None:
            raise RuntimeError("server not started")
        return self._home

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> PrefectServer:
        """Start the server and return once GET /api/health answers true."""
        if self._home is not None:
            raise RuntimeError("already started")
        venv = self._venv or ensure_venv("prefect3")
        self._venv = venv
        self._home = Path(tempfile.mkdtemp(prefix="sentinel-prefect3-"))
        self._port = procs.free_port()
        atexit.register(self.stop)
        env = procs.clean_env(
            venv,
            {
                "PREFECT_HOME": str(self._home / "server-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                # The UI is not under test, and building its static files into a fresh home costs seconds.
                "PREFECT_UI_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false",
            },
        )
        argv = [str(venv / "bin" / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self._port)]
        self._server = procs.ManagedProcess("prefect-server", argv, env, cwd=self._home, log=self.log)
        try:
            self._start_server(timeout)
        except Exception as exc:
            report = f"Prefect failed to start in {self._home}: {exc}\n{procs.tail(self.log)}"
            self.stop(keep_home=True)
            print(report, file=sys.stderr)
            raise RuntimeError(report) from exc
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): nothing to debug, just leave nothing behind.
            self.stop()
            raise
        return self

    def stop_api(self) -> None:
        """Stop the server (API and services are one process tree), keeping its database for start_api."""
        if self._server is not None:
            self._server.stop()

    def start_api(self, timeout: float = 120.0) -> None:
        """Restart the server on the same port and PREFECT_HOME after `stop_api`."""
        if self._server is None:
            raise RuntimeError("server not started")
        self._start_server(timeout)

    def stop(self, keep_home: bool = False) -> None:
        """Stop the server and its whole process tree; idempotent."""
        atexit.unregister(self.stop)
        if self._server is not None:
            # Short grace: the database is thrown away, so a clean shutdown buys nothing but seconds.
            self._server.stop(grace=3)
            self._server = None
        if self._home is not None and not keep_home:
            shutil.rmtree(self._home, ignore_errors=True)
        self._home = None

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------------------

    def run_flow(self, name: str, fail: bool = False, timeout: float = 120.0, script: Path = RUN_FLOW_SCRIPT) -> str:
        """Run ad-hoc flow `name` (tasks extract -> load, load raising if `fail`) to completion.

        Blocks until the flow process exits and the run has `settled` (terminal, and ended before the current
        whole second, so the next poll of an adapter shows it). Returns its id.
        `script` runs another flow file with the same command line and output (see flows/run_flow.py).
        """
        if self._venv is None or self._home is None:
            raise RuntimeError("server not started")
        env = procs.clean_env(
            self._venv,
            {
                "PREFECT_API_URL": self.api_url,
                # A home of its own: the client must not read or write the user's ~/.prefect profiles.
                "PREFECT_HOME": str(self._home / "client-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            },
        )
        argv = [str(self._venv / "bin" / "python"), str(script), "--name", name]
        if fail:
            argv.append("--fail")
        # Its own session so a hung flow process (and anything it forked) can be killed as a tree.
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=self._home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            procs.kill_tree([process.pid], sessions=[process.pid], grace=5)
            output, _ = process.communicate()
            raise TimeoutError(f"flow {name!r} did not finish within {timeout:.0f} s:\n{output[-4000:]}") from None
        for line in output.splitlines():
            if line.startswith("FLOW_RUN_ID="):
                run_id = line.removeprefix("FLOW_RUN_ID=").strip()
                procs.wait_until(lambda rid=run_id: self.settled(rid), 30, f"flow run {run_id} to settle", interval=0.1)
                return run_id
        raise RuntimeError(f"flow {name!r} printed no run id (exit {process.returncode}):\n{output[-4000:]}")

    def settled(self, run_id: str) -> bool:
        """Whether the run ended before the server's clock as its Date header shows it: the adapters bound a
        change-feed read by that header, so a run that ended after it is only in a later poll. Uvicorn
        refreshes the header about once a second, so it can trail the real time by up to ~2 s; a local
        clock bound here would call a run settled that the next poll cannot see yet. Tests that expect "the
        next poll shows it" wait for this first."""
        upper = self.server_now()
        body = {"flow_runs": {"id": {"any_": [run_id]}, "end_time": {"before_": upper.isoformat()}}}
        response = self.request("POST", "/flow_runs/filter", json=body)
        response.raise_for_status()
        return any(r["state_type"] in TERMINAL_STATE_TYPES for r in response.json())

    def server_now(self) -> datetime:
        """The server's clock as the adapters read it: the Date header of a response (whole seconds)."""
        return procs.date_header(self.request("GET", "/health"))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call `api_url + path`, e.g. request("POST", "/flow_runs/filter", json={...}).

        A 503 is asked again for up to 30 s: Prefect answers 503 when its SQLite database is locked (its own
        services write to it all the time), and the transaction it refused was rolled back. Tests set up
        their flows and runs through here; what Sentinel itself does with a 503 is tested elsewhere."""

        def answered() -> httpx.Response | None:
            response = httpx.request(method, self.api_url + path, timeout=30, **kwargs)
            return None if response.status_code == 503 else response

        try:
            return procs.wait_until(answered, 30.0, f"{method} {path} without a 503", interval=0.5)
        except TimeoutError:
            return httpx.request(method, self.api_url + path, timeout=30, **kwargs)

    def flow_run(self, run_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/flow_runs/{run_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_flow_run(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the flow run's state type is terminal; return the flow run JSON."""

        def finished() -> dict[str, Any] | None:
            run = self.flow_run(run_id)
            return run if run.get("state_type") in TERMINAL_STATE_TYPES else None

        return procs.wait_until(
            finished, timeout, f"flow run {run_id}", interval=0.25, transient=(httpx.TransportError,)
        )

    # -- internals -------------------------------------------------------------------------------------

    def _start_server(self, timeout: float) -> None:
        assert self._server is not None
        self._server.start()

        def healthy() -> bool:
            try:
                response = httpx.get(f"{self.api_url}/health", timeout=2)
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and response.json() is True

        procs.wait_until(healthy, timeout, f"Prefect on {self.url}", alive=self._server.check_running)


def _main() -> None:
    # Manual check: python -m tests.servers.prefect
    started = time.monotonic()
    with PrefectServer() as server:
        print(f"Prefect up at {server.api_url} in {time.monotonic() - started:.1f} s; home {server.home}")
        for fail in (True, False):
            t0 = time.monotonic()
            run_id = server.run_flow("sentinel-smoke", fail=fail)
            run = server.wait_flow_run(run_id)
            print(f"fail={fail}: {run['state_type']} in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
    print(f"stopped in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    _main()
