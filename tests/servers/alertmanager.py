"""A real Alertmanager (Debian's `prometheus-alertmanager`, or `alertmanager` on PATH) on 127.0.0.1.

HA gossip is off (`--cluster.listen-address=`): otherwise it binds 0.0.0.0:9094 and waits for peers
before it is ready.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.servers.procs import free_port


def alertmanager_binary() -> str | None:
    return shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")


class Alertmanager:
    def __init__(self, config_yaml: str, workdir: Path) -> None:
        self.workdir = workdir
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(config_yaml)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "alertmanager.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Alertmanager:
        binary = alertmanager_binary()
        if binary is None:
            raise RuntimeError("no alertmanager binary: apt-get install prometheus-alertmanager")
        amtool = shutil.which("amtool")
        if amtool:  # a config mistake reads better from amtool than from a process that exited
            subprocess.run([amtool, "check-config", str(self.config)], check=True, capture_output=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"alertmanager not ready after {timeout:.0f}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
