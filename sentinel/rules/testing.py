"""`sentinel test`: rule unit tests — what `promtool test rules` is to PromQL, for pipeline rules.

Each test replays a compact timeline of runs, tasks and source health through the real History and
RuleEngine under a frozen clock, ticking every `interval` and at every fact change so `for:` and
`keep_firing_for` behave as in the daemon, and compares the firing alerts at each `evaluate` instant.
"""

from __future__ import annotations

import asyncio
import bisect
import glob as globlib
import re
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sentinel.alerting.alert import Alert
from sentinel.calendars import CalendarConfig, Calendars
from sentinel.clock import FrozenClock
from sentinel.config import resolve_rule_files
from sentinel.model import PollResult, RunUpdate, TaskUpdate
from sentinel.observe.history import History
from sentinel.replay.notifier import ReplayNotifier
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import LoadedRules, load_rules
from sentinel.rules.testing_format import Expectation, RuleTest, RuleTestFile
from sentinel.rules.testing_notify import Routing, compare_notifications, routing
from sentinel.rules.testing_report import FileReport, Outcome, format_report, junit_xml
from sentinel.rules.testing_timeline import _build, _health_at, _run_facts, _Scenario
from sentinel.yamlfile import ConfigError, Document, Problem, load, validate

__all__ = ["FileReport", "Outcome", "_run_facts", "compare", "format_report", "junit_xml", "main", "run_file"]

DEFAULT_PATTERN = "rules/tests/*.yaml"
_JUST_BEFORE = timedelta(microseconds=1)


# -- loading ---------------------------------------------------------------------------------------
def load_test_file(path: Path) -> tuple[Document, RuleTestFile, LoadedRules, Routing | None]:
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
    return doc, spec, load_rules(paths), routing(spec, doc, path)


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


# -- running ---------------------------------------------------------------------------------------
def run_test(
    test: RuleTest,
    rules: LoadedRules,
    calendars: Mapping[str, CalendarConfig],
    doc: Document,
    index: int,
    route: Routing | None = None,
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
        outcome.mismatches = asyncio.run(_replay(test, rules, calendars, scenario, route))
    except Exception as exc:  # a condition that crashes on this history is the finding, not our crash
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        outcome.error = f"evaluation raised {type(exc).__name__}: {exc} (at {tb.filename}:{tb.lineno} in {tb.name})"
    outcome.seconds = time.perf_counter() - began
    return outcome


async def _replay(
    test: RuleTest,
    rules: LoadedRules,
    calendars: Mapping[str, CalendarConfig],
    sc: _Scenario,
    route: Routing | None,
) -> list[str]:
    engine = RuleEngine(rules, {name: s.labels for name, s in test.sources.items()})
    engine.extras["calendars"] = Calendars(calendars)
    history = History()
    clock = FrozenClock(test.start)
    notifier = None
    if route is not None:
        notifier = ReplayNotifier(
            route.route,
            route.receivers,
            clock,
            inhibit_rules=route.inhibit_rules,
            time_intervals=route.time_intervals,
        )
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
        if notifier is not None:
            await notifier.advance_to(tick - _JUST_BEFORE)  # group flushes between two ticks
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
        if notifier is not None:
            notifier.put(alerts)
            await notifier.advance_to(now)
        while upcoming is not None and upcoming[0] == tick:
            diff = compare(upcoming[1], [a for a in alerts if a.ends_at is None])
            if diff:
                mismatches.append(_heading(upcoming[1], upcoming[0], test.start) + "\n" + "\n".join(diff))
            upcoming = next(expected, None)
    if notifier is not None and test.notifications is not None:
        diff = compare_notifications(test.notifications, notifier.sent, test.start)
        if diff:
            mismatches.append(f"notifications, match {test.notifications.match}:\n" + "\n".join(diff))
    return mismatches


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
        doc, spec, rules, route = load_test_file(path)
    except ConfigError as exc:
        report.problems = exc.problems
        return report
    except Exception as exc:  # a rule file that breaks a loader: `sentinel check` says where
        msg = f"cannot load ({type(exc).__name__}: {exc}); `sentinel check` locates problems in rule files"
        report.problems = [Problem(str(path), 1, 1, msg)]
        return report
    for i, test in enumerate(spec.tests):
        if select is None or select.search(test.name):
            report.outcomes.append(run_test(test, rules, spec.calendars, doc, i, route))
    report.seconds = time.perf_counter() - began
    return report


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
