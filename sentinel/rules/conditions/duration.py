"""`when: duration` — a run takes longer than `max` or (successful runs only) shorter than `min`.

Two runs are judged, and either may fire the one alert per pipeline:

- the run in progress, if any: its elapsed time (now − started_at) against `max` only, because a run
  still going cannot yet be "too short";
- the latest finished decisive run (success, failed or crashed): against `max`, and against `min` when it
  succeeded. A finished run keeps the alert firing until the next run finishes within bounds, the way
  `when: failed` holds until the next success. Cancelled and skipped runs are ignored: on-call cancelling
  a run that hung is a decision, and the alert resolving then is what they want.

Limits are absolute durations or relative to the pipeline's own baseline. The grammar is small on purpose:

    limit    := duration | stat [ "*" factor ] [ ("+" | "-") duration ]
    stat     := p50 | p90 | p95 | p99 | median | mean
    duration := 45m, 1h30m, 90s ... (the usual duration syntax; a bare number is seconds)

e.g. `max: 2h`, `max: p95 * 1.5`, `max: median + 10m`, `min: p50 * 0.2`. The baseline is the last
`history` successful finished runs other than the judged one (the judged run never sets its own bar), and a
relative limit gives no verdict until there are `min_history` of them; an absolute limit always judges.
Percentiles interpolate linearly between the nearest ranks (numpy's default).

While a source is unreachable nothing is judged for its pipelines and their alerts are held as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, model_validator

from sentinel.durations import format_duration, parse_duration
from sentinel.model import PipelineKey, RunState, RunUpdate
from sentinel.observe.history import PipelineHistory
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, pipeline_labels

STATS: dict[str, float | None] = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "median": 0.5, "mean": None}
_RELATIVE = re.compile(
    r"^(?P<stat>[a-z0-9]+)"
    r"(?:\s*\*\s*(?P<factor>\d+(?:\.\d+)?|\.\d+))?"
    r"(?:\s*(?P<sign>[+-])\s*(?P<offset>\S+))?$"
)
_GRAMMAR = "expected a duration (45m) or '<stat> [* factor] [+|- duration]' with stat in " + ", ".join(STATS)
_RUNNING = frozenset({RunState.RUNNING, RunState.RETRYING})
_FINISHED = frozenset({RunState.SUCCESS, RunState.FAILED, RunState.CRASHED})


@dataclass(frozen=True)
class Limit:
    """A parsed `max:` / `min:`. `stat` None means absolute: the limit is `offset` alone."""

    stat: str | None
    factor: float = 1.0
    offset: float = 0.0  # seconds, may be negative for "p50 - 5m"
    text: str = ""

    def seconds(self, baseline: float | None) -> float | None:
        if self.stat is None:
            return self.offset
        if baseline is None:
            return None
        return baseline * self.factor + self.offset

    def __str__(self) -> str:
        return self.text


def parse_limit(value: Any) -> Limit:
    if isinstance(value, Limit):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(_GRAMMAR)
    if isinstance(value, int | float):
        return Limit(None, offset=parse_duration(value).total_seconds(), text=str(value))
    text = " ".join(value.split())
    m = _RELATIVE.match(text)
    if m is not None and m.group("stat") not in STATS and (m.group("factor") or m.group("offset")):
        # "p96 * 2" is clearly meant as relative: name the bad statistic rather than the whole grammar.
        raise ValueError(
            f"invalid limit {value!r}: unknown statistic {m.group('stat')!r}; use one of {', '.join(STATS)}"
        )
    if m is None or m.group("stat") not in STATS:
        try:
            return Limit(None, offset=parse_duration(text).total_seconds(), text=text)
        except ValueError:
            raise ValueError(f"invalid limit {value!r}: {_GRAMMAR}") from None
    factor = float(m.group("factor")) if m.group("factor") else 1.0
    if factor <= 0:
        raise ValueError(f"invalid limit {value!r}: the factor must be greater than 0")
    offset = 0.0
    if m.group("offset"):
        try:
            offset = parse_duration(m.group("offset")).total_seconds()
        except ValueError as exc:
            raise ValueError(f"invalid limit {value!r}: {exc}") from None
        if m.group("sign") == "-":
            offset = -offset
    return Limit(m.group("stat"), factor, offset, text)


DurationLimit = Annotated[Limit, BeforeValidator(parse_limit), PlainSerializer(str, return_type=str)]


class DurationRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"run_id", "state", "duration", "limit", "baseline", "direction", "running", "stat", "history",
         "duration_text", "limit_text", "baseline_text"}
    )  # fmt: skip

    when: Literal["duration"]
    max: DurationLimit | None = None
    min: DurationLimit | None = None
    history: Annotated[int, Field(ge=1, le=1000)] = 30
    min_history: Annotated[int, Field(ge=1, le=1000)] = 5

    @model_validator(mode="after")
    def _check(self) -> DurationRule:
        if self.max is None and self.min is None:
            raise ValueError("duration needs 'max', 'min' or both (e.g. max: 2h or max: p95 * 1.5)")
        if self.min_history > self.history:
            raise ValueError(
                f"duration: min_history ({self.min_history}) is larger than history ({self.history}); "
                "relative limits could never judge"
            )
        for name, lim in (("max", self.max), ("min", self.min)):
            if lim is not None and lim.stat is None and lim.offset <= 0:
                raise ValueError(f"duration: '{name}' must be longer than 0s")
        return self


def evaluate(rule: DurationRule, scope: Scope) -> Evaluation:
    findings: list[Finding] = []
    # While a source is unreachable a "running" run may long have finished: its elapsed time would grow
    # on stale data and page for nothing. Judge nothing there and hold what is firing (source_down pages).
    blind = {s for s, h in scope.history.health.items() if not h.reachable}
    for ph in scope.pipelines:
        if ph.key.source in blind:
            continue
        f = _judge(rule, ph, scope.now)
        if f is not None:
            findings.append(f)

    def settled(labels: Mapping[str, str]) -> bool:
        return labels.get("source") not in blind

    return Evaluation(findings, settled)


def _judge(rule: DurationRule, ph: PipelineHistory, now: datetime) -> Finding | None:
    # The run in progress is the most current news, so it wins when both it and the last run are off.
    running = ph.runs_derived("duration.oldest_running", _oldest_running_of)
    if running is not None and rule.max is not None and running.started_at is not None:
        elapsed = max(0.0, (now - running.started_at).total_seconds())
        hit = _check(rule, ph, running, elapsed, rule.max, "long")
        if hit is not None:
            return hit
    # The finished run's verdict reads the history alone, never `now`: kept until the pipeline changes.
    # Keyed by every rule field it reads, so two duration rules (or a reloaded one) never share an answer.
    name = f"duration.finished|{rule.max}|{rule.min}|{rule.history}|{rule.min_history}"
    return ph.derived(name, lambda ph: _judge_finished(rule, ph))


def _judge_finished(rule: DurationRule, ph: PipelineHistory) -> Finding | None:
    finished = _latest_finished(ph.ordered())
    if finished is None:
        return None
    took = finished.duration_seconds
    assert took is not None
    if rule.max is not None:
        hit = _check(rule, ph, finished, took, rule.max, "long")
        if hit is not None:
            return hit
    if rule.min is not None and finished.state is RunState.SUCCESS:
        return _check(rule, ph, finished, took, rule.min, "short")
    return None


def _check(
    rule: DurationRule, ph: PipelineHistory, run: RunUpdate, took: float, lim: Limit, direction: str
) -> Finding | None:
    baseline: float | None = None
    if lim.stat is not None:
        baseline = _baseline(rule, ph, run, lim.stat)
        if baseline is None:
            return None  # not enough history yet: no verdict, in either direction
    limit = lim.seconds(baseline)
    assert limit is not None
    off = took > limit if direction == "long" else took < limit
    if not off:
        return None
    return Finding(
        pipeline_labels(ph),
        {
            "run_id": run.run_id,
            "state": run.state.value,
            "running": run.state in _RUNNING,
            "duration": took,
            "limit": limit,
            "baseline": baseline,
            "stat": lim.stat,
            "history": rule.history,
            "direction": direction,
            # Jinja has no duration filter: ready-made text so a summary reads "took 1h5m, limit 45m".
            "duration_text": describe(took),
            "limit_text": describe(limit),
            "baseline_text": describe(baseline) if baseline is not None else None,
            "value": took,
        },
    )


def _oldest_running_of(ph: PipelineHistory) -> RunUpdate | None:
    # Scans every run, yet only a change can alter the answer: kept per pipeline version.
    return _oldest_running(ph.ordered())


def _oldest_running(ordered: list[RunUpdate]) -> RunUpdate | None:
    # With overlapping runs the one started first has been going longest: it is the one to report.
    best: RunUpdate | None = None
    for r in ordered:
        if r.state in _RUNNING and r.started_at is not None:
            if best is None or r.started_at < best.started_at:  # type: ignore[operator]
                best = r
    return best


def _latest_finished(ordered: list[RunUpdate]) -> RunUpdate | None:
    for r in reversed(ordered):
        if r.state in _FINISHED and r.started_at is not None and r.ended_at is not None:
            return r
    return None


# Baselines only change when a pipeline's runs do, yet every tick asks for them: memoise per pipeline,
# valid while History's ordered run list is the same object (it builds a new one whenever runs change).
# Keyed by pipeline, so bounded by the number of pipelines; cleared outright if that ever runs away.
_BaselineKey = tuple[str, int, int, str]
_BASELINES: dict[PipelineKey, tuple[list[RunUpdate], dict[_BaselineKey, float | None]]] = {}
_MAX_BASELINES = 200_000


def _baseline(rule: DurationRule, ph: PipelineHistory, judged: RunUpdate, stat: str) -> float | None:
    ordered = ph.ordered()
    entry = _BASELINES.get(ph.key)
    if entry is None or entry[0] is not ordered:
        if len(_BASELINES) >= _MAX_BASELINES:
            _BASELINES.clear()
        entry = (ordered, {})
        _BASELINES[ph.key] = entry
    key = (judged.run_id, rule.history, rule.min_history, stat)
    memo = entry[1]
    if key not in memo:
        memo[key] = _compute_baseline(ordered, judged.run_id, rule.history, rule.min_history, stat)
    return memo[key]


def _compute_baseline(ordered: list[RunUpdate], skip: str, history: int, min_history: int, stat: str) -> float | None:
    samples: list[float] = []
    success = RunState.SUCCESS
    for r in reversed(ordered):
        if r.state is not success or r.run_id == skip or r.started_at is None or r.ended_at is None:
            continue
        samples.append(max(0.0, (r.ended_at - r.started_at).total_seconds()))
        if len(samples) >= history:
            break
    if len(samples) < min_history:
        return None
    return statistic(samples, stat)


def statistic(samples: list[float], stat: str) -> float:
    q = STATS[stat]
    if q is None:
        return math.fsum(samples) / len(samples)
    return quantile(sorted(samples), q)


def quantile(ordered: list[float], q: float) -> float:
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def describe(seconds: float) -> str:
    # Whole seconds: "1h5m3s" reads better than milliseconds nobody acts on; negative limits read as 0s.
    return format_duration(timedelta(seconds=max(0, round(seconds))))


def quiet_until(rule: DurationRule, ph: PipelineHistory, scope: Scope) -> datetime | None:
    """For a pipeline `evaluate` found nothing for: when the run in progress passes `max`, its history
    unchanged. The finished run's verdict reads the history alone."""
    running = ph.runs_derived("duration.oldest_running", _oldest_running_of)
    if running is None or rule.max is None or running.started_at is None:
        return None
    baseline: float | None = None
    if rule.max.stat is not None:
        baseline = _baseline(rule, ph, running, rule.max.stat)
        if baseline is None:
            return None
    limit = rule.max.seconds(baseline)
    assert limit is not None
    return running.started_at + timedelta(seconds=max(limit, 0.0))


MODEL = DurationRule
