"""What the KPI series cost at 10,000 pipelines: the scrape, the loop's stall during it, and the SLA tick.

Builds a history of N pipelines (`--runs` finished runs each over the last 30 days, ~5 % failures, tasks
with pools) fed through the same `Kpis` bundle the daemon uses, plus one deadline rule over every
pipeline and a catch-all cost rate. Then, under a frozen clock:

- `scrape`: `Metrics.render()` of the whole registry (median of `--repeat`), against the baseline
  `counters only`: the same page without the computed KPI families (freshness, ratios, paused, SLA
  compliance, cost month) — i.e. what the per-scrape computation adds on top of serializing the counters.
- `loop stall`: the longest gap a 1 ms ticker on the event loop sees while `render_async()` runs in its
  thread (median over `--repeat` scrapes); the design bound is 50 ms. Also with the render's GC pause
  switched off (`GC not paused`), i.e. as before it existed.
- `sla tick`: one `SlaKpis.evaluate` over every pipeline once all periods are judged (the steady state),
  median of `--repeat`.

The machine is shared with other agents' work: read the ratios, not the absolute times.

    python bench/kpi.py [--pipelines 10000] [--runs 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sentinel.metrics
from sentinel.calendars import Calendars
from sentinel.clock import FrozenClock
from sentinel.config import CostConfig
from sentinel.kpi.hooks import Kpis
from sentinel.metrics import Metrics
from sentinel.model import PipelineInfo, PollResult, RunState, RunUpdate, SourceHealth, TaskUpdate
from sentinel.observe.history import History
from sentinel.rules.files import load_rules

NOW = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
RULES = """\
groups:
  - name: all
    rules:
      - alert: Late
        when: deadline
        deadline: "06:00"
"""


def build(n: int, runs: int) -> tuple[Kpis, Metrics, History]:
    rng = random.Random(7)
    metrics, history, clock = Metrics(), History(), FrozenClock(NOW)
    kpis = Kpis(metrics, clock, history, CostConfig.model_validate({"rates": [{"per_task_hour": 1, "per_run": 0.1}]}))
    health = SourceHealth(source="af", reachable=True, observed_at=NOW)
    for i in range(n):
        name = f"dag_{i:05d}"
        rs, ts = [], []
        for j in range(runs):
            end = NOW - timedelta(days=30 * j / runs, minutes=rng.randint(0, 600))
            state = RunState.FAILED if rng.random() < 0.05 else RunState.SUCCESS
            start = end - timedelta(minutes=rng.randint(1, 90))
            rid = f"{name}-{j}"
            rs.append(
                RunUpdate(
                    source="af",
                    pipeline=name,
                    run_id=rid,
                    state=state,
                    scheduled_for=start.replace(hour=0, minute=0),
                    started_at=start,
                    ended_at=end,
                    updated_at=end,
                )
            )
            ts.append(
                TaskUpdate(
                    source="af", pipeline=name, run_id=rid, task="t", state=state, started_at=start, ended_at=end
                )
            )
        info = PipelineInfo(source="af", pipeline=name, paused=i % 50 == 0)
        kpis.on_changes(history.apply(PollResult(source="af", health=health, runs=tuple(rs), tasks=tuple(ts))))
        history.apply(PollResult(source="af", health=health, pipelines_partial=(info,)))
    return kpis, metrics, history


def counters_only(metrics: Metrics, kpis: Kpis) -> None:
    for c in (kpis.pipelines, kpis.sla, kpis.cost):
        metrics.registry.unregister(c)


async def stall(metrics: Metrics) -> float:
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    await metrics.render_async()
    done = True
    await t
    return worst


def median_time(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipelines", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    kpis, metrics, history = build(a.pipelines, a.runs)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.yaml"
        p.write_text(RULES)
        rules = load_rules([p])
    extras = {"calendars": Calendars()}
    kpis.sla.evaluate(rules, history, extras, NOW)  # judge every period once: the rest is steady state
    sla_tick = median_time(lambda: kpis.sla.evaluate(rules, history, extras, NOW), a.repeat)

    page = metrics.render()
    full = median_time(metrics.render, a.repeat)
    stalls = [asyncio.run(stall(metrics)) for _ in range(a.repeat)]
    paused, sentinel.metrics._gc_paused = sentinel.metrics._gc_paused, contextlib.nullcontext()  # type: ignore[assignment]
    gc_stalls = [asyncio.run(stall(metrics)) for _ in range(a.repeat)]
    sentinel.metrics._gc_paused = paused
    counters_only(metrics, kpis)
    base = median_time(metrics.render, a.repeat)
    base_stalls = [asyncio.run(stall(metrics)) for _ in range(a.repeat)]

    print(f"pipelines={a.pipelines} runs/pipeline={a.runs} page={len(page) / 1e6:.1f} MB")
    print(f"scrape (render, thread)      median {full * 1000:8.1f} ms")
    print(f"counters only (baseline)     median {base * 1000:8.1f} ms   ratio {full / base:.2f}x")
    st, bst = statistics.median(stalls), statistics.median(base_stalls)
    print(f"loop stall during scrape     median {st * 1000:8.1f} ms   (bound 50 ms)")
    print(f"  ... counters only          median {bst * 1000:8.1f} ms   ratio {st / bst:.2f}x")
    gst = statistics.median(gc_stalls)
    print(f"  ... GC not paused (before) median {gst * 1000:8.1f} ms   ratio {st / gst:.2f}x")
    print(f"sla tick (steady state)      median {sla_tick * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
