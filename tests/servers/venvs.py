"""Cached virtualenvs holding the real schedulers that integration tests start.

Airflow 2, Airflow 3 and Prefect 3 pin libraries that conflict with the project's and with each other's, so
each lives in its own virtualenv outside the checkout (a fresh clone must not reinstall on every run, and
the project venv must stay importable). A venv counts as ready only once its marker file exists, and the
marker records the requirement and a hash of the constraints file, so an interrupted install or a changed
pin is redone rather than trusted.

CLI (CI runs it before pytest so the installs overlap each other instead of stalling the first test)::

    python -m tests.servers.venvs all            # or: airflow3 airflow2 prefect3
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.servers.procs import clean_env

CONSTRAINTS_DIR = Path(__file__).resolve().parent / "constraints"
MARKER_NAME = ".sentinel-venv-ok"


@dataclass(frozen=True)
class Stack:
    name: str
    package: str
    version: str
    constraints: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def constraints_path(self) -> Path:
        return CONSTRAINTS_DIR / self.constraints


STACKS: dict[str, Stack] = {
    stack.name: stack
    for stack in (
        Stack("airflow3", "apache-airflow", "3.3.2", "airflow-3.3.2-py3.11.txt"),
        Stack("airflow2", "apache-airflow", "2.10.5", "airflow-2.10.5-py3.11.txt"),
        Stack("prefect3", "prefect", "3.9.1", "prefect-3.9.1-py3.11.txt"),
    )
}


def cache_root() -> Path:
    override = os.environ.get("SENTINEL_TEST_CACHE")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "sentinel-test"


def venv_path(stack: str) -> Path:
    spec = _stack(stack)
    return cache_root() / "venvs" / f"{spec.name}-{spec.version}"


def ensure_venv(stack: str) -> Path:
    """Return the ready virtualenv for `stack`, installing it first if needed.

    Safe to call from several pytest processes at once: the install runs under an exclusive file lock and
    whoever waited on the lock re-checks the marker instead of installing again.
    """
    spec = _stack(stack)
    path = venv_path(stack)
    if _is_ready(spec, path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_ready(spec, path):
            _install(spec, path)
    return path


def _stack(stack: str) -> Stack:
    try:
        return STACKS[stack]
    except KeyError:
        raise ValueError(f"unknown stack {stack!r}; expected one of {sorted(STACKS)}") from None


def _fingerprint(spec: Stack) -> str:
    digest = hashlib.sha256(spec.constraints_path.read_bytes()).hexdigest()
    return f"{spec.requirement}\nconstraints-sha256={digest}\n"


def _is_ready(spec: Stack, path: Path) -> bool:
    marker = path / MARKER_NAME
    try:
        return marker.read_text() == _fingerprint(spec)
    except FileNotFoundError:
        return False


def _install(spec: Stack, path: Path) -> None:
    # Whatever is there lacks a valid marker: a crashed install or an outdated pin. Start clean, because pip
    # over a half-written site-packages can "succeed" and leave a broken tree.
    if path.exists():
        shutil.rmtree(path)
    python = os.environ.get("SENTINEL_TEST_PYTHON", "python3.11")
    log_path = path.parent / f"{path.name}.install.log"
    with open(log_path, "w") as log:
        for argv in (
            [python, "-m", "venv", str(path)],
            [
                str(path / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                spec.requirement,
                "-c",
                str(spec.constraints_path),
            ],
        ):
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            # Run as the new venv: nothing from the project venv (or a developer's PYTHONPATH) may leak in.
            env = clean_env(path, {})
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
            if result.returncode != 0:
                log.flush()
                tail = "\n".join(log_path.read_text().splitlines()[-40:])
                raise RuntimeError(
                    f"installing {spec.requirement} into {path} failed (exit {result.returncode}); "
                    f"full log: {log_path}\n{tail}"
                )
    # Write-then-rename so a crash between the two never leaves a marker that reads as valid.
    tmp = path / f"{MARKER_NAME}.tmp"
    tmp.write_text(_fingerprint(spec))
    tmp.replace(path / MARKER_NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.venvs", description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="+", choices=[*STACKS, "all"], help="stacks to install, or 'all'")
    args = parser.parse_args(argv)
    stacks = list(STACKS) if "all" in args.stacks else list(dict.fromkeys(args.stacks))

    def timed(stack: str) -> tuple[str, float, Path]:
        started = time.monotonic()
        path = ensure_venv(stack)
        return stack, time.monotonic() - started, path

    # Threads are enough for parallelism here: the work happens in pip child processes.
    started = time.monotonic()
    failed = False
    with ThreadPoolExecutor(max_workers=len(stacks)) as pool:
        futures = [pool.submit(timed, stack) for stack in stacks]
        for future in futures:
            try:
                stack, seconds, path = future.result()
            except Exception as exc:
                print(f"FAILED: {exc}", file=sys.stderr)
                failed = True
                continue
            print(f"{stack:9} ready in {seconds:6.1f} s  {path}")
    print(f"total     {time.monotonic() - started:6.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
