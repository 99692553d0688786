"""Scheduler requests and Sentinel CPU per steady-state poll cycle, at 100, 1,000 and 10,000 pipelines.

The simulator runs in a separate process (its CPU is not ours), at real speed, with the given number of
synthetic pipelines split between its Airflow and Prefect faces. For each size we poll once to catch up
(not counted), then time `--cycles` steady-state cycles of both adapters. Ratios are against the
smallest size, measured in this same invocation. The claim under test: requests per cycle do not grow
with the number of pipelines.

    python bench/poll_cost.py [--sizes 100 1000 10000] [--cycles 8] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from adapters.http import PoliteClient
from adapters.registry import adapter_for
from sentinel.clock import SystemClock
from sentinel.model import SourceSpec
from sentinel.sim.airflow_api import SIM_PASSWORD, SIM_USERNAME


def start_sim(pipelines: int) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentinel.sim",
            "--port",
            "0",
            "--schedules",
            "real",
            "--speed",
            "1",
            "--synthetic",
            str(pipelines),
            "--tick",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while len(urls) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"\s+(airflow|prefect): (\S+)", line)
        if m:
            urls[m.group(1)] = m.group(2)
    if len(urls) < 2:
        proc.kill()
        raise RuntimeError("simulator did not start")
    return proc, urls["airflow"], urls["prefect"]


async def measure(pipelines: int, cycles: int, interval: float) -> dict[str, Any]:
    proc, airflow_url, prefect_url = start_sim(pipelines)
    try:
        clock = SystemClock()
        specs = [
            SourceSpec(
                name="af",
                kind="airflow",
                url=airflow_url,
                username=SIM_USERNAME,
                password=SIM_PASSWORD,
                max_requests_per_second=50,
                burst=50,
                timeout="30s",
            ),
            SourceSpec(name="pf", kind="prefect", url=prefect_url, max_requests_per_second=50, burst=50, timeout="30s"),
        ]
        out: dict[str, Any] = {"pipelines": pipelines}
        for spec in specs:
            client = PoliteClient(spec)
            adapter = adapter_for(spec.kind)(spec, clock, client)
            cursor: dict[str, Any] = {}
            for _ in range(3):  # catch up: first poll reads the active set and the initial window
                result = await adapter.poll(cursor)
                if not result.health.reachable:
                    raise RuntimeError(f"{spec.kind}: {result.health.error}")
                cursor = result.cursor
            reqs, cpus, runs = [], [], []
            for _ in range(cycles):
                await asyncio.sleep(interval)
                before_r, before_c = client.requests, time.process_time()
                result = await adapter.poll(cursor)
                cpus.append((time.process_time() - before_c) * 1000)
                reqs.append(client.requests - before_r)
                runs.append(len(result.runs))
                cursor = result.cursor
            await client.aclose()
            out[spec.kind] = {
                "requests": statistics.median(reqs),
                "requests_max": max(reqs),
                "cpu_ms": statistics.median(cpus),
                "runs": statistics.median(runs),
            }
        return out
    finally:
        proc.terminate()
        proc.wait(10)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--cycles", type=int, default=8)
    ap.add_argument("--interval", type=float, default=1.0, help="real seconds between steady-state polls")
    args = ap.parse_args()
    rows = [await measure(n, args.cycles, args.interval) for n in args.sizes]
    base = rows[0]
    print(
        f"\nsteady-state poll cycle, median of {args.cycles} cycles ({args.interval:g}s apart); "
        f"ratios vs {base['pipelines']} pipelines"
    )
    print(
        f"{'pipelines':>10} {'kind':>8} {'requests':>9} {'max':>4} {'ratio':>6} {'changed runs':>13} "
        f"{'CPU ms':>8} {'ratio':>6}"
    )
    for row in rows:
        for kind in ("airflow", "prefect"):
            r, b = row[kind], base[kind]
            print(
                f"{row['pipelines']:>10} {kind:>8} {r['requests']:>9g} {r['requests_max']:>4} "
                f"{r['requests'] / b['requests']:>6.2f} {r['runs']:>13g} {r['cpu_ms']:>8.1f} "
                f"{r['cpu_ms'] / max(b['cpu_ms'], 0.01):>6.2f}"
            )


if __name__ == "__main__":
    httpx  # noqa: B018 - imported so a missing dependency fails before the simulator starts
    asyncio.run(main())
