"""`when: anomaly` — the latest successful run is unusual for this pipeline: slow, late, queued long, retried.

    - alert: RunUnusual
      when: anomaly
      features: [duration, start_delay, queued, retries, tasks]   # the default
      segment_by: [weekend, trading_day]   # compare a run only with runs of the same kind of day
      min_history: 20                      # no verdict before 20 comparable runs
      threshold: 4                         # robust z-score (detector: mad, the default)
      direction: slow                      # slow (above usual) | fast (below) | both
      annotations:
        summary: "{{ pipeline }} {{ description }}"   # "market_data_ingest took 47m; usual 12m–15m"

The run judged is the pipeline's newest successful run; the alert holds until a newer one is usual again,
the way `when: duration` holds. Baselines (`sentinel.anomaly.baseline`) learn every successful run once a
newer one exists, up to 500 per pipeline, and start again when the run's `version` changes. With `tasks:`
each matching task of that run is judged against its own baseline (duration, start after the run started,
retries) and alerts carry a `task` label.
"""

from __future__ import annotations

import fnmatch
from bisect import bisect_right
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo

from loguru import logger
from pydantic import Field, model_validator

from sentinel.anomaly import detectors
from sentinel.anomaly.baseline import (
    Baseline,
    BaselineStore,
    PipelineBaselines,
    Window,
    sample_time,
    segment_of,
    segment_window,
    store_for,
    task_features,
    volume_of,
)
from sentinel.anomaly.features import DEFAULT_FEATURES, describe, extract, human
from sentinel.calendars import Calendar, TimezoneName, lookup
from sentinel.durations import Duration
from sentinel.model import RunState, RunUpdate
from sentinel.observe.history import PipelineHistory
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope, pipeline_labels

Feature = Literal["duration", "start_delay", "queued", "retries", "tasks", "volume"]
TaskFeature = ("duration", "start_delay", "retries")
Segment = Literal["weekend", "weekday", "trading_day", "hour"]
DetectorName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)]

_WARNED: set[str] = set()
_MAX_MEMO = 64


class AnomalyRule(RuleBase):
    template_fields: ClassVar[frozenset[str]] = frozenset(
        {"run_id", "task", "feature", "value", "value_human", "usual_low", "usual_high", "usual_low_human",
         "usual_high_human", "median", "median_human", "score", "z", "threshold", "detector", "direction",
         "segment", "baseline_runs", "description"}
    )  # fmt: skip

    when: Literal["anomaly"]
    detector: DetectorName = detectors.BUILTIN
    features: Annotated[list[Feature], Field(min_length=1)] = Field(default_factory=lambda: list(DEFAULT_FEATURES))
    direction: detectors.Direction = "slow"
    threshold: Annotated[float, Field(gt=0, le=100)] = 4.0
    contamination: Annotated[float, Field(gt=0, le=0.5)] = 0.01
    min_history: Annotated[int, Field(ge=3, le=500)] = 20
    history: Annotated[int, Field(ge=3, le=500)] = 100
    segment_by: list[Segment] = Field(default_factory=list)
    calendar: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    timezone: TimezoneName | None = None
    tasks: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    # Informational only, kept so older rule files load: where a run's volume is read is the source's
    # `volume:` in sentinel.yaml (adapters cannot see rules).
    volume_from: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    refit_every: Annotated[int, Field(ge=1, le=10_000)] = 20
    refit_interval: Duration = timedelta(days=7)

    @model_validator(mode="after")
    def _consistent(self) -> AnomalyRule:
        pyod = self.detector != detectors.BUILTIN
        if pyod and "threshold" in self.model_fields_set:
            raise ValueError(
                f"anomaly: 'threshold' is the z-score of detector mad; detector {self.detector!r} is tuned "
                "with 'contamination' (the expected share of unusual runs)"
            )
        if not pyod and "contamination" in self.model_fields_set:
            raise ValueError("anomaly: 'contamination' applies to PyOD detectors; detector mad uses 'threshold'")
        if self.min_history > self.history:
            raise ValueError(
                f"anomaly: min_history ({self.min_history}) is larger than history ({self.history}); "
                "the rule could never judge"
            )
        if len(set(self.features)) != len(self.features):
            raise ValueError("anomaly: 'features' lists a feature twice")
        if self.tasks is not None and not set(self.features) & set(TaskFeature):
            raise ValueError(f"anomaly: with 'tasks', 'features' must include one of {', '.join(TaskFeature)}")
        return self


