"""`sentinel test`'s timeline: a test's compact runs, tasks and health as the facts a poller would see."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sentinel.model import (
    ComponentHealth,
    ImportErrorInfo,
    PipelineInfo,
    RunState,
    RunUpdate,
    SourceHealth,
    TaskUpdate,
)
from sentinel.rules.testing_format import Expectation, HealthSpec, PipelineSpec, RuleTest, RunSpec, TaskSpec
from sentinel.yamlfile import ConfigError, Document, Path_, Problem, dotted

MAX_TICKS = 200_000  # a year at 1m ticks would take minutes; a typo in `interval` should not hang CI


@dataclass(frozen=True)
class _Fact:
    at: datetime
    source: str
    item: RunUpdate | TaskUpdate


@dataclass
class _Scenario:
    facts: list[_Fact]
    health: dict[str, list[tuple[datetime, HealthSpec]]]
    import_errors: list[tuple[str, datetime, datetime | None, ImportErrorInfo]]
    infos: dict[str, tuple[PipelineInfo, ...]]
    instants: list[tuple[datetime, Expectation]]
    ticks: list[datetime]


def _build(test: RuleTest, doc: Document, where: Path_) -> _Scenario:
    problems: list[Problem] = []
    facts, infos = _pipelines(test, doc, where, problems)
    health: dict[str, list[tuple[datetime, HealthSpec]]] = {}
    for h in test.health:
        health.setdefault(h.source, []).append((h.at.resolve(test.start), h))
    for events in health.values():
        events.sort(key=lambda e: e[0])
    errors = [
        (
            e.source,
            e.from_.resolve(test.start),
            e.until.resolve(test.start) if e.until else None,
            ImportErrorInfo(
                source=e.source, filename=e.filename, message=e.message, timestamp=e.from_.resolve(test.start)
            ),
        )
        for e in test.import_errors
    ]
    instants = _instants(test, doc, where, problems)
    if problems:
        raise ConfigError(problems)
    last = instants[-1][0]
    if test.notifications is not None:
        # Ticks run on to the last expected notification, so its flush happens inside the replay.
        last = max([last, *(n.at.resolve(test.start) for n in test.notifications.expect)])
    if (last - test.start) / test.interval > MAX_TICKS:
        raise ConfigError([doc.problem((*where, "interval"), f"more than {MAX_TICKS} ticks: use a larger interval")])
    ticks = {t for t, _ in instants} | {last}
    t = test.start
    while t <= last:
        ticks.add(t)
        t += test.interval
    # Every fact change is a tick too, so a `for:` starts counting exactly when the condition does.
    changes = [f.at for f in facts] + [a for evs in health.values() for a, _ in evs]
    changes += [x for _, a, b, _ in errors for x in (a, b) if x is not None]
    ticks.update(c for c in changes if test.start <= c <= last)
    facts.sort(key=lambda f: f.at)
    return _Scenario(facts, health, errors, infos, instants, sorted(ticks))


def _pipelines(
    test: RuleTest, doc: Document, where: Path_, problems: list[Problem]
) -> tuple[list[_Fact], dict[str, tuple[PipelineInfo, ...]]]:
    facts: list[_Fact] = []
    infos: dict[str, list[PipelineInfo]] = {}
    seen: set[tuple[str, str]] = set()
    for pi, p in enumerate(test.pipelines):
        at = (*where, "pipelines", pi)
        if (p.source, p.pipeline) in seen:
            problems.append(doc.problem(at, f"{dotted(at)}: {p.source}/{p.pipeline} is listed twice in this test"))
        seen.add((p.source, p.pipeline))
        infos.setdefault(p.source, []).append(_info(p, test.start))
        used_ids: set[str] = set()
        for ri, run in enumerate(p.runs):
            rp = (*at, "runs", ri)
            run_id = run.id or f"run-{ri + 1}"
            if run_id in used_ids:
                problems.append(doc.problem(rp, f"{dotted(rp)}: run id {run_id!r} is used twice for {p.pipeline}"))
            used_ids.add(run_id)
            try:
                facts += _run_facts(p, run, run_id, test.start)
            except ValueError as exc:
                problems.append(doc.problem(rp, f"{dotted(rp)}: {exc}"))
    return facts, {s: tuple(v) for s, v in infos.items()}


def _instants(
    test: RuleTest, doc: Document, where: Path_, problems: list[Problem]
) -> list[tuple[datetime, Expectation]]:
    instants: list[tuple[datetime, Expectation]] = []
    for ei, exp in enumerate(test.evaluate):
        ep = (*where, "evaluate", ei, "at")
        t = exp.at.resolve(test.start)
        if t < test.start:
            problems.append(doc.problem(ep, f"{dotted(ep)}: {exp.at.text!r} is before the start"))
        elif instants and t < instants[-1][0]:
            problems.append(doc.problem(ep, f"{dotted(ep)}: evaluate instants must be in time order"))
        instants.append((t, exp))
    return instants


def _info(p: PipelineSpec, start: datetime) -> PipelineInfo:
    return PipelineInfo(
        source=p.source,
        pipeline=p.pipeline,
        paused=p.paused,
        tags=tuple(p.tags),
        schedule=p.schedule,
        next_run=p.next_run.resolve(start) if p.next_run else None,
        upstreams=tuple(p.upstreams),
        url=p.url,
    )


def _run_facts(p: PipelineSpec, run: RunSpec, run_id: str, start: datetime) -> list[_Fact]:
    """Every state the run goes through, as the snapshots an adapter would report at those times."""
    scheduled = run.scheduled.resolve(start) if run.scheduled else None

    def at(a: Any) -> datetime | None:
        return a.resolve(start, scheduled) if a is not None else None

    queued, started, ended = at(run.queued), at(run.started), at(run.ended)
    given = [(n, t) for n, t in (("scheduled", scheduled), ("queued", queued), ("started", started), ("ended", ended))]
    known = [(n, t) for n, t in given if t is not None]
    for (n1, t1), (n2, t2) in itertools.pairwise(known):
        if t2 < t1:
            raise ValueError(f"{n2} ({t2.isoformat()}) is before {n1} ({t1.isoformat()})")
    final = run.state or (
        RunState.SUCCESS
        if ended
        else RunState.RUNNING
        if started
        else RunState.QUEUED
        if queued
        else RunState.SCHEDULED
    )
    if final.terminal and ended is None:
        ended = known[-1][1]  # e.g. a skipped run that never started: final as soon as it exists
    steps: list[tuple[datetime, RunState]] = []
    for t, state in ((scheduled, RunState.SCHEDULED), (queued, RunState.QUEUED), (started, RunState.RUNNING)):
        if t is not None:
            steps.append((t, state))
    if ended is not None:
        steps.append((ended, final))
    elif final != steps[-1][1]:
        steps[-1] = (steps[-1][0], final)  # a run still `late`/`retrying`/... stays so from its last change
    period = at(run.for_) or scheduled
    out: list[_Fact] = []
    for i, (t, state) in enumerate(steps):
        if i + 1 < len(steps) and steps[i + 1][0] == t:
            continue  # two changes at once: the adapter only ever sees the later one
        snap = RunUpdate(
            source=p.source,
            pipeline=p.pipeline,
            run_id=run_id,
            state=state,
            scheduled_for=period,
            queued_at=queued if queued is not None and queued <= t else None,
            started_at=started if started is not None and started <= t else None,
            ended_at=ended if state.terminal else None,
            updated_at=t,
            run_type=run.run_type,
            version=run.version,
            message=run.message if state.terminal else None,
            url=run.url,
            volume=run.volume if state is RunState.SUCCESS else None,
        )
        out.append(_Fact(t, p.source, snap))
    out += _task_facts(p, run, run_id, start, scheduled, steps, ended)
    return out


def _task_facts(
    p: PipelineSpec,
    run: RunSpec,
    run_id: str,
    start: datetime,
    scheduled: datetime | None,
    steps: list[tuple[datetime, RunState]],
    run_ended: datetime | None,
) -> list[_Fact]:
    out: list[_Fact] = []
    # Without their own times, tasks show up with their state when the run ends (or, for a run that
    # has not ended, when it last changed): that is what a poll after the run would read.
    appear = run_ended or steps[-1][0]
    for name, ts in run.tasks.items():
        t_start = ts.started.resolve(start, scheduled) if ts.started else None
        t_end = ts.ended.resolve(start, scheduled) if ts.ended else None
        if t_start is not None and t_end is not None and t_end < t_start:
            raise ValueError(f"task {name}: ended is before started")
        final_at = t_end or (appear if t_start is None or appear >= t_start else t_start)

        if t_start is not None and t_start < final_at and ts.state.terminal:
            out.append(_task_fact(p, run_id, name, ts, RunState.RUNNING, t_start, t_start, None))
        out.append(
            _task_fact(p, run_id, name, ts, ts.state, final_at, t_start, final_at if ts.state.terminal else None)
        )
    return out


def _task_fact(
    p: PipelineSpec,
    run_id: str,
    name: str,
    spec: TaskSpec,
    state: RunState,
    at: datetime,
    started: datetime | None,
    ended: datetime | None,
) -> _Fact:
    return _Fact(
        at,
        p.source,
        TaskUpdate(
            source=p.source,
            pipeline=p.pipeline,
            run_id=run_id,
            task=name,
            state=state,
            try_number=spec.try_number,
            max_tries=spec.max_tries,
            started_at=started if started is not None and started <= at else None,
            ended_at=ended,
            updated_at=at,
            message=spec.message if state.terminal else None,
        ),
    )


def _health_at(source: str, events: list[tuple[datetime, HealthSpec]], now: datetime, start: datetime) -> SourceHealth:
    current: HealthSpec | None = None
    for at, h in events:
        if at > now:
            break
        current = h
    if current is None:
        return SourceHealth(source=source, reachable=True, observed_at=now)
    components = tuple(
        ComponentHealth(
            name=name,
            healthy=c.healthy,
            last_heartbeat=c.last_heartbeat.resolve(start) if c.last_heartbeat else None,
            detail=c.detail,
        )
        for name, c in current.components.items()
    )
    return SourceHealth(
        source=source,
        reachable=current.reachable,
        observed_at=now,
        error=current.error if current.error is not None or current.reachable else "unreachable",
        version=current.version,
        components=components,
    )
