"""Cost of a Prometheus scrape of Sentinel: GET /metrics time, and how long it stalls Sentinel's event loop.

For each size (default 1,000 and 10,000 pipelines) this builds a real Daemon (no sources, no rules, HTTP on
127.0.0.1) and fills its metrics through the real update path, `Daemon.handle_result`, with poll results
of finished runs (two successes and a failure per pipeline, each with two tasks on a priced pool), half
the pipelines on an Airflow-named source and half on a Prefect-named one, pipeline metadata (paused) and a
cost budget: run counters, duration and recovery histograms, freshness, success ratios, paused, cost.

It then scrapes `/metrics` `--scrapes` times with curl (a separate process, as Prometheus is: a client
thread in this process would compete for the GIL and inflate the stall several-fold) while a ticker task on
the loop sleeps 1 ms at a time and records how late each wakeup is. Per scrape: curl's total time and the
worst lateness (the stall). Baseline, in the same run: the worst lateness over an equally long window with
no scrape. Medians of `--scrapes` runs. Needs `curl` on PATH. `--gzip` asks for a gzip page as Prometheus
does (curl --compressed) and adds the bytes on the wire.

    python bench/scrape.py [--sizes 1000 10000] [--scrapes 5] [--gzip]

Measured on a 2-core machine shared with other heavy work, 10,000 pipelines, medians of 5 (before =
prometheus_client's generate_latest in one piece; after = sentinel.exposition streamed in ~64 KB chunks);
the load varies between runs, so each row quotes its own idle baseline:

    10,000 pipelines       series  page MB  wire MB  scrape ms  stall ms  idle ms
    before (lead's run)    410014    39.71    39.71    34700.0    404.00    76.00
    before (same session)  410014    39.71    39.71    11040.9    168.16    23.69
    after                  410014    39.71    39.70   635-762     12-24    3-7
    after, --gzip          410014    39.71     1.63   633-1109    13-27    4-8
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.model import PipelineInfo, PollResult, RunState, RunUpdate, SourceHealth, TaskUpdate

CONFIG = """\
receivers: [{name: none, console: true}]
route: {receiver: none}
cost:
  monthly_budget: 1000
  rates:
    - {pool: "*", per_task_hour: 0.5, per_run: 0.01}
store: {path: state.db}
server: {listen: "127.0.0.1:0"}
"""
BATCH = 500  # pipelines per poll result, like a poll cycle's page of runs


async def scrape(url: str, out: Path | None = None, gzip: bool = False) -> tuple[float, int]:
    """GET the page with curl, a separate process like Prometheus, so that no client work runs on (or takes
    the GIL from) Sentinel's loop. Returns curl's total time in seconds and the bytes on the wire."""
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--fail",
        *(["--compressed"] if gzip else []),
        "--max-time",
        "300",
        "--output",
        str(out or "/dev/null"),
        "--write-out",
        "%{time_total} %{size_download}",
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"curl {url} failed with exit code {proc.returncode}")
    total, size = stdout.split()
    return float(total), int(size)


class Ticker:
    """Sleeps 1 ms in a loop on the event loop and keeps the worst wakeup lateness since the last reset."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - t0 - 0.001)

    def reset(self) -> None:
        self.worst = 0.0

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def poll_results(pipelines: int, now: datetime) -> list[PollResult]:
    out = []
    for start in range(0, pipelines, BATCH):
        by_source: dict[str, tuple[list[RunUpdate], list[TaskUpdate], list[PipelineInfo]]] = {}
        for i in range(start, min(start + BATCH, pipelines)):
            source, name = ("airflow", f"dag_{i:05d}") if i % 2 == 0 else ("prefect", f"flow-{i:05d}")
            runs, tasks, infos = by_source.setdefault(source, ([], [], []))
            infos.append(PipelineInfo(source=source, pipeline=name, paused=i % 50 == 0))
            for k, state in enumerate((RunState.FAILED, RunState.SUCCESS, RunState.SUCCESS)):
                ended = now - timedelta(hours=3 - k, seconds=i % 600)
                started = ended - timedelta(seconds=60 + (i * 7 + k * 13) % 1800)
                run_id = f"{name}-{k}"
                runs.append(
                    RunUpdate(
                        source=source,
                        pipeline=name,
                        run_id=run_id,
                        state=state,
                        scheduled_for=started,
                        started_at=started,
                        ended_at=ended,
                        updated_at=ended,
                    )
                )
                for t, task in enumerate(("extract", "load")):
                    task_state = RunState.FAILED if state is RunState.FAILED and t == 1 else RunState.SUCCESS
                    tasks.append(
                        TaskUpdate(
                            source=source,
                            pipeline=name,
                            run_id=run_id,
                            task=task,
                            state=task_state,
                            try_number=1,
                            started_at=started,
                            ended_at=ended,
                            updated_at=ended,
                            pool="default_pool",
                        )
                    )
        for source, (runs, tasks, infos) in by_source.items():
            health = SourceHealth(source=source, reachable=True, observed_at=now)
            out.append(
                PollResult(
                    source=source,
                    health=health,
                    runs=tuple(runs),
                    tasks=tuple(tasks),
                    pipelines_partial=tuple(infos),
                )
            )
    return out


