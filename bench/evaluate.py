"""CPU time and allocations of one rule-evaluation tick: 10,000 pipelines × 12 rules.

The daemon evaluates every rule over the whole history on each tick (`only=None`), so the tick's cost is
what bounds how many pipelines one Sentinel can watch. This builds a synthetic but realistic history —
Airflow- and Prefect-style names, ~30 runs per pipeline with tasks, hourly and daily schedules, a few
percent failures, retries, queued and late runs, some paused pipelines, one unreachable source and a few
import errors — and a rule set of 12 rules covering every condition kind. It evaluates one warm-up tick
(not counted: the first tick creates every alert instance), then `--ticks` ticks under a frozen clock that
advances 15 s per tick, with `--changes` runs changing state between ticks the way a poll cycle would
(running → finished, a new run queued), fed through `History.apply` as the poller does.

Per tick it reports process CPU (`time.process_time`, median and min), wall time, and — in a separate
pass under `tracemalloc`, since tracing slows everything down — the peak traced memory and the number of
memory blocks still allocated after the tick (net of what the tick freed; what a tick leaves behind).

Baselines, measured in the same invocation so ratios compare like with like on this machine:

- `scan`: the same 12 × N pipelines loop that any per-tick evaluation at least pays — for each rule,
  visit every pipeline and read each of its runs' state once — with no rule logic at all. A ratio near or
  below 1 means evaluation costs no more than looking at the history once per rule.
- `1k`: the same tick over 1,000 pipelines (same generator, same rules). The ratio shows how the tick
  scales; ~10 means linear in the number of pipelines.
- `judge`: only the conditions, every rule over every selected pipeline, no instances and no templates —
  the least a tick that judged everything afresh would pay. The engine judges a pipeline again only when
  its history changed or the instant its verdict could change has come, so a ratio well below 1 is the
  verdict cache at work.

The first tick (every pipeline judged, every instance created) is reported on its own line.

    python bench/evaluate.py [--pipelines 10000] [--runs 30] [--ticks 7] [--changes 20] [--small 1000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel.model import (
    ComponentHealth,
    ImportErrorInfo,
    PipelineInfo,
    PipelineKey,
    PollResult,
    RunState,
    RunUpdate,
    SourceHealth,
    TaskUpdate,
)
from sentinel.observe.history import History
from sentinel.rules.base import Scope
from sentinel.rules.conditions import evaluator
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import LoadedRules, load_rules

# Tuesday 2026-11-24, 22:00 UTC = 17:00 New York: the XNYS `close + 45m` deadline has just passed.
NOW = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
TICK = timedelta(seconds=15)
SOURCES = ("airflow-prod", "airflow-research", "prefect-prod", "prefect-etl")
UNREACHABLE = "airflow-research"  # its pipelines' duration/stuck alerts are held, source_down fires

RULES = """\
groups:
  - name: pipelines
    calendar: XNYS
    labels: {team: data-platform}
    rules:
      - alert: PipelineFailed
        when: failed
        severity: critical
        annotations:
          summary: "{{ pipeline }} run {{ run_id }} {{ state }} ({{ failed_tasks | join(', ') }})"
          runbook_url: runbooks/PipelineFailed.md
      - alert: TaskFailedTwice
        when: failed
        level: task
        consecutive: 2
        annotations:
          summary: "{{ pipeline }}.{{ task }} failed {{ consecutive }} times in a row"
      - alert: HighFailureRate
        when: failure_rate
        last: 20
        threshold: 0.25
        annotations:
          summary: "{{ pipeline }}: {{ failed }}/{{ total }} of the last runs failed"
      - alert: MarketDataLate
        when: deadline
        deadline: close + 45m
        annotations:
          summary: "{{ pipeline }} has no successful run for {{ period }} by {{ deadline }}"
      - alert: ReportsLate
        when: deadline
        deadline: "18:00"
        timezone: America/New_York
        calendar: weekdays
        annotations:
          summary: "{{ pipeline }} missed 18:00 for {{ period }} ({{ minutes_late }} min late)"
      - alert: DataStale
        when: freshness
        max_age: 26h
        annotations:
          summary: "{{ pipeline }}: last success {{ age }} ago"
      - alert: RunStartedLate
        when: late_start
        grace: 10m
        annotations:
          summary: "{{ pipeline }} run for {{ scheduled_for }} has not started ({{ late_by }})"
      - alert: RunTooLong
        when: duration
        max: p95 * 1.5
        annotations:
          summary: "{{ pipeline }} took {{ duration_text }} (limit {{ limit_text }})"
      - alert: RunStuck
        when: stuck
        max_wait: 30m
        annotations:
          summary: "{{ pipeline }} run {{ run_id }} waiting {{ waiting_text }}"
      - alert: TaskRetries
        when: retries
        threshold: 2
        annotations:
          summary: "{{ pipeline }}: {{ retries }} retries ({{ tasks | join(', ') }})"
  - name: platform
    rules:
      - alert: SourceDown
        when: source_down
        for: 1m
        annotations:
          summary: "{{ source }} {{ component }} is down: {{ error }}"
      - alert: DagImportError
        when: import_errors
        annotations:
          summary: "{{ filename }}: {{ message }}"
