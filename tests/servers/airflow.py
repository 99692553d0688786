"""A real Apache Airflow (3.3 or 2.10) on loopback, for integration tests.

Components run as separate processes from the cached venv (see `venvs.py`) against a SQLite database in a
temporary AIRFLOW_HOME. The API server starts first and must answer before the scheduler starts: in
Airflow 3 the scheduler's task supervisors talk to the execution API, and tasks queued before it answers
fail with read timeouts.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.servers import procs
from tests.servers.venvs import ensure_venv

DAGS_DIR = Path(__file__).resolve().parent / "dags"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})

# Fixed secrets so JWTs and session cookies survive an api-server restart (stop_api/start_api).
_JWT_SECRET = "sentinel-test-jwt-secret-not-for-production-0123456789"
_SECRET_KEY = "sentinel-test-secret-key-not-for-production"


class AirflowServer:
    """Airflow `major` 3 (api-server + scheduler + dag-processor) or 2 (webserver + scheduler).

    Login is always admin/admin: Airflow 3 through SimpleAuthManager with a pinned passwords file (JWT from
    POST /auth/token), Airflow 2 through the FAB user `admin` and the basic-auth API backend.
    """

    username = "admin"
    password = "admin"

    def __init__(self, major: int, venv: Path | None = None, dags: Path = DAGS_DIR) -> None:
        if major not in (2, 3):
            raise ValueError(f"Airflow major version must be 2 or 3, not {major!r}")
        self.major = major
        self._venv = venv
        self._dags_source = dags
        self._home: Path | None = None
        self._port: int | None = None
        self._api: procs.ManagedProcess | None = None
        self._background: list[procs.ManagedProcess] = []
        self._client: httpx.Client | None = None
        self._token: str | None = None
        # Tests call helpers from several threads at once (asyncio.to_thread); one client, one token.
        self._lock = threading.Lock()

    # -- addresses -------------------------------------------------------------------------------------

    @property
    def stack(self) -> str:
        return f"airflow{self.major}"

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT (what a user puts in sentinel.yaml)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """REST root: /api/v2 on Airflow 3, /api/v1 on Airflow 2."""
        return f"{self.url}/api/v{1 if self.major == 2 else 2}"

    @property
    def home(self) -> Path:
        if self._home is None:
            raise RuntimeError("server not started")
        return self._home

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of each component, by component name."""
        return {p.name: p.log for p in self._components()}

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> AirflowServer:
        """Start every component and return once the API answers and the scheduler heartbeats."""
        if self._home is not None:
            raise RuntimeError("already started")
        venv = self._venv or ensure_venv(self.stack)
        self._venv = venv
        self._home = Path(tempfile.mkdtemp(prefix=f"sentinel-{self.stack}-"))
        self._port = procs.free_port()
        atexit.register(self.stop)
        try:
            self._prepare_home()
            env = procs.clean_env(venv, self._environment())
            self._run_once(env, ["db", "migrate"], timeout)
            if self.major == 2:
                self._run_once(env, _FAB_ADMIN_COMMAND, timeout)
            self._api = self._component(env, "api-server" if self.major == 3 else "webserver")
            self._start_api(timeout)
            if self.major == 3:
                self._background = [
                    self._component(env, "scheduler"),
                    self._component(env, "dag-processor"),
                ]
            else:
                self._background = [self._component(env, "scheduler")]
            for component in self._background:
                component.start()
            procs.wait_until(self._components_healthy, timeout, "scheduler heartbeat", alive=self._check_alive)
        except Exception as exc:
            report = self._failure_report(exc)
            self.stop(keep_home=True)
            print(report, file=sys.stderr)
            raise RuntimeError(report) from exc
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): nothing to debug, just leave nothing behind.
            self.stop()
            raise
        return self

    def stop_api(self) -> None:
        """Stop only the api-server/webserver (the scheduler keeps running), to simulate the API being down.

        On Airflow 3 running tasks need the execution API, so tasks that run meanwhile fail.
        """
        if self._api is not None:
            self._api.stop()
        self._close_client()

    def start_api(self, timeout: float = 120.0) -> None:
        """Restart the api-server/webserver on the same port and database after `stop_api`."""
        if self._api is None:
            raise RuntimeError("server not started")
        self._start_api(timeout)

    def stop(self, keep_home: bool = False) -> None:
        """Stop every component and its whole process tree; idempotent."""
        atexit.unregister(self.stop)
        self._close_client()
        # Short grace: the database is thrown away, so a clean shutdown buys nothing but seconds.
        procs.stop_all(self._components(), grace=3)
        self._api = None
        self._background = []
        if self._home is not None and not keep_home:
            shutil.rmtree(self._home, ignore_errors=True)
        self._home = None

    def __enter__(self) -> AirflowServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Authenticated call to `api_url + path` (e.g. "/dags"); retries once with a fresh JWT on 401."""
        client = self._http()
        response = client.request(method, self.api_url + path, headers=self._auth_headers(), **kwargs)
        if response.status_code == 401 and self.major == 3:
            self._token = None
            response = client.request(method, self.api_url + path, headers=self._auth_headers(), **kwargs)
        return response

    def server_now(self) -> datetime:
        """The server's clock as the adapter reads it: the Date header of a response (whole seconds)."""
        return procs.date_header(self.request("GET", "/version"))

    def wait_dag_loaded(self, dag_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until the DAG is parsed and serialized (so it can be triggered); returns its details."""

        def loaded() -> dict[str, Any] | None:
            response = self.request("GET", f"/dags/{dag_id}/details")
            return response.json() if response.status_code == 200 else None

        return procs.wait_until(
            loaded, timeout, f"DAG {dag_id} to load", alive=self._check_alive, transient=(httpx.TransportError,)
        )

    def unpause(self, dag_id: str) -> None:
        params = {"update_mask": "is_paused"} if self.major == 2 else None
        response = self.request("PATCH", f"/dags/{dag_id}", params=params, json={"is_paused": False})
        _raise_for_status(response)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Create a manual DAG run and return its run id.

        On SQLite two concurrent writes can make the API answer 500 "Database error" (the database was
        locked); the run then was not created. The run id is ours, so a retry cannot create a second run: a
        409 after a 500 means the first attempt did create it."""
        # Airflow's own shape (its ':' and '+' are what the adapter's URL quoting is tested on).
        run_id = f"manual__{datetime.now(UTC).isoformat(timespec='microseconds')}"
        body: dict[str, Any] = {"conf": conf or {}, "dag_run_id": run_id}
        if self.major == 3:
            # Airflow 3 rejects a body without logical_date (422); null means "no logical date".
            body["logical_date"] = None
        for attempt in range(6):
            response = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
            if response.status_code == 409 and attempt > 0:
                return run_id
            if response.status_code < 500 or attempt == 5:
                break
            time.sleep(0.5 * (attempt + 1))  # backoff before retrying a locked database, not a timing check
        _raise_for_status(response)
        return str(response.json()["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        _raise_for_status(response)
        result: dict[str, Any] = response.json()
        return result

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until the run is success or failed; return the final DAG run JSON."""
        last: dict[str, Any] = {}

        def finished() -> dict[str, Any] | None:
            nonlocal last
            last = self.dag_run(dag_id, run_id)
            return last if last.get("state") in TERMINAL_RUN_STATES else None

        try:
            return procs.wait_until(
                finished,
                timeout,
                f"{dag_id} run {run_id}",
                interval=0.5,
                alive=self._check_alive,
                transient=(httpx.TransportError,),
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last state {last.get('state')!r}\n{self._tails()}") from None

    def import_errors(self) -> list[dict[str, Any]]:
        response = self.request("GET", "/importErrors", params={"limit": 100})
        _raise_for_status(response)
        errors: list[dict[str, Any]] = response.json()["import_errors"]
        return errors

    def import_error(self, filename: str, broken: bool = True) -> Path:
        """Write DAG file `filename` into the DAGs folder, failing to import if `broken`.

        With broken=False it becomes a valid DAG (dag_id = file stem), so the import error clears on the
        next parse. Returns the file's path; the API reports it relative to the DAGs folder.
        """
        path = self.dags_folder / filename
        if broken:
            source = _BROKEN_DAG
        else:
            source = _VALID_DAG.replace("DAG_ID", Path(filename).stem)
        # Write-then-rename: the parser must never see a half-written file and report a bogus error.
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source)
        tmp.replace(path)
        return path

    # -- internals -------------------------------------------------------------------------------------

    def _prepare_home(self) -> None:
        # Copy the DAGs so import_error() and any test's own DAG files never touch the repository.
        shutil.copytree(self._dags_source, self.dags_folder, ignore=shutil.ignore_patterns("__pycache__"))
        if self.major == 3:
            (self.home / "passwords.json").write_text(json.dumps({self.username: self.password}))

    def _environment(self) -> dict[str, str]:
        home = self.home
        env = {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # LocalExecutor forks `parallelism` workers up front; the default 32 costs gigabytes.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Nothing here should serve logs, but if a component does, keep it on loopback and off the
            # default ports so airflow2 and airflow3 can run side by side.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(procs.free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(procs.free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(procs.free_port()),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }
        if self.major == 3:
            env.update(
                {
                    "AIRFLOW__API__HOST": "127.0.0.1",
                    "AIRFLOW__API__PORT": str(self._port),
                    "AIRFLOW__API__BASE_URL": self.url,
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                    "AIRFLOW__API_AUTH__JWT_SECRET": _JWT_SECRET,
                    "AIRFLOW__API__SECRET_KEY": _SECRET_KEY,
                    "AIRFLOW__CORE__AUTH_MANAGER": (
                        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                    ),
                    # "admin:admin" is user admin with *role* admin; the password comes from the file.
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
                    # The task supervisor notices a finished task only on its heartbeat (default 5 s),
                    # which would add up to 5 s to every run's end_date.
                    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                    # New DAG files are listed every refresh_interval, changed ones re-parsed every
                    # min_file_process_interval (defaults 300 s / 30 s).
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3",
                    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                }
            )
        else:
            env.update(
                {
                    "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                    "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self._port),
                    "AIRFLOW__WEBSERVER__BASE_URL": self.url,
                    "AIRFLOW__WEBSERVER__SECRET_KEY": _SECRET_KEY,
                    "AIRFLOW__WEBSERVER__WORKERS": "2",
                    "AIRFLOW__API__AUTH_BACKENDS": (
                        "airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session"
                    ),
                    # Airflow 2 allows only SequentialExecutor on SQLite, which runs tasks inside the
                    # scheduler loop (one slow task blocks everything and the scheduler reads unhealthy).
                    # LocalExecutor works on SQLite once this unsupported check is skipped.
                    "_AIRFLOW__SKIP_DATABASE_EXECUTOR_COMPATIBILITY_CHECK": "1",
                    "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "3",
                    "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
                    "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
                }
            )
        return env

    def _airflow(self) -> str:
        assert self._venv is not None
        return str(self._venv / "bin" / "airflow")

    def _run_once(self, env: dict[str, str], args: list[str], timeout: float) -> None:
        log = self.home / f"{args[0].replace(' ', '-')}.log"
        with open(log, "ab") as out:
            result = subprocess.run(
                [self._airflow(), *args],
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"`airflow {args[0]}` exited with {result.returncode}\n{procs.tail(log)}")

    def _component(self, env: dict[str, str], name: str) -> procs.ManagedProcess:
        args = [self._airflow(), name]
        if name == "api-server":
            args += ["--host", "127.0.0.1", "--port", str(self._port), "--workers", "1"]
        elif name == "webserver":
            args += ["--hostname", "127.0.0.1", "--port", str(self._port), "--workers", "2"]
        elif name == "scheduler":
            args += ["--skip-serve-logs"]
        return procs.ManagedProcess(name, args, env, cwd=self.home, log=self.home / f"{name}.log")

    def _components(self) -> list[procs.ManagedProcess]:
        return [p for p in (self._api, *self._background) if p is not None]

    def _check_alive(self) -> None:
        for component in self._components():
            component.check_running()

    def _start_api(self, timeout: float) -> None:
        assert self._api is not None
        self._api.start()
        health = f"{self.api_url}/{'monitor/health' if self.major == 3 else 'health'}"

        def answers() -> bool:
            try:
                return httpx.get(health, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        procs.wait_until(answers, timeout, f"{self._api.name} on {self.url}", alive=self._api.check_running)

    def _components_healthy(self) -> bool:
        path = "/monitor/health" if self.major == 3 else "/health"
        try:
            health = httpx.get(self.api_url + path, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return False
        wanted = ["scheduler", "dag_processor"] if self.major == 3 else ["scheduler"]
        return all((health.get(name) or {}).get("status") == "healthy" for name in wanted)

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                auth = httpx.BasicAuth(self.username, self.password) if self.major == 2 else None
                self._client = httpx.Client(auth=auth, timeout=30)
            return self._client

    def _auth_headers(self) -> dict[str, str]:
        if self.major == 2:
            return {}
        client = self._http()
        with self._lock:
            if self._token is None:
                response = client.post(
                    f"{self.url}/auth/token", json={"username": self.username, "password": self.password}
                )
                _raise_for_status(response)
                self._token = str(response.json()["access_token"])
            return {"Authorization": f"Bearer {self._token}"}

    def _close_client(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _tails(self) -> str:
        if self._home is None:
            return ""
        logs = sorted(self._home.glob("*.log"))
        return "\n".join(f"--- {log.name} (last lines) ---\n{procs.tail(log)}" for log in logs)

    def _failure_report(self, exc: BaseException) -> str:
        return f"Airflow {self.major} failed to start in {self._home}: {exc}\n{self._tails()}"


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_error:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}"
        )


_FAB_ADMIN_COMMAND = [
    "users",
    "create",
    "--username",
    AirflowServer.username,
    "--password",
    AirflowServer.password,
    "--role",
    "Admin",
    "--firstname",
    "Sentinel",
    "--lastname",
    "Test",
    "--email",
    "admin@example.invalid",
]

# "airflow" and "dag" must both appear in a file for Airflow's safe-mode parser to even try it.
_BROKEN_DAG = textwrap.dedent(
    """\
    # airflow DAG file broken on purpose by the Sentinel test harness
    from airflow import DAG  # noqa: F401

    raise RuntimeError("broken on purpose by the Sentinel test harness")
    """
)

_VALID_DAG = textwrap.dedent(
    """\
    from datetime import UTC, datetime

    try:
        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.sdk import DAG
    except ImportError:
        from airflow import DAG
        from airflow.operators.bash import BashOperator

    with DAG(dag_id="DAG_ID", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False):
        BashOperator(task_id="ok", bash_command="true")
    """
)


def _main() -> None:
    # Manual check: python -m tests.servers.airflow 3
    major = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    started = time.monotonic()
    with AirflowServer(major) as server:
        print(f"Airflow {major} up at {server.url} in {time.monotonic() - started:.1f} s; home {server.home}")
        for dag_id in ("toggle_pipeline", "healthy_pipeline"):
            server.wait_dag_loaded(dag_id)
            server.unpause(dag_id)
        print(f"DAGs loaded at {time.monotonic() - started:.1f} s")
        for conf in ({"fail": True}, {}):
            t0 = time.monotonic()
            run = server.wait_run("toggle_pipeline", server.trigger("toggle_pipeline", conf))
            print(f"conf={conf}: {run['state']} in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
    print(f"stopped in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    _main()