async def measure(pipelines: int, scrapes: int, gzip: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sentinel.yaml"
        cfg.write_text(CONFIG)
        daemon = Daemon(load_config(cfg))
        await daemon.start()
        try:
            t0 = time.perf_counter()
            for result in poll_results(pipelines, datetime.now(UTC)):
                await daemon.handle_result(result)
            fill = time.perf_counter() - t0
            url = f"http://127.0.0.1:{daemon.web_port}/metrics"
            page_file = Path(tmp) / "metrics.txt"
            await scrape(url, page_file)  # warm-up, not counted; kept to count the series
            page = page_file.read_bytes()
            ticker = Ticker()
            ticker.start()
            times, stalls, idle, wire = [], [], [], []
            for _ in range(scrapes):
                ticker.reset()
                took, size = await scrape(url, gzip=gzip)
                times.append(took)
                wire.append(size)
                stalls.append(ticker.worst)
                # Baseline: an equally long window on the same loop with no scrape.
                ticker.reset()
                await asyncio.sleep(times[-1])
                idle.append(ticker.worst)
            await ticker.stop()
        finally:
            await daemon.stop()
    series = sum(1 for line in page.splitlines() if line and not line.startswith(b"#"))
    stall, base = statistics.median(stalls), statistics.median(idle)
    return {
        "pipelines": pipelines,
        "series": series,
        "mb": len(page) / 1e6,
        "wire": statistics.median(wire) / 1e6,
        "fill": fill,
        "scrape": statistics.median(times),
        "stall": stall,
        "idle": base,
        "ratio": stall / base if base > 0 else float("inf"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--scrapes", type=int, default=5)
    p.add_argument("--gzip", action="store_true", help="scrape with Accept-Encoding: gzip, as Prometheus does")
    args = p.parse_args()
    rows = [asyncio.run(measure(n, args.scrapes, args.gzip)) for n in args.sizes]
    print(f"medians of {args.scrapes} scrapes; stall = worst lateness of a 1 ms sleep on Sentinel's loop")
    print("gzip: on" if args.gzip else "gzip: off")
    header = (
        f"{'pipelines':>9} {'series':>8} {'page MB':>8} {'wire MB':>8} {'fill s':>7} {'scrape ms':>10} "
        f"{'stall ms':>9} {'idle ms':>8} {'stall/idle':>10}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['pipelines']:>9} {r['series']:>8} {r['mb']:>8.2f} {r['wire']:>8.2f} {r['fill']:>7.1f} "
            f"{r['scrape'] * 1e3:>10.1f} {r['stall'] * 1e3:>9.2f} {r['idle'] * 1e3:>8.2f} {r['ratio']:>10.1f}"
        )


if __name__ == "__main__":
    main()
