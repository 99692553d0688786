"""When will a pipeline's run for a period finish? A projection from the pipeline's own history.

Used by `when: deadline` with `predict: true`. The projection at percentile q (0.9 for p90):

- The run is going and has task detail, and at least `min_history` of the last `HISTORY` successful runs
  have task detail: every task of those runs or of this one that has not finished in this run costs its
  own q-th percentile duration over those runs; a task still running costs what is left of it
  (`percentile − elapsed`, never below zero); a task never seen finishing costs nothing. The sum is scaled
  by the median ratio of run duration to summed task durations over the same runs, which is how the
  pipeline's shape is inferred cheaply: about 1 (plus scheduling gaps) for a sequential pipeline, less
  for one that runs tasks in parallel. ETA = now + scaled sum.
- The run is going without task detail (or too little history of it): ETA = now + max(q-th percentile of
  whole-run durations − elapsed, 0).
- No run has started yet (none exists, or it is scheduled or queued): ETA = expected start + q-th
  percentile of run durations, the expected start being the latest of now, the pending run's scheduled
  time, and the pipeline's next scheduled run when that falls in the period.

Percentiles interpolate linearly between ranks (as `when: duration` does). Each remaining task at its own
q-th percentile is a cautious sum: the projection errs late, which is what a warning should do.

The projection never runs ahead of the clock by more than what is left at `now` (every term only shrinks
as time passes), so `projected_finish(t) <= t + (eta(now) - now)` for later t with the history unchanged:
callers use that bound to know when to look again.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from sentinel.model import RunState, RunUpdate, TaskUpdate
from sentinel.observe.history import PipelineHistory, run_order

HISTORY = 30  # successful runs the percentiles are taken over
_ACTIVE = frozenset({RunState.RUNNING, RunState.RETRYING})
_WAITING = frozenset({RunState.SCHEDULED, RunState.LATE, RunState.QUEUED})
# Task states that are done with: whatever remains of the run, these no longer cost time.
_TASK_DONE = frozenset({RunState.SUCCESS, RunState.SKIPPED, RunState.FAILED, RunState.CRASHED, RunState.CANCELLED})


@dataclass(frozen=True, slots=True)
class Eta:
    finish: datetime
    basis: str  # "tasks", "run" (whole-run durations) or "not started"
    run_id: str | None  # the run projected, if one exists
    samples: int  # successful runs the percentiles come from


@dataclass(frozen=True, slots=True)
class _Baseline:
    runs: int  # successful finished runs considered
    run_q: float | None  # q-th percentile of their durations, seconds
    task_runs: int  # of those, runs with task detail
    task_q: dict[str, float]  # task -> q-th percentile duration, seconds
    ratio: float  # median of run duration / summed task durations


def estimate(
    ph: PipelineHistory, start: datetime, end: datetime, now: datetime, q: float, min_history: int
) -> Eta | None:
    """The projected finish of the run for the period [start, end), or None when there is nothing to
    project: a success for it exists, its last run failed with none pending, or history is too short."""
    current: RunUpdate | None = None
    for run in reversed(ph.ordered()):
        at = run_order(run)
        if at >= end:
            continue
        if at < start:
            break
        if run.state is RunState.SUCCESS:
            return None
        if current is None and (run.state in _ACTIVE or run.state in _WAITING):
            current = run
        elif current is None:
            return None  # the newest run for the period ended without success: `failed` pages for that
    base = ph.derived(f"eta.baseline|{q}", lambda p: _baseline(p, q))
    if base.runs < min_history or base.run_q is None:
        return None
    if current is None or current.state in _WAITING or current.started_at is None:
        expected = now
        if current is not None and current.scheduled_for is not None:
            expected = max(expected, current.scheduled_for)
        nxt = ph.info.next_run if ph.info is not None else None
        if current is None and nxt is not None and start <= nxt < end:
            expected = max(expected, nxt)
        run_id = current.run_id if current is not None else None
        return Eta(expected + timedelta(seconds=base.run_q), "not started", run_id, base.runs)
    tasks = ph.tasks.get(current.run_id)
    if tasks and base.task_runs >= min_history:
        left = _tasks_left(tasks, base.task_q, now)
        return Eta(now + timedelta(seconds=left * base.ratio), "tasks", current.run_id, base.task_runs)
    elapsed = max(0.0, (now - current.started_at).total_seconds())
    return Eta(now + timedelta(seconds=max(base.run_q - elapsed, 0.0)), "run", current.run_id, base.runs)


def _tasks_left(tasks: dict[str, TaskUpdate], task_q: dict[str, float], now: datetime) -> float:
    left = 0.0
    for name, p in task_q.items():
        t = tasks.get(name)
        if t is None:
            left += p
        elif t.state in _TASK_DONE:
            continue
        elif t.started_at is not None and t.state in _ACTIVE:
            left += max(p - max(0.0, (now - t.started_at).total_seconds()), 0.0)
        else:
            left += p
    return left


def _baseline(ph: PipelineHistory, q: float) -> _Baseline:
    # Kept per pipeline version: judged on every tick a run is going, computed once per change.
    durations: list[float] = []
    per_task: dict[str, list[float]] = {}
    ratios: list[float] = []
    task_runs = 0
    for run in reversed(ph.ordered()):
        if run.state is not RunState.SUCCESS or run.started_at is None or run.ended_at is None:
            continue
        took = max(0.0, (run.ended_at - run.started_at).total_seconds())
        durations.append(took)
        summed = 0.0
        for t in ph.tasks.get(run.run_id, {}).values():
            d = t.duration_seconds
            if t.state is RunState.SUCCESS and d is not None:
                per_task.setdefault(t.task, []).append(d)
                summed += d
        if summed > 0:
            task_runs += 1
            ratios.append(took / summed)
        if len(durations) >= HISTORY:
            break
    return _Baseline(
        runs=len(durations),
        run_q=quantile(sorted(durations), q) if durations else None,
        task_runs=task_runs,
        task_q={name: quantile(sorted(ds), q) for name, ds in per_task.items()},
        ratio=statistics.median(ratios) if ratios else 1.0,
    )


def quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the nearest ranks (numpy's default), as `when: duration` uses."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
