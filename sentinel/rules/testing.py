"""`sentinel test`: rule unit tests — what `promtool test rules` is to PromQL, for pipeline rules.

Each test replays a compact timeline of runs, tasks and source health through the real History and
RuleEngine under a frozen clock, ticking every `interval` and at every fact change so `for:` and
`keep_firing_for` behave as in the daemon, and compares the firing alerts at each `evaluate` instant.
"""

from __future__ import annotations

import bisect
import glob as globlib
import itertools
import re
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from sentinel.alerting.alert import Alert
from sentinel.calendars import CalendarConfig, Calendars
from sentinel.clock import FrozenClock
from sentinel.config import resolve_rule_files
from sentinel.model import (
    ComponentHealth,
    ImportErrorInfo,
    PipelineInfo,
    PollResult,
    RunState,
    RunUpdate,
    SourceHealth,
    TaskUpdate,
)
from sentinel.observe.history import History
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import LoadedRules, load_rules
from sentinel.rules.testing_format import (
    Expectation,
    HealthSpec,
    PipelineSpec,
    RuleTest,
    RuleTestFile,
    RunSpec,
    TaskSpec,
)
from sentinel.yamlfile import ConfigError, Document, Path_, Problem, dotted, load, validate

DEFAULT_PATTERN = "rules/tests/*.yaml"
MAX_TICKS = 200_000  # a year at 1m ticks would take minutes; a typo in `interval` should not hang CI


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One test's result: `mismatches` are readable diff blocks, `error` a test that could not run."""

    name: str
    mismatches: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.error is None


@dataclass
class FileReport:
    file: str
    problems: list[Problem] = field(default_factory=list)  # the file (or a rule file) could not be used
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems and all(o.passed for o in self.outcomes)


# -- loading ---------------------------------------------------------------------------------------
def load_test_file(path: Path) -> tuple[Document, RuleTestFile, LoadedRules]:

    doc = load(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "a rule test file must be a mapping with rule_files and tests")])
    spec = validate(doc, RuleTestFile)
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, t in enumerate(spec.tests):
        if t.name in seen:
            problems.append(doc.problem(("tests", i, "name"), f"tests[{i}].name: {t.name!r} is used by another test"))
        seen.add(t.name)
    paths, missing = resolve_rule_files(spec.rule_files, path.parent)
    problems += [doc.problem(("rule_files", i), f"rule_files: {p!r} matches no file") for i, p in missing]
    if problems:
        raise ConfigError(problems)
    return doc, spec, load_rules(paths)


def discover(args: Sequence[str]) -> list[Path]:
    """Files named on the command line; a directory means its *.yaml; nothing means rules/tests/*.yaml."""
    out: list[Path] = []
    for arg in args or [DEFAULT_PATTERN]:
        p = Path(arg)
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        elif any(c in arg for c in "*?["):
            found = sorted(Path(x) for x in globlib.glob(arg))
        else:
            found = [p]  # a missing file is reported by the loader, with its name
        out += [f for f in found if f not in out]
    return out


# -- the timeline ----------------------------------------------------------------------------------
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
    if (last - test.start) / test.interval > MAX_TICKS:
        raise ConfigError([doc.problem((*where, "interval"), f"more than {MAX_TICKS} ticks: use a larger interval")])
    ticks = {t for t, _ in instants}
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


# -- running ---------------------------------------------------------------------------------------
def run_test(
    test: RuleTest,
    rules: LoadedRules,
    calendars: Mapping[str, CalendarConfig],
    doc: Document,
    index: int,
) -> Outcome:
    began = time.perf_counter()
    outcome = Outcome(test.name)
    try:
        scenario = _build(test, doc, ("tests", index))
    except ConfigError as exc:
        outcome.error = "\n".join(str(p) for p in exc.problems)
        return outcome
    except ValueError as exc:  # a time out of range, found while placing it on the timeline
        outcome.error = str(doc.problem(("tests", index), f"tests[{index}]: {exc}"))
        return outcome
    try:
        outcome.mismatches = _replay(test, rules, calendars, scenario)
    except Exception as exc:  # a condition that crashes on this history is the finding, not our crash
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        outcome.error = f"evaluation raised {type(exc).__name__}: {exc} (at {tb.filename}:{tb.lineno} in {tb.name})"
    outcome.seconds = time.perf_counter() - began
    return outcome


