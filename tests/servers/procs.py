"""Start server processes and reliably stop them together with everything they spawned.

psutil is not in the project venv, so process trees are read from /proc. Killing only a process group is
not enough: Airflow's task runners start their own process groups and BashOperator its own session, so a
stopped component is found by its recorded session *and* by following parent links, snapshotted before any
signal is sent (once a parent dies, its orphans are re-parented and the link is gone).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgrp: int
    session: int
    state: str
    # Guards against PID reuse: a PID only names "our" process while its start time still matches.
    start_ticks: int


def read_proc(pid: int) -> ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name sits in parentheses and may itself contain spaces or ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcInfo(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        start_ticks=int(fields[19]),
    )


def all_procs() -> dict[int, ProcInfo]:
    procs: dict[int, ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := read_proc(int(entry))) is not None:
            procs[info.pid] = info
    return procs


def process_tree(roots: Iterable[int], sessions: Iterable[int] = ()) -> dict[int, ProcInfo]:
    """Live processes under `roots` (by parent links) or inside `sessions`, including the roots."""
    procs = all_procs()
    sessions = set(sessions)
    found = {pid: info for pid, info in procs.items() if info.session in sessions or info.pgrp in sessions}
    found.update({pid: procs[pid] for pid in roots if pid in procs})
    children: dict[int, list[int]] = {}
    for info in procs.values():
        children.setdefault(info.ppid, []).append(info.pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found[child] = procs[child]
                stack.append(child)
    return {pid: info for pid, info in found.items() if info.state not in ("Z", "X")}


def _alive(info: ProcInfo) -> bool:
    current = read_proc(info.pid)
    return current is not None and current.start_ticks == info.start_ticks and current.state not in ("Z", "X")


def _signal(infos: Iterable[ProcInfo], sig: signal.Signals) -> None:
    for info in infos:
        if _alive(info):
            try:
                os.kill(info.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def kill_tree(roots: Sequence[int], sessions: Iterable[int] = (), grace: float = 10.0) -> None:
    """SIGTERM the whole tree, then SIGKILL whatever survives `grace` seconds."""
    sessions = set(sessions)
    known = process_tree(roots, sessions)
    _signal(known.values(), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        # A dying parent may still fork (e.g. an executor replacing a worker): keep sweeping new children.
        fresh = {p: i for p, i in process_tree(known, sessions).items() if p not in known}
        _signal(fresh.values(), signal.SIGTERM)
        known.update(fresh)
        if not any(_alive(info) for info in known.values()):
            return
        time.sleep(0.1)
    known.update(process_tree(known, sessions))
    _signal(known.values(), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(info) for info in known.values()):
        time.sleep(0.05)


def free_port() -> int:
    # Small race between closing and the server binding; acceptable for a test harness on loopback.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def date_header(response: httpx.Response) -> datetime:
    """A response's Date header as an aware UTC datetime: the server's clock as our adapters read it."""
    response.raise_for_status()
    return parsedate_to_datetime(response.headers["date"]).astimezone(UTC)


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
    alive: Callable[[], None] | None = None,
    transient: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `probe` until it returns something other than None/False, or raise TimeoutError.

    `alive` is called each round so a caller can fail fast (raise) when a process it waits on has died,
    instead of sitting out the whole timeout. Exceptions of a `transient` type count as "not yet": on a
    loaded 2-core machine a SQLite-backed API can miss a single request's timeout and answer the next.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if alive is not None:
            alive()
        try:
            result = probe()
        except transient as exc:
            last_error, result = exc, None
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def clean_env(venv: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """Environment for a process of `venv`: nothing inherited that could point it at another install.

    A developer's shell may carry AIRFLOW__*/PREFECT_* settings or the project venv's paths; any of them
    would silently change which server or database the child uses.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "_AIRFLOW", "PREFECT_"))
        and key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class ManagedProcess:
    """One long-running server command in its own session, logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log = log
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        if self.running():
            return
        install_sigterm_exit()
        with open(self.log, "ab") as log:
            # A new session makes the process a session leader whose id is its PID, which kill_tree uses
            # to find descendants even after their parent links are gone.
            self._popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def check_running(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self._popen.returncode}\n{tail(self.log)}")

    def stop(self, grace: float = 10.0) -> None:
        stop_all([self], grace)

    def _reap(self) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._popen = None


def stop_all(processes: Iterable[ManagedProcess], grace: float = 10.0) -> None:
    """Stop several processes with their trees at once, so their grace periods overlap."""
    started = [p for p in processes if p.pid is not None]
    roots = [pid for p in started if (pid := p.pid) is not None]
    kill_tree(roots, sessions=roots, grace=grace)
    for process in started:
        process._reap()


_sigterm_lock = threading.Lock()
_sigterm_installed = False


def install_sigterm_exit() -> None:
    """Treat SIGTERM like Ctrl-C, so servers are stopped when CI cancels a job.

    By default SIGTERM kills Python without running atexit hooks or pytest teardown, orphaning every server.
    KeyboardInterrupt (rather than SystemExit, which pytest would record as one failed test and carry on)
    makes pytest stop the session and run fixture teardown; atexit hooks back that up. Only replaces the
    default handler and only from the main thread; a handler someone else installed wins.
    """
    global _sigterm_installed
    with _sigterm_lock:
        if _sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        _sigterm_installed = True
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"received signal {signum}")