def time_independent(rule: AnomalyRule) -> bool:
    """mad judges from the history alone; a PyOD verdict also changes when a background fit completes."""
    return rule.detector == detectors.BUILTIN


def evaluate(rule: AnomalyRule, scope: Scope) -> Evaluation:
    # Only whether PyOD is installed is asked here, on the event loop: importing a model takes seconds,
    # so that happens in the fit thread (an unknown model name fails there, is logged, and `sentinel
    # check` reports it).
    if rule.detector != detectors.BUILTIN and not detectors.pyod_available():
        if rule.alert not in _WARNED:  # once per rule, not once per tick
            _WARNED.add(rule.alert)
            logger.error(
                "rule {}: detector {!r} needs `{}`; it judges nothing", rule.alert, rule.detector, detectors.PYOD_HINT
            )
        return Evaluation([])
    store = store_for(scope.history)
    try:
        cal, tz = _calendar(rule, scope)
    except KeyError:
        return Evaluation([])
    findings: list[Finding] = []
    for ph in scope.pipelines:
        pb = store.of(ph, tasks=rule.tasks is not None)
        if pb.latest is None:
            continue
        findings += _judge_pipeline(rule, ph, pb, store, scope, cal, tz)
    return Evaluation(findings)


def _calendar(rule: AnomalyRule, scope: Scope) -> tuple[Calendar, ZoneInfo]:
    rule_tz = ZoneInfo(rule.timezone) if rule.timezone else None
    name = rule.calendar or scope.calendar
    if name is None and "trading_day" in rule.segment_by:
        name = "weekdays"  # trading days without a calendar: Monday to Friday
    cal = lookup(scope.extras, name, rule_tz)
    return cal, rule_tz or cal.tz  # type: ignore[return-value]


def _judge_pipeline(
    rule: AnomalyRule,
    ph: PipelineHistory,
    pb: PipelineBaselines,
    store: BaselineStore,
    scope: Scope,
    cal: Calendar,
    tz: ZoneInfo,
) -> list[Finding]:
    run = pb.latest
    assert run is not None
    if rule.detector == detectors.BUILTIN:
        return _judge_run(rule, ph, pb, store, scope, cal, tz, run)
    # PyOD rules are judged every tick (a background fit may have finished since the last one), yet
    # scored again only when the pipeline changed or some fit completed.
    key = id(rule)
    stamp = (ph.version, store.models.completed)
    hit = pb.memo.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]  # type: ignore[no-any-return]
    findings = _judge_run(rule, ph, pb, store, scope, cal, tz, run)
    if len(pb.memo) >= _MAX_MEMO:
        pb.memo.clear()  # rules reloaded many times: old rule ids are never asked again
    pb.memo[key] = (stamp, findings)
    return findings


def _judge_run(
    rule: AnomalyRule,
    ph: PipelineHistory,
    pb: PipelineBaselines,
    store: BaselineStore,
    scope: Scope,
    cal: Calendar,
    tz: ZoneInfo,
    run: RunUpdate,
) -> list[Finding]:
    segment = segment_of(sample_time(run), rule.segment_by, cal, tz)
    if rule.tasks is None:
        x = extract(run, ph.tasks_of(run.run_id), volume_of(run))
        f = _judge(rule, ph, pb.runs, store, scope, cal, tz, run, segment, x, None)
        return [f] if f is not None else []
    out: list[Finding] = []
    for t in sorted(ph.tasks_of(run.run_id), key=lambda t: t.task):
        if t.state is not RunState.SUCCESS or not fnmatch.fnmatchcase(t.task, rule.tasks):
            continue
        baseline = pb.tasks.get(t.task)
        if baseline is None:
            continue
        f = _judge(rule, ph, baseline, store, scope, cal, tz, run, segment, task_features(run, t), t.task)
        if f is not None:
            out.append(f)
    return out