def _replay(test: RuleTest, rules: LoadedRules, calendars: Mapping[str, CalendarConfig], sc: _Scenario) -> list[str]:
    engine = RuleEngine(rules, {name: s.labels for name, s in test.sources.items()})
    engine.extras["calendars"] = Calendars(calendars)
    history = History()
    clock = FrozenClock(test.start)
    sources = sorted(
        set(test.sources)
        | set(sc.infos)
        | set(sc.health)
        | {f.source for f in sc.facts}
        | {e[0] for e in sc.import_errors}
    )
    pending: dict[str, list[RunUpdate | TaskUpdate]] = {s: [] for s in sources}
    fact_times = [f.at for f in sc.facts]
    next_fact = 0
    expected = iter(sc.instants)
    upcoming = next(expected, None)
    mismatches: list[str] = []
    for tick in sc.ticks:
        clock.set(tick)
        now = clock.now()
        upto = bisect.bisect_right(fact_times, tick, lo=next_fact)
        for f in sc.facts[next_fact:upto]:
            pending[f.source].append(f.item)
        next_fact = upto
        for source in sources:
            health = _health_at(source, sc.health.get(source, []), now, test.start)
            items = pending[source]
            history.apply(
                PollResult(
                    source=source,
                    health=health,
                    runs=tuple(i for i in items if isinstance(i, RunUpdate)),
                    tasks=tuple(i for i in items if isinstance(i, TaskUpdate)),
                    pipelines=sc.infos.get(source, ()),
                    import_errors=tuple(
                        info
                        for s, a, b, info in sc.import_errors
                        if s == source and a <= now and (b is None or now < b)
                    ),
                )
            )
            if health.reachable:
                items.clear()  # an unreachable source's facts arrive with its first good poll
        alerts = engine.evaluate(history, now)
        while upcoming is not None and upcoming[0] == tick:
            diff = compare(upcoming[1], [a for a in alerts if a.ends_at is None])
            if diff:
                mismatches.append(_heading(upcoming[1], upcoming[0], test.start) + "\n" + "\n".join(diff))
            upcoming = next(expected, None)
    return mismatches


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


# -- comparing -------------------------------------------------------------------------------------
def compare(exp: Expectation, firing: Sequence[Alert]) -> list[str]:
    """Readable lines for every difference between the expected and the firing alerts; [] if none."""
    actual = {frozenset(a.labels): a for a in firing}
    wanted = [(frozenset(e.labels.items()), e) for e in exp.alerts]
    lines: list[str] = []
    keys = {k for k, _ in wanted}
    for key, e in wanted:
        a = actual.get(key)
        if a is None:
            lines.append(f"  missing:    {fmt_labels(e.labels)}")
            near = _closest(e.labels, [x for k, x in actual.items() if k not in keys])
            if near is not None:
                lines.append(f"              closest firing differs in {_label_diff(e.labels, near.label_map)}")
            continue
        for name, value in e.annotations.items():
            got = a.annotation_map.get(name)
            if got != value:
                lines.append(f"  annotation {name} of {fmt_labels(e.labels)}:")
                lines.append(f"      expected: {value!r}")
                lines.append(f"      got:      {got!r}" if got is not None else "      got:      (not set)")
    if exp.match == "exact":
        lines += [f"  unexpected: {fmt_labels(a.label_map)}" for k, a in sorted(actual.items()) if k not in keys]
    return lines


def _closest(labels: Mapping[str, str], candidates: Iterable[Alert]) -> Alert | None:
    same = [a for a in candidates if a.name == labels["alertname"]]
    if not same:
        return None
    return max(same, key=lambda a: len(set(a.labels) & set(labels.items())))


def _label_diff(expected: Mapping[str, str], actual: Mapping[str, str]) -> str:
    parts = [f'{k}="{v}" (not expected)' for k, v in sorted(actual.items()) if k not in expected]
    parts += [f'{k}="{v}" (absent)' for k, v in sorted(expected.items()) if k not in actual]
    parts += [
        f'{k}="{actual[k]}" (expected "{v}")' for k, v in sorted(expected.items()) if k in actual and actual[k] != v
    ]
    return ", ".join(parts)


def fmt_labels(labels: Mapping[str, str]) -> str:
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "alertname")
    return f"{labels.get('alertname', '')}{{{rest}}}"


