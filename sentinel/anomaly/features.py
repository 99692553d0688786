"""The numbers that describe one finished run, and how each reads to a human."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

from sentinel.durations import format_duration
from sentinel.model import RunUpdate, TaskUpdate

FEATURES = ("duration", "start_delay", "queued", "retries", "tasks", "volume")
DEFAULT_FEATURES = ("duration", "start_delay", "queued", "retries", "tasks")
TIME_FEATURES = frozenset({"duration", "start_delay", "queued"})

# The smallest spread a feature's baseline is given, as max(absolute, relative × median). A pipeline whose
# runs all take exactly 2m10s has a MAD of 0, and without a floor a run of 2m11s would be "infinitely"
# unusual; a MAD from a few dozen runs also comes out small by chance now and then. The floors say what
# is too small a change to page on whatever the history: with the default threshold 4, a duration within
# ±32% of usual, a start or queue within ±4 minutes of usual, up to 3 retries or one task more or less
# than usual. Counts have floors just under a whole step so that "4 retries" or "2 tasks missing" clear 4.
ABSOLUTE_FLOOR = {"duration": 10.0, "start_delay": 60.0, "queued": 60.0, "retries": 0.8, "tasks": 0.4, "volume": 0.0}
RELATIVE_FLOOR = {"duration": 0.08, "volume": 0.05}

_SCHEDULED = frozenset({None, "scheduled"})


def extract(run: RunUpdate, tasks: Iterable[TaskUpdate], volume: float | None = None) -> dict[str, float]:
    """Every feature the run has. Missing inputs leave a feature out rather than invent a zero: a
    Prefect run without a queue time, or a run whose tasks were never read, says nothing about them."""
    out: dict[str, float] = {}
    if run.started_at is not None and run.ended_at is not None:
        out["duration"] = max(0.0, (run.ended_at - run.started_at).total_seconds())
    # A manual or backfill run starts whenever someone asked for it: its delay is no signal.
    if run.started_at is not None and run.scheduled_for is not None and run.run_type in _SCHEDULED:
        out["start_delay"] = (run.started_at - run.scheduled_for).total_seconds()
    if run.started_at is not None and run.queued_at is not None:
        out["queued"] = max(0.0, (run.started_at - run.queued_at).total_seconds())
    task_list = list(tasks)
    if task_list:
        out["retries"] = float(sum(max(t.try_number - 1, 0) for t in task_list))
        out["tasks"] = float(len(task_list))
    if volume is not None:
        out["volume"] = float(volume)
    return out


def human(feature: str, value: float) -> str:
    """`47m`, `3`, `1.2k`: the value the way a summary should print it."""
    if feature in TIME_FEATURES:
        sign = "-" if value < 0 else ""
        return sign + format_duration(timedelta(seconds=abs(round(value))))
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    return f"{value:,.2f}"


_PHRASES = {
    "duration": "took {value}; usual {low}–{high}",
    "start_delay": "started {value} after its scheduled time; usual {low}–{high}",
    "queued": "waited {value} in the queue; usual {low}–{high}",
    "retries": "needed {value} task retries; usual {low}–{high}",
    "tasks": "ran {value} tasks; usual {low}–{high}",
    "volume": "volume {value}; usual {low}–{high}",
}


def describe(feature: str, value: float, low: float, high: float) -> str:
    """One line for a summary: "took 47m; usual 12m–15m"."""
    lo, hi = human(feature, low), human(feature, high)
    return _PHRASES[feature].format(value=human(feature, value), low=lo, high=hi).replace(f"{lo}–{lo}", lo)


def floor(feature: str, center: float) -> float:
    return max(ABSOLUTE_FLOOR.get(feature, 0.0), RELATIVE_FLOOR.get(feature, 0.0) * abs(center), 1e-9)


def pick(values: Mapping[str, float], features: Iterable[str]) -> dict[str, float]:
    return {f: values[f] for f in features if f in values}
