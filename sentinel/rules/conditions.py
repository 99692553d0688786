"""Condition kinds: pure functions from history to findings. One function per `when:`.

A condition returns the instances that are active now, and says which instances it *settled*: an
instance it could judge and found inactive. Anything it could not judge (a source we cannot reach)
keeps its current state instead of resolving — absence of evidence is not recovery.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sentinel.model import RunState
from sentinel.observe.history import History, PipelineHistory
from sentinel.rules.files import FailedRule, SourceDownRule


@dataclass(frozen=True)
class Finding:
    labels: Mapping[str, str]  # identity labels beyond alertname/severity: source, pipeline, task, component
    variables: Mapping[str, Any] = field(default_factory=dict)  # for annotation templates


@dataclass
class Evaluation:
    findings: list[Finding]
    settled: Callable[[Mapping[str, str]], bool]  # may an absent instance with these labels resolve?


def failed(rule: FailedRule, pipelines: Iterable[PipelineHistory], now: datetime) -> Evaluation:
    findings: list[Finding] = []
    for ph in pipelines:
        if rule.level == "run":
            f = _failed_run(rule, ph)
        else:
            f = None
            findings.extend(_failed_tasks(rule, ph))
        if f is not None:
            findings.append(f)
    return Evaluation(findings, lambda _labels: True)


def _decisive(ph: PipelineHistory) -> list[Any]:
    # Skipped and cancelled runs say nothing about health: a human or an upstream decided them.
    return [r for r in ph.terminal() if r.state in (RunState.SUCCESS, RunState.FAILED, RunState.CRASHED)]


def _failed_run(rule: FailedRule, ph: PipelineHistory) -> Finding | None:
    runs = _decisive(ph)
    if len(runs) < rule.consecutive:
        return None
    tail = runs[-rule.consecutive :]
    if not all(r.state.failure for r in tail):
        return None
    last = tail[-1]
    failed_tasks = sorted(t.task for t in ph.tasks_of(last.run_id) if t.state.failure)
    streak = 0
    for r in reversed(runs):
        if not r.state.failure:
            break
        streak += 1
    return Finding(
        labels={"source": ph.key.source, "pipeline": ph.key.pipeline},
        variables={
            "run_id": last.run_id,
            "state": last.state.value,
            "raw_state": last.raw_state,
            "started_at": last.started_at,
            "ended_at": last.ended_at,
            "scheduled_for": last.scheduled_for,
            "duration": last.duration_seconds,
            "message": last.message,
            "url": last.url,
            "failed_tasks": failed_tasks,
            "consecutive": streak,
            "value": streak,
        },
    )


def _failed_tasks(rule: FailedRule, ph: PipelineHistory) -> list[Finding]:
    runs = _decisive(ph)
    if not runs:
        return []
    # Per task, its outcomes across recent finished runs, newest last.
    outcomes: dict[str, list[Any]] = {}
    for run in runs:
        for t in ph.tasks_of(run.run_id):
            if fnmatch.fnmatchcase(t.task, rule.tasks) and t.state.terminal:
                outcomes.setdefault(t.task, []).append((run, t))
    out = []
    for task, seq in outcomes.items():
        tail = seq[-rule.consecutive :]
        if len(tail) < rule.consecutive or not all(t.state.failure for _, t in tail):
            continue
        run, t = tail[-1]
        out.append(
            Finding(
                labels={"source": ph.key.source, "pipeline": ph.key.pipeline, "task": task},
                variables={
                    "run_id": run.run_id,
                    "state": t.state.value,
                    "raw_state": t.raw_state,
                    "task": task,
                    "started_at": t.started_at,
                    "ended_at": t.ended_at,
                    "duration": t.duration_seconds,
                    "message": t.message,
                    "url": run.url,
                    "try_number": t.try_number,
                    "consecutive": len(tail),
                    "value": len(tail),
                    "failed_tasks": [task],
                },
            )
        )
    return out


def source_down(rule: SourceDownRule, history: History, sources: Iterable[str], now: datetime) -> Evaluation:
    findings: list[Finding] = []
    unreachable: set[str] = set()
    wanted = set(rule.components)
    for source in sources:
        h = history.health.get(source)
        if h is None:
            continue  # not polled yet: we know nothing either way
        if not h.reachable:
            unreachable.add(source)
            if "api" in wanted:
                findings.append(Finding({"source": source, "component": "api"}, {"component": "api", "error": h.error}))
            continue
        for c in h.components:
            family = c.name.split(":", 1)[0]
            if family not in wanted:
                continue
            # Age as of the observation, not of this evaluation: our own poll cadence is not the scheduler's fault.
            stale = c.last_heartbeat is not None and (h.observed_at - c.last_heartbeat) > rule.max_heartbeat_age
            if c.healthy and not stale:
                continue
            findings.append(
                Finding(
                    {"source": source, "component": c.name},
                    {"component": c.name, "error": c.detail, "last_heartbeat": c.last_heartbeat, "version": h.version},
                )
            )

    def settled(labels: Mapping[str, str]) -> bool:
        # While the API is down we cannot see the scheduler's heartbeat: keep those alerts as they are.
        return labels.get("source") not in unreachable or labels.get("component") == "api"

    return Evaluation(findings, settled)