def _judge(
    rule: AnomalyRule,
    ph: PipelineHistory,
    baseline: Baseline,
    store: BaselineStore,
    scope: Scope,
    cal: Calendar,
    tz: ZoneInfo,
    run: RunUpdate,
    segment: tuple[str, ...],
    values: Mapping[str, float],
    task: str | None,
) -> Finding | None:
    if not baseline.matches(run.version):
        return None  # the first run of a new version: nothing to compare it with yet
    wanted = [f for f in rule.features if f in values]
    if not wanted:
        return None
    # The newest `history` comparable runs: a baseline that drifts (more data every month) must follow.
    samples = segment_window(baseline, rule.segment_by, cal, tz, segment).newest(rule.history)
    # A feature is judged only on the comparable runs that have it; all of them must reach min_history.
    columns = {f: samples.column(f) for f in wanted}
    columns = {f: c for f, c in columns.items() if len(c) >= rule.min_history}
    if not columns:
        return None
    stats = {f: detectors.robust_stats(f, c) for f, c in columns.items()}
    x = {f: values[f] for f in columns}
    if rule.detector == detectors.BUILTIN:
        verdict = detectors.mad_verdict(x, stats, rule.threshold, rule.direction)
    else:
        verdict = _pyod_verdict(rule, ph, baseline, store, scope, segment, samples, x, stats, task)
    if verdict is None or not verdict.anomalous:
        return None
    st = verdict.stats
    labels = pipeline_labels(ph, task=task) if task is not None else pipeline_labels(ph)
    return Finding(
        labels,
        {
            "run_id": run.run_id,
            "task": task,
            "feature": verdict.feature,
            "value": verdict.value,
            "value_human": human(verdict.feature, verdict.value),
            "usual_low": st.low,
            "usual_high": st.high,
            "usual_low_human": human(verdict.feature, st.low),
            "usual_high_human": human(verdict.feature, st.high),
            "median": st.center,
            "median_human": human(verdict.feature, st.center),
            "score": round(verdict.score, 3),
            "z": round(verdict.z, 2),
            "threshold": round(verdict.threshold, 3),
            "detector": rule.detector,
            "direction": "slow" if verdict.z > 0 else "fast",
            "segment": ", ".join(segment),
            "baseline_runs": len(columns[verdict.feature]),
            "description": describe(verdict.feature, verdict.value, st.low, st.high),
        },
    )


def _pyod_verdict(
    rule: AnomalyRule,
    ph: PipelineHistory,
    baseline: Baseline,
    store: BaselineStore,
    scope: Scope,
    segment: tuple[str, ...],
    samples: Window,
    x: Mapping[str, float],
    stats: Mapping[str, detectors.Stats],
    task: str | None,
) -> detectors.Verdict | None:
    features = tuple(x)
    rows = samples.rows(features)
    if len(rows) < rule.min_history:
        return None
    key = (rule.detector, rule.contamination, rule.history, features, segment, ph.key, task, baseline.version)
    seqs = samples.seqs()
    newest, now = seqs[-1], scope.now
    name, contamination = rule.detector, rule.contamination

    def fresh(seen: int) -> int:
        # Comparable runs learned after the newest one the model saw.
        return len(seqs) - bisect_right(seqs, seen)

    model = store.models.get(
        key,
        fresh=fresh,
        now=now,
        refit_every=rule.refit_every,
        refit_interval=rule.refit_interval,
        fit=lambda: detectors.fit_model(name, contamination, features, rows, newest, now),
    )
    if model is None:
        return None  # the first fit is still running: no verdict yet
    score, threshold = detectors.model_score(model, [x[f] for f in features])
    top = detectors.explain(x, stats, rule.direction)
    if top is None:
        return None  # unusual only in the direction this rule does not watch
    f, z = top
    return detectors.Verdict(score > threshold, f, x[f], z, score, threshold, stats[f])


MODEL = AnomalyRule
