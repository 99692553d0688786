"""`sentinel test`'s results: outcomes per test and file, the terminal report and JUnit XML."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from sentinel.yamlfile import Problem


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