def _heading(exp: Expectation, at: datetime, start: datetime) -> str:
    local = at.astimezone(start.tzinfo).isoformat()
    return f"at {exp.at.text} ({local}), match {exp.match}:"


# -- files and reports -----------------------------------------------------------------------------
def run_file(path: Path, select: re.Pattern[str] | None = None) -> FileReport:
    began = time.perf_counter()
    report = FileReport(str(path))
    try:
        doc, spec, rules = load_test_file(path)
    except ConfigError as exc:
        report.problems = exc.problems
        return report
    except Exception as exc:  # a rule file that breaks a loader: `sentinel check` says where
        msg = f"cannot load ({type(exc).__name__}: {exc}); `sentinel check` locates problems in rule files"
        report.problems = [Problem(str(path), 1, 1, msg)]
        return report
    for i, test in enumerate(spec.tests):
        if select is None or select.search(test.name):
            report.outcomes.append(run_test(test, rules, spec.calendars, doc, i))
    report.seconds = time.perf_counter() - began
    return report


def format_report(reports: Sequence[FileReport]) -> str:
    lines: list[str] = []
    for r in reports:
        lines += [str(p) for p in r.problems]
        for o in r.outcomes:
            if o.passed:
                lines.append(f"ok    {r.file}: {o.name} ({o.seconds:.2f}s)")
                continue
            lines.append(f"FAIL  {r.file}: {o.name}")
            if o.error:
                lines += [f"  {x}" for x in o.error.splitlines()]
            for m in o.mismatches:
                lines += [f"  {x}" for x in m.splitlines()]
    tests = sum(len(r.outcomes) for r in reports)
    failed = sum(1 for r in reports for o in r.outcomes if not o.passed)
    broken = sum(1 for r in reports if r.problems)
    summary = f"{tests} test(s), {failed} failed"
    if broken:
        summary += f", {broken} file(s) with errors"
    lines.append(summary)
    return "\n".join(lines)


def junit_xml(reports: Sequence[FileReport]) -> str:
    """JUnit XML as CI systems read it: a suite per file, a case per test (and one for file errors)."""
    root = ET.Element("testsuites", name="sentinel test")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for r in reports:
        failures = sum(1 for o in r.outcomes if o.mismatches and o.error is None)
        errors = sum(1 for o in r.outcomes if o.error is not None) + (1 if r.problems else 0)
        tests = len(r.outcomes) + (1 if r.problems else 0)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=r.file,
            tests=str(tests),
            failures=str(failures),
            errors=str(errors),
            time=f"{r.seconds:.3f}",
        )
        if r.problems:
            case = ET.SubElement(suite, "testcase", classname=r.file, name="(load)", time="0")
            err = ET.SubElement(case, "error", message=f"{len(r.problems)} problem(s) in the test file")
            err.text = "\n".join(str(p) for p in r.problems)
        for o in r.outcomes:
            case = ET.SubElement(suite, "testcase", classname=r.file, name=o.name, time=f"{o.seconds:.3f}")
            if o.error is not None:
                ET.SubElement(case, "error", message=o.error.splitlines()[0]).text = o.error
            elif o.mismatches:
                msg = f"{len(o.mismatches)} evaluation instant(s) differ"
                ET.SubElement(case, "failure", message=msg).text = "\n\n".join(o.mismatches)
        for k, v in (("tests", tests), ("failures", failures), ("errors", errors)):
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def main(files: Sequence[str], junit: str | None = None, run: str | None = None) -> int:
    """The `sentinel test` command. Exit 0 if every selected test passed, 1 otherwise."""
    try:
        select = re.compile(run) if run else None
    except re.error as exc:
        print(f"--run: invalid regular expression {run!r}: {exc}", file=sys.stderr)
        return 2
    paths = discover(files)
    if not paths:
        print(f"no rule test files found ({' '.join(files) or DEFAULT_PATTERN})", file=sys.stderr)
        return 1
    reports = [run_file(p, select) for p in paths]
    text = format_report(reports)
    ok = all(r.passed for r in reports)
    print(text)
    if junit:
        Path(junit).write_text(junit_xml(reports), encoding="utf-8")
    if select is not None and not any(r.outcomes for r in reports) and not any(r.problems for r in reports):
        print(f"no test matched --run {run!r}", file=sys.stderr)
        return 1
    return 0 if ok else 1
