"""`sentinel demo`: the daemon against the built-in simulator, notifications printed to the terminal.

Nothing to install or configure: the simulator serves Airflow- and Prefect-shaped APIs for the three
investment pipelines on a fast clock, and the daemon runs on that same clock, so `for:` and
deadlines mean simulated time.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from loguru import logger

from sentinel.bundled import bundled
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.sim.airflow_api import SIM_PASSWORD, SIM_USERNAME
from sentinel.sim.scenario import DEMO_START, investment_world
from sentinel.sim.server import start_simulator
from sentinel.sim.simclock import SimClock

CONFIG = """\
sources:
  - name: airflow-demo
    kind: airflow
    url: {airflow}
    username: {user}
    password: {password}
    poll_interval: 1s
    max_requests_per_second: 10
    burst: 10
    labels: {{env: demo}}
  - name: prefect-demo
    kind: prefect
    url: {prefect}
    poll_interval: 1s
    max_requests_per_second: 10
    burst: 10
    labels: {{env: demo}}
rule_files: ["{rules}/*.yaml"]
evaluation_interval: 2s
receivers:
  - name: console
    console: true
route:
  receiver: console
  group_by: [alertname, source, pipeline]
  group_wait: 1s
  group_interval: 10s
  repeat_interval: 4h
inhibit_rules:                    # a source that is down explains every other alert of that source
  - source_matchers: ['alertname="SourceDown"']
    target_matchers: ['alertname!="SourceDown"']
    equal: [source]
store: {{path: state.db}}
server: {{listen: "127.0.0.1:{port}"}}
"""


async def demo(speed: float = 120.0, port: int = 0, duration: float = 0.0) -> None:
    clock = SimClock(DEMO_START, speed=speed)
    world = investment_world(demo=True)
    sim = await start_simulator(world, clock)
    with tempfile.TemporaryDirectory(prefix="sentinel-demo-") as tmp:
        cfg = Path(tmp) / "sentinel.yaml"
        cfg.write_text(
            CONFIG.format(
                airflow=sim.airflow_url,
                prefect=sim.prefect_url,
                user=SIM_USERNAME,
                password=SIM_PASSWORD,
                rules=bundled("rules"),
                port=port,
            )
        )
        daemon = Daemon(load_config(cfg), clock=clock)
        try:
            await daemon.start()
            print(
                f"sentinel demo: simulating market_data_ingest → portfolio_risk/daily → eod_reporting from "
                f"{clock.now():%Y-%m-%d %H:%M} UTC at {speed:g}x\n"
                f"  simulator: {sim.airflow_url}  {sim.prefect_url}\n"
                f"  sentinel:  http://127.0.0.1:{daemon.web_port}/metrics  /api/v1/alerts\n"
                "  notifications print below; Ctrl-C stops\n",
                flush=True,
            )
            if duration > 0:
                await asyncio.sleep(duration)
            else:
                await asyncio.Event().wait()
        finally:
            logger.info("stopping demo")
            await daemon.stop()
            await sim.stop()
