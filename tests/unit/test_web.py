"""The HTTP face against a daemon watching the simulator: metrics lint clean with promtool, health and
readiness, reload keeps the last good config, mutating calls need the token."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sentinel.bundled import bundled
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.sim.scenario import DEMO_START, investment_world
from sentinel.sim.server import SimServer, start_simulator
from sentinel.sim.simclock import SimClock

CONFIG = """\
sources:
  - name: af
    kind: airflow
    url: {airflow}
    username: sentinel
    password: sim-demo-password
    poll_interval: 0.3s
    max_requests_per_second: 50
    burst: 20
  - name: pf
    kind: prefect
    url: {prefect}
    poll_interval: 0.3s
    max_requests_per_second: 50
    burst: 20
rule_files: ["{rules}/*.yaml"]
evaluation_interval: 0.5s
receivers:
  - name: quiet
    urls: ["json://127.0.0.1:9/none"]
route: {{receiver: quiet, group_wait: 1h}}
store: {{path: state.db}}
server: {{listen: "127.0.0.1:0", api_token: tok-123456}}
"""


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    clock = SimClock(DEMO_START, speed=120)
    server = await start_simulator(investment_world(demo=True), clock)
    yield server
    await server.stop()


@pytest.fixture
async def daemon(sim: SimServer, tmp_path: Path) -> AsyncIterator[Daemon]:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(CONFIG.format(airflow=sim.airflow_url, prefect=sim.prefect_url, rules=bundled("rules")))
    d = Daemon(load_config(cfg), clock=sim.clock)
    await d.start()
    yield d
    await d.stop()


async def until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.1)


async def test_metrics_health_ready(daemon: Daemon) -> None:
    base = f"http://127.0.0.1:{daemon.web_port}"
    async with httpx.AsyncClient(base_url=base) as c:
        assert (await c.get("/healthz")).status_code == 200

        async def ready() -> bool:
            return (await c.get("/readyz")).status_code == 200

        await until(ready)

        async def some_runs() -> bool:
            text = (await c.get("/metrics")).text
            series = 'sentinel_pipeline_runs_total{pipeline="market_data_ingest",source="af",state="failed"} '
            # The series exists at 0 from the moment the pipeline is seen; wait for the failed run itself.
            return any(line.startswith(series) and float(line.split()[-1]) >= 1 for line in text.splitlines())

        await until(some_runs, 30)
        page = (await c.get("/metrics")).text
        for name in (
            "sentinel_source_up",
            "sentinel_source_requests_total",
            "sentinel_source_poll_duration_seconds",
            "sentinel_pipeline_runs_total",
            "sentinel_alerts",
            "sentinel_notifications_total",
            "sentinel_build_info",
        ):
            assert f"# TYPE {name}" in page
        assert 'sentinel_source_up{source="af"} 1.0' in page
        assert "_created" not in page
        assert "run_id" not in page and "scheduled__" not in page  # bounded labels
        status = (await c.get("/api/v1/status")).json()
        assert {s["name"]: s["reachable"] for s in status["sources"]} == {"af": True, "pf": True}
        assert "sentinel" not in str(status["sources"][0].get("password", ""))
        alerts = (await c.get("/api/v1/alerts")).json()
        assert any(a["labels"]["alertname"] == "PipelineFailed" for a in alerts)
        # The shipped rules' depends_on: whatever an upstream holds back says why.
        assert all(isinstance(a["inhibitedBy"], list) for a in alerts)
        assert all("root_cause" in a["annotations"] for a in alerts if a["inhibitedBy"])
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (tests/run.sh does)"
    lint = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=page, capture_output=True, text=True
    )
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr


async def test_reload_keeps_last_good_config(daemon: Daemon) -> None:
    base = f"http://127.0.0.1:{daemon.web_port}"
    cfg = daemon.loaded.path
    good = cfg.read_text()
    async with httpx.AsyncClient(base_url=base) as c:
        assert (await c.post("/-/reload")).status_code == 401
        assert (await c.post("/-/reload", headers={"Authorization": "Bearer wrong"})).status_code == 401
        cfg.write_text(good.replace("evaluation_interval: 0.5s", "evaluation_interval: soon"))
        r = await c.post("/-/reload", headers={"Authorization": "Bearer tok-123456"})
        assert r.status_code == 400
        assert f"{cfg}:" in r.json()["error"] and "evaluation_interval" in r.json()["error"]
        assert daemon.metrics.registry.get_sample_value("sentinel_config_last_reload_successful") == 0
        assert daemon.config.evaluation_interval.total_seconds() == 0.5  # still running the good one
        assert "tok-123456" not in r.text
        # A URL apprise cannot use is a config error too, at its line, its secret not repeated.
        cfg.write_text(good.replace('urls: ["json://127.0.0.1:9/none"]', 'urls: ["slack://Bad-Token-One"]'))
        r = await c.post("/-/reload", headers={"Authorization": "Bearer tok-123456"})
        assert r.status_code == 400
        line = good.splitlines().index('    urls: ["json://127.0.0.1:9/none"]') + 1
        assert f"{cfg}:{line}:" in r.json()["error"] and "receiver 'quiet' urls[0]" in r.json()["error"]
        assert "Bad-Token-One" not in r.text
        assert daemon.metrics.registry.get_sample_value("sentinel_config_last_reload_successful") == 0
        cfg.write_text(good.replace("group_wait: 1h", "group_wait: 2h"))
        r = await c.post("/-/reload", headers={"Authorization": "Bearer tok-123456"})
        assert r.status_code == 200, r.text
        assert daemon.metrics.registry.get_sample_value("sentinel_config_last_reload_successful") == 1
        assert daemon.dispatcher.route.opts.group_wait.total_seconds() == 7200


def test_demo_prints_a_page_within_seconds(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel", "demo", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    started = time.monotonic()
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("[FIRING:1] PipelineFailed market_data_ingest (airflow-demo)"):
                break
            assert time.monotonic() - started < 45, "".join(seen[-20:])
        else:
            raise AssertionError("demo ended without a page:\n" + "".join(seen[-20:]))
        print(f"\ndemo: first page after {time.monotonic() - started:.1f}s")
        proc.send_signal(2)  # Ctrl-C
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_stops_cleanly_on_sigterm_and_keeps_state(tmp_path: Path) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(
        "sources: []\nreceivers: [{name: c, console: true}]\nroute: {receiver: c}\n"
        'store: {path: state.db}\nserver: {listen: "127.0.0.1:0"}\n'
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel", "run", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "sentinel started" in line:
                break
        proc.send_signal(15)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Traceback" not in out
        assert (tmp_path / "state.db").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_with_invalid_config_exits_1_with_file_line_col(tmp_path: Path) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text("receivers: [{name: c, console: true}]\nroute: {receiver: c, group_wait: soon}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run(
        [sys.executable, "-m", "sentinel", "run", "-c", str(cfg)], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 1
    assert f"{cfg}:2:34: route.group_wait: invalid duration 'soon'" in r.stderr