"""

TASKS = ("extract", "transform", "validate", "load")
AIRFLOW_WORDS = ("market_data", "risk", "positions", "pnl", "eod_report", "fx_rates", "curves", "trades")
PREFECT_WORDS = ("ingest-prices", "refresh-features", "sync-crm", "score-model", "export-ledger", "etl-orders")


def load_bench_rules() -> LoadedRules:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bench.yaml"
        p.write_text(RULES)
        return load_rules([p])


def _name(source: str, i: int) -> str:
    if source.startswith("airflow"):
        return f"{AIRFLOW_WORDS[i % len(AIRFLOW_WORDS)]}_{i:05d}_dag"
    return f"{PREFECT_WORDS[i % len(PREFECT_WORDS)]}-{i:05d}/default"


def _terminal_state(rnd: random.Random) -> RunState:
    x = rnd.random()
    if x < 0.05:
        return RunState.FAILED
    if x < 0.06:
        return RunState.CRASHED
    if x < 0.07:
        return RunState.SKIPPED
    if x < 0.075:
        return RunState.CANCELLED
    return RunState.SUCCESS


def _run(
    source: str, pipeline: str, n: int, scheduled: datetime, state: RunState, rnd: random.Random
) -> tuple[RunUpdate, list[TaskUpdate]]:
    # model_construct: the values are built right here, and validating a million facts would dominate setup.
    took = timedelta(seconds=rnd.randint(120, 900))
    started = scheduled + timedelta(seconds=rnd.randint(1, 30))
    not_started = state in (RunState.QUEUED, RunState.SCHEDULED, RunState.LATE)
    ended = None if not state.terminal else started + took
    run = RunUpdate.model_construct(
        source=source,
        pipeline=pipeline,
        run_id=f"scheduled__{scheduled:%Y-%m-%dT%H:%M}__{n}",
        state=state,
        raw_state=state.value,
        scheduled_for=scheduled,
        queued_at=scheduled,
        started_at=None if not_started else started,
        ended_at=ended,
        updated_at=ended or (scheduled if not_started else started),
        run_type="scheduled",
        version=None,
        message=None,
        url=f"https://{source}.example/runs/{pipeline}/{n}",
    )
    tasks = []
    if not not_started:
        for k, task in enumerate(TASKS):
            failed = state.failure and k == len(TASKS) - 1
            tstate = RunState.FAILED if failed else (RunState.SUCCESS if state.terminal else RunState.RUNNING)
            tries = 1 + (rnd.random() < 0.03) * rnd.randint(1, 3)
            tasks.append(
                TaskUpdate.model_construct(
                    source=source,
                    pipeline=pipeline,
                    run_id=run.run_id,
                    task=task,
                    state=tstate,
                    raw_state=tstate.value,
                    try_number=tries,
                    max_tries=4,
                    started_at=started,
                    ended_at=ended,
                    updated_at=ended or started,
                    pool="default_pool",
                    queue=None,
                    map_count=1,
                    message=None,
                )
            )
    return run, tasks


def build(pipelines: int, runs: int, seed: int = 7) -> tuple[History, dict[PipelineKey, list[RunUpdate]]]:
    """The history, plus per pipeline its runs, for the between-tick changes to pick from."""
    rnd = random.Random(seed)
    history = History()
    for source in SOURCES:
        comps = (ComponentHealth.model_construct(name="scheduler", healthy=True, last_heartbeat=NOW, detail=None),)
        history.health[source] = SourceHealth.model_construct(
            source=source,
            reachable=source != UNREACHABLE,
            observed_at=NOW,
            error=None if source != UNREACHABLE else "connect timeout",
            version="3.0.2",
            api="airflow-v2" if source.startswith("airflow") else "prefect",
            components=comps,
        )
        history.polled_once.add(source)
    history.import_errors["airflow-prod"] = tuple(
        ImportErrorInfo.model_construct(
            source="airflow-prod",
            filename=f"/opt/airflow/dags/broken_{i}.py",
            message=f"Traceback (most recent call last):\nModuleNotFoundError: No module named 'lib{i}'",
            timestamp=NOW - timedelta(hours=i),
        )
        for i in range(3)
    )
    history.import_errors["airflow-research"] = ()
    runs_of: dict[PipelineKey, list[RunUpdate]] = {}
    for i in range(pipelines):
        source = SOURCES[i % len(SOURCES)]
        name = _name(source, i)
        key = PipelineKey(source, name)
        ph = history.pipeline(key)
        hourly = rnd.random() < 0.7
        step = timedelta(hours=1) if hourly else timedelta(days=1)
        # Daily runs are for 21:00 UTC (after the close); hourly ones on the hour up to now.
        last = NOW.replace(minute=0) - (timedelta(0) if hourly else timedelta(hours=1))
        paused = rnd.random() < 0.05
        ph.info = PipelineInfo.model_construct(
            source=source,
            pipeline=name,
            paused=paused,
            tags=("finance",) if i % 3 == 0 else (),
            schedule="@hourly" if hourly else "0 21 * * 1-5",
            next_run=last + step,
            upstreams=(),
            url=f"https://{source}.example/pipelines/{name}",
        )
        made = []
        for n in range(runs):
            scheduled = last - step * (runs - 1 - n)
            newest = n == runs - 1
            x = rnd.random()
            if newest and x < 0.10:
                state = RunState.RUNNING
            elif newest and x < 0.12:
                state = RunState.QUEUED
            elif newest and x < 0.13 and source.startswith("prefect"):
                state = RunState.LATE
            else:
                state = _terminal_state(rnd)
            run, tasks = _run(source, name, n, scheduled, state, rnd)
            ph.add_run(run)
            for t in tasks:
                ph.add_task(t)
            made.append(run)
        runs_of[key] = made
    return history, runs_of


def mutate(
    history: History, runs_of: dict[PipelineKey, list[RunUpdate]], rnd: random.Random, now: datetime, n: int
) -> None:
    """What one poll cycle changes: `n` newest runs move on (queued → running → finished), via `apply`."""
    keys = rnd.sample(sorted(k for k in runs_of if k.source != UNREACHABLE), n)
    by_source: dict[str, list[RunUpdate]] = {}
    for key in keys:
        old = runs_of[key][-1]
        if old.state.terminal:
            new = old.model_copy(update={"state": _terminal_state(rnd), "updated_at": now, "ended_at": now})
        elif old.state is RunState.RUNNING:
            state = RunState.FAILED if rnd.random() < 0.3 else RunState.SUCCESS
            new = old.model_copy(update={"state": state, "raw_state": state.value, "ended_at": now, "updated_at": now})
        else:
            new = old.model_copy(
                update={"state": RunState.RUNNING, "raw_state": "running", "started_at": now, "updated_at": now}
            )
        runs_of[key][-1] = new
        by_source.setdefault(key.source, []).append(new)
    for source, runs in by_source.items():
        history.apply(PollResult(source=source, health=history.health[source], runs=tuple(runs)))


def scan(history: History, rule_count: int) -> int:
    """The baseline: visit every pipeline once per rule and read every run's state, no rule logic."""
    seen = 0
    for _ in range(rule_count):
        for ph in history.pipelines.values():
            for run in ph.runs.values():
                if run.state is RunState.FAILED:
                    seen += 1
    return seen


