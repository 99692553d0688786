"""`when: failure_rate` — the failed share of recent decisive runs is above `threshold`.

"Recent" is either the last `last: N` decisive runs or the decisive runs that ended within `window:`.
Decisive means success, failed or crashed: skipped and cancelled runs were decided by a human or an
upstream and say nothing about the pipeline's health (the same rule `when: failed` uses).
"""

from __future__ import annotations

from datetime import datetime, timedelta  # noqa: F401 - pydantic resolves annotations at runtime
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from sentinel.durations import Duration, format_duration
from sentinel.model import FAILURE, RunState, RunUpdate
from sentinel.observe.history import PipelineHistory
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, per_pipeline, pipeline_labels

# Decisive runs, as `failed.decisive` has them; inlined because this loop runs per pipeline per tick.
_DECISIVE = frozenset({RunState.SUCCESS, RunState.FAILED, RunState.CRASHED})
# With `window:` and no `min_runs`, a handful of runs is the least that makes a share mean anything.
DEFAULT_WINDOW_MIN_RUNS = 5


class FailureRateRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"rate", "failed", "total", "window", "last", "threshold", "run_id"}
    )

    when: Literal["failure_rate"]
    threshold: Annotated[float, Field(ge=0, le=1)]
    # History keeps a bounded number of runs per pipeline (100 by default): a larger N could never be met.
    last: Annotated[int, Field(ge=1, le=1000)] | None = None
    window: Duration | None = None
    min_runs: Annotated[int, Field(ge=1, le=1000)] | None = None

    @model_validator(mode="after")
    def _one_of_last_or_window(self) -> FailureRateRule:
        if (self.last is None) == (self.window is None):
            raise ValueError(
                "failure_rate needs exactly one of 'last' (a number of runs, e.g. last: 20) "
                "or 'window' (a duration, e.g. window: 7d)"
            )
        if self.window is not None and self.window.total_seconds() <= 0:
            raise ValueError("failure_rate: 'window' must be longer than 0s")
        if self.last is not None and self.min_runs is not None and self.min_runs > self.last:
            raise ValueError(
                f"failure_rate: min_runs ({self.min_runs}) is larger than last ({self.last}); "
                "the rule could never judge"
            )
        return self

    @property
    def effective_min_runs(self) -> int:
        if self.min_runs is not None:
            return self.min_runs
        # "The last N runs" is only the last N once there are N of them.
        return self.last if self.last is not None else DEFAULT_WINDOW_MIN_RUNS


def time_independent(rule: FailureRateRule) -> bool:
    """`last: N` reads only the history; a `window:` ends at `now` and so moves every tick."""
    return rule.last is not None


def evaluate(rule: FailureRateRule, scope: Scope) -> Evaluation:
    return per_pipeline(_judge, rule, scope)


def _judge(rule: FailureRateRule, ph: PipelineHistory, scope: Scope) -> Finding | None:
    runs = _sample(rule, ph, scope)
    total = len(runs)
    if total == 0 or total < rule.effective_min_runs:
        return None
    failed = sum(r.state in FAILURE for r in runs)
    rate = failed / total
    if rate <= rule.threshold:
        return None
    return Finding(
        pipeline_labels(ph),
        {
            "rate": rate,
            "failed": failed,
            "total": total,
            "window": format_duration(rule.window) if rule.window is not None else None,
            "last": rule.last,
            "threshold": rule.threshold,
            "run_id": runs[-1].run_id,
            "value": rate,
        },
    )


def _sample(rule: FailureRateRule, ph: PipelineHistory, scope: Scope) -> list[RunUpdate]:
    if rule.last is not None:
        # Walk back from the newest and stop at N: this runs for every pipeline on every tick.
        picked: list[RunUpdate] = []
        for r in reversed(ph.ordered()):
            if r.state in _DECISIVE:
                picked.append(r)
                if len(picked) >= rule.last:
                    break
        picked.reverse()
        return picked
    assert rule.window is not None
    since, now = scope.now - rule.window, scope.now
    # By ended_at, not scheduled_for: a catch-up of old periods that fails today is today's failure rate.
    # The window ends at `now` so that evaluating at an instant (`sentinel test`) never sees the future.
    return [r for r in ph.ordered() if r.state in _DECISIVE and r.ended_at is not None and since < r.ended_at <= now]


def quiet_until(rule: FailureRateRule, ph: PipelineHistory, scope: Scope) -> datetime | None:
    """With `window:`, the sample changes only when a run's end enters the window (`ended_at`, in a
    replayed history) or leaves it (`ended_at + window`): the earliest such instant after now."""
    if rule.window is None:
        return None
    now, best = scope.now, None
    for r in ph.ordered():
        if r.state in _DECISIVE and r.ended_at is not None:
            for t in (r.ended_at, r.ended_at + rule.window):
                if t > now and (best is None or t < best):
                    best = t
    return best


MODEL = FailureRateRule