class Result:
    def __init__(self, cpu: list[float], wall: list[float], peak: list[int], blocks: list[int], alerts: int) -> None:
        self.cpu, self.wall, self.peak, self.blocks, self.alerts = cpu, wall, peak, blocks, alerts

    @property
    def median(self) -> float:
        return statistics.median(self.cpu)


def timed(fn: Callable[[int], object], ticks: int, between: Callable[[int], None]) -> Result:
    """CPU/wall per call (GC on, as in production), then the same again under tracemalloc for memory."""
    cpu: list[float] = []
    wall: list[float] = []
    alerts = 0
    for i in range(ticks):
        between(i)
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(i)
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
        alerts = len(out) if isinstance(out, list) else 0
    peak: list[int] = []
    blocks: list[int] = []
    for i in range(ticks, ticks + max(1, ticks // 3)):
        between(i)
        gc.collect()
        tracemalloc.start()
        b0 = sys.getallocatedblocks()
        fn(i)
        blocks.append(sys.getallocatedblocks() - b0)
        _, p = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak.append(p)
    return Result(cpu, wall, peak, blocks, alerts)


def bench_ticks(
    history: History, runs_of: dict[PipelineKey, list[RunUpdate]], ticks: int, changes: int, rules: LoadedRules
) -> Result:
    engine = RuleEngine(rules)
    rnd = random.Random(11)
    c0 = time.process_time()
    engine.evaluate(history, NOW)  # warm-up: creates every instance, compiles templates, fills caches
    first = (time.process_time() - c0) * 1000
    print(f"first tick at {len(history.pipelines)} pipelines (not counted): cpu {first:.1f} ms")
    engine.take_changes()

    def now_of(i: int) -> datetime:
        return NOW + TICK * (i + 1)

    def between(i: int) -> None:
        mutate(history, runs_of, rnd, now_of(i), changes)
        engine.take_changes()  # the daemon persists changes after every evaluation; keep sets small

    return timed(lambda i: engine.evaluate(history, now_of(i)), ticks, between)


def bench_judge(history: History, ticks: int, rules: LoadedRules) -> Result:
    """Every rule's condition over every selected pipeline (or source), nothing else: no instances, no
    templates. What any tick that judged everything afresh would pay at least."""
    specs = []
    for _, group in rules.groups():
        for rule in group.rules:
            selector = rule.pipelines or group.pipelines
            if rule.scope == "pipeline":
                picked = [ph for key, ph in history.pipelines.items() if selector.matches(key, ph.info)]
                specs.append((rule, group.calendar, picked, []))
            else:
                specs.append((rule, group.calendar, [], [s for s in history.health if selector.matches_source(s)]))
    extras: dict[str, object] = {}

    def judge(i: int) -> int:
        now = NOW + TICK * (i + 1)
        return sum(
            len(evaluator(rule.when)(rule, Scope(now, history, pipelines, sources, calendar, extras)).findings)
            for rule, calendar, pipelines, sources in specs
        )

    return timed(judge, ticks, lambda _i: None)


def bench_scan(history: History, ticks: int, rule_count: int) -> Result:
    return timed(lambda _i: scan(history, rule_count), ticks, lambda _i: None)


def row(name: str, r: Result, base: dict[str, Result]) -> str:
    ratios = "  ".join(f"{r.median / b.median:6.2f}x {k}" for k, b in base.items())
    return (
        f"{name:<22} cpu median {r.median:8.1f} ms  min {min(r.cpu):8.1f} ms  wall {statistics.median(r.wall):8.1f} ms"
        f"  peak {statistics.median(r.peak) / 1024:8.0f} KiB  blocks {int(statistics.median(r.blocks)):+8d}"
        f"  alerts {r.alerts:5d}  | {ratios}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipelines", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--ticks", type=int, default=7)
    ap.add_argument("--changes", type=int, default=20, help="runs changing state between ticks")
    ap.add_argument("--small", type=int, default=1_000, help="pipelines in the scaling baseline")
    args = ap.parse_args()

    rules = load_bench_rules()
    rule_count = sum(len(g.rules) for _, g in rules.groups())
    print(
        f"{args.pipelines} pipelines × {rule_count} rules, {args.runs} runs each, {args.ticks} ticks "
        f"(+1 warm-up), {args.changes} run changes per tick; python {sys.version.split()[0]}"
    )
    small_changes = max(1, args.changes * args.small // args.pipelines)
    small = bench_ticks(*build(args.small, args.runs), args.ticks, small_changes, rules)
    history, runs_of = build(args.pipelines, args.runs)
    # The scan reads the history before the ticks change it: the same runs either way.
    base = {"scan": bench_scan(history, args.ticks, rule_count)}
    base["1k" if args.small == 1000 else f"{args.small}"] = small
    base["judge"] = bench_judge(history, args.ticks, rules)
    big = bench_ticks(history, runs_of, args.ticks, args.changes, rules)
    print(row(f"scan {args.pipelines}", base["scan"], base))
    print(row(f"tick {args.small}", small, base))
    print(row(f"judge {args.pipelines}", base["judge"], base))
    print(row(f"tick {args.pipelines}", big, base))
    verdict = "meets" if big.median < 100 else "misses"
    print(f"goal: < 100 ms CPU per tick at {args.pipelines} pipelines — {verdict} ({big.median:.1f} ms median)")


if __name__ == "__main__":
    main()
