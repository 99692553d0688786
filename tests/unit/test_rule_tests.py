"""`sentinel test`: the test-file format, the replayed timeline, the diff, JUnit XML and the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from sentinel.model import RunState, RunUpdate, TaskUpdate
from sentinel.rules.testing import main, run_file
from sentinel.rules.testing_format import parse_at

ROOT = Path(__file__).resolve().parents[2]

RULES = """\
groups:
  - name: g
    rules:
      - alert: PipelineFailed
        when: failed
        severity: critical
        annotations:
          summary: "{{ pipeline }} run {{ run_id }} {{ state }}"
      - alert: FailedFor5m
        when: failed
        for: 5m
      - alert: TaskFailed
        when: failed
        level: task
  - name: platform
    rules:
      - alert: SourceDown
        when: source_down
        for: 1m
"""


def write(tmp_path: Path, body: str, rules: str = RULES) -> Path:
    (tmp_path / "rules.yaml").write_text(rules)
    p = tmp_path / "t_test.yaml"
    p.write_text("rule_files: [rules.yaml]\ntests:\n" + body)
    return p


def outcome(tmp_path: Path, body: str) -> tuple[bool, str]:
    from sentinel.rules.testing import format_report

    report = run_file(write(tmp_path, body))
    return report.passed, format_report([report])


FAILED_RUN = """\
  - name: t
    start: 2026-11-25T16:00:00-05:00
    pipelines:
      - source: af
        pipeline: p
        runs:
          - {scheduled: 0m, started: +1m, ended: +10m, state: failed, tasks: {load: failed, extract: success}}
"""


def test_shipped_rule_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(ROOT / "rules" / "tests")]) == 0, capsys.readouterr().out


def test_a_broken_expectation_fails_the_shipped_tests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    for f in (ROOT / "rules").glob("*.yaml"):
        shutil.copy(f, tmp_path / "rules")
    text = (ROOT / "rules" / "tests" / "pipelines_test.yaml").read_text()
    broken = text.replace("component: api, env: prod}", "component: api, env: staging}", 1)
    assert broken != text
    (tmp_path / "rules" / "tests" / "pipelines_test.yaml").write_text(broken)
    assert main([str(tmp_path / "rules" / "tests")]) == 1
    out = capsys.readouterr().out
    assert 'missing:    SourceDown{component="api", env="staging"' in out
    assert 'unexpected: SourceDown{component="api", env="prod"' in out
    assert 'closest firing differs in env="prod" (expected "staging")' in out
    assert "FAIL" in out and "1 failed" in out


def test_failure_fires_at_once_and_for_holds_exactly(tmp_path: Path) -> None:
    body = (
        FAILED_RUN
        + """\
    evaluate:
      - {at: 9m, alerts: []}             # still running
      - at: 10m                          # failed at 10m: fires at once
        alerts:
          - labels: {alertname: PipelineFailed, severity: critical, source: af, pipeline: p}
            annotations: {summary: p run run-1 failed}
          - labels: {alertname: TaskFailed, severity: warning, source: af, pipeline: p, task: load}
      - at: 14m59s                       # FailedFor5m still pending
        match: subset
        alerts: [{labels: {alertname: PipelineFailed, severity: critical, source: af, pipeline: p}}]
      - at: 15m
        match: subset
        alerts: [{labels: {alertname: FailedFor5m, severity: warning, source: af, pipeline: p}}]
"""
    )
    ok, text = outcome(tmp_path, body)
    assert ok, text


def test_exact_reports_unexpected_and_annotations(tmp_path: Path) -> None:
    body = (
        FAILED_RUN
        + """\
    evaluate:
      - at: 11m
        alerts:
          - labels: {alertname: PipelineFailed, severity: critical, source: af, pipeline: p}
            annotations: {summary: "p run run-1 succeeded", description: "x"}
"""
    )
    ok, text = outcome(tmp_path, body)
    assert not ok
    assert "at 11m (2026-11-25T16:11:00-05:00), match exact:" in text
    assert "annotation summary of PipelineFailed{" in text
    assert "expected: 'p run run-1 succeeded'" in text and "got:      'p run run-1 failed'" in text
    assert "got:      (not set)" in text  # description
    assert 'unexpected: TaskFailed{pipeline="p", severity="warning", source="af", task="load"}' in text


def test_unreachable_source_delays_facts_and_fires_source_down(tmp_path: Path) -> None:
    body = (
        FAILED_RUN
        + """\
    health:
      - {at: 5m, source: af, reachable: false, error: timeout}
      - {at: 20m, source: af}
    evaluate:
      - {at: 5m, alerts: []}
      - at: 15m                     # the run failed at 11m but nobody could see it
        alerts: [{labels: {alertname: SourceDown, severity: warning, source: af, component: api},
                  annotations: {}}]
      - at: 20m
        match: subset
        alerts: [{labels: {alertname: PipelineFailed, severity: critical, source: af, pipeline: p}}]
"""
    )
    ok, text = outcome(tmp_path, body)
    assert ok, text


def test_recovery_resolves(tmp_path: Path) -> None:
    body = (
        FAILED_RUN
        + """\
          - {scheduled: 30m, started: +1m, ended: +5m, tasks: {load: success}}
    evaluate:
      - at: 34m
        match: subset
        alerts: [{labels: {alertname: PipelineFailed, severity: critical, source: af, pipeline: p}}]
      - {at: 35m, alerts: []}
"""
    )
    ok, text = outcome(tmp_path, body)
    assert ok, text


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("{at: 10m, alerts: []}", "{at: 5x, alerts: []}", ":11:14:", "tests[0].evaluate[0].at: invalid time '5x'"),
        ("{at: 10m, alerts: []}", "{at: +1m, alerts: []}", ":11:14:", "only allowed in runs"),
        ("{at: 10m, alerts: []}", "{at: 20m, alerts: []}", ":12:13:", "evaluate instants must be in time order"),
        ("{at: 10m, alerts: []}", "{at: -1m, alerts: []}", ":11:14:", "is before the start"),
        (
            "ended: +10m",
            "ended: -10m",
            ":9:13:",
            "tests[0].pipelines[0].runs[0]: ended (2026-11-25T15:50:00-05:00) is before",
        ),
        ("state: failed", "state: running", ":9:13:", "state 'running' is not final"),
        ("{alertname: PipelineFailed, ", "{", ":14:21:", "must include alertname"),
        ("match: subset", "match: some", ":16:16:", "match: Input should be 'exact' or 'subset'"),
        ("start: 2026-11-25T16:00:00-05:00", "start: 2026-11-25T16:00:00", ":4:12:", "needs a UTC offset"),
        ("pipeline: p\n", "pipeline: p\n        colour: red\n", ":8:9:", "unknown key 'colour'"),
    ],
)
def test_errors_in_test_files_have_file_line_col(tmp_path: Path, old: str, new: str, where: str, message: str) -> None:
    body = (
        FAILED_RUN
        + """\
    evaluate:
      - {at: 10m, alerts: []}
      - at: 11m
        alerts:
          - labels: {alertname: PipelineFailed, severity: critical, source: af, pipeline: p}
      - at: 12m
        match: subset
        alerts: []
"""
    )
    assert old in body
    path = write(tmp_path, body.replace(old, new, 1))
    report = run_file(path)
    lines = [str(p) for p in report.problems] + [o.error or "" for o in report.outcomes]
    assert any(line.startswith(f"{path}{where}") and message in line for line in lines), lines


def test_missing_rule_file_and_bad_rule_file_are_reported(tmp_path: Path) -> None:
    p = tmp_path / "x_test.yaml"
    p.write_text("rule_files: [nope.yaml]\ntests: []\n")
    assert [str(x) for x in run_file(p).problems] == [f"{p}:1:14: rule_files: 'nope.yaml' matches no file"]
    (tmp_path / "bad.yaml").write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        when: nope\n")
    p.write_text("rule_files: [bad.yaml]\ntests: []\n")
    assert any(str(x).startswith(f"{tmp_path / 'bad.yaml'}:5:15:") for x in run_file(p).problems)


def test_run_states_follow_the_timeline() -> None:
    from sentinel.rules.testing import _run_facts
    from sentinel.rules.testing_format import PipelineSpec, RunSpec

    start = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
    spec = PipelineSpec(source="af", pipeline="p")
    run = RunSpec.model_validate(
        {"scheduled": "0m", "queued": "+30s", "started": "+1m", "ended": "+10m", "state": "failed",
         "tasks": {"load": "failed", "extract": {"state": "success", "started": "+1m", "ended": "+2m"}}}
    )  # fmt: skip
    facts = _run_facts(spec, run, "r1", start)
    runs = [(f.at.minute * 60 + f.at.second, f.item.state) for f in facts if isinstance(f.item, RunUpdate)]
    assert runs == [(0, RunState.SCHEDULED), (30, RunState.QUEUED), (60, RunState.RUNNING), (600, RunState.FAILED)]
    final = next(f.item for f in facts if isinstance(f.item, RunUpdate) and f.item.state == RunState.FAILED)
    assert final.started_at == datetime(2026, 11, 25, 21, 1, tzinfo=UTC) and final.ended_at == final.updated_at
    tasks = [(f.item.task, f.at.minute, f.item.state) for f in facts if isinstance(f.item, TaskUpdate)]
    assert tasks == [("load", 10, RunState.FAILED), ("extract", 1, RunState.RUNNING), ("extract", 2, RunState.SUCCESS)]


def test_offsets() -> None:
    start = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
    sched = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
    assert parse_at("15m").resolve(start) == datetime(2026, 11, 25, 21, 15, tzinfo=UTC)
    assert parse_at("-1d").resolve(start) == datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    assert parse_at("+9m").resolve(start, sched) == datetime(2026, 11, 25, 22, 9, tzinfo=UTC)
    assert parse_at(90).resolve(start) == datetime(2026, 11, 25, 21, 1, 30, tzinfo=UTC)
    assert parse_at("2026-11-26T09:30:00-05:00").resolve(start) == datetime(2026, 11, 26, 14, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="is relative to the run's `scheduled`"):
        parse_at("+1m").resolve(start)


def test_cli_run_filter_and_junit(tmp_path: Path) -> None:
    junit = tmp_path / "out.xml"
    cmd = [sys.executable, "-m", "sentinel", "test", "rules/tests", "--run", "source down", "--junit", str(junit)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok    ") == 1 and "1 test(s), 0 failed" in proc.stdout
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "1" and root.get("failures") == "0"
    (case,) = root.iter("testcase")
    assert case.get("name") == "source down for 2 minutes fires SourceDown after its for 1m"


def test_junit_records_failures_and_no_match_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = FAILED_RUN + "    evaluate:\n      - {at: 11m, alerts: []}\n"
    path = write(tmp_path, body)
    junit = tmp_path / "j.xml"
    assert main([str(path)], junit=str(junit)) == 1
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1"
    failure = next(root.iter("failure"))
    assert "unexpected: PipelineFailed{" in (failure.text or "")
    assert main([str(path)], run="^nothing$") == 1
    assert "no test matched" in capsys.readouterr().err
    assert main([str(path)], run="(") == 2


def test_default_files_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([]) == 1
    assert "no rule test files found" in capsys.readouterr().err
    assert main(["missing_test.yaml"]) == 1
    assert "missing_test.yaml:1:1: cannot read file" in capsys.readouterr().out


def test_mutated_test_files_never_crash(tmp_path: Path) -> None:
    """Bad test files end as file:line:col problems or test errors, never as an exception."""
    import random

    from sentinel.rules.testing import format_report, junit_xml
    from tests.unit.test_check_fuzz import MUTATIONS

    (tmp_path / "rules" / "tests").mkdir(parents=True)
    for f in (ROOT / "rules").glob("*.yaml"):
        shutil.copy(f, tmp_path / "rules")
    base = (ROOT / "rules" / "tests" / "pipelines_test.yaml").read_text()
    target = tmp_path / "rules" / "tests" / "m_test.yaml"
    r = random.Random(7)
    for i in range(40):
        text = base
        for _ in range(r.choice([1, 2])):
            text = r.choice(MUTATIONS)(r, text)
        target.write_text(text, encoding="utf-8")
        report = run_file(target)
        format_report([report])
        junit_xml([report])
        assert all(p.file and p.line >= 1 for p in report.problems), i
        assert not any("evaluation raised" in (o.error or "") for o in report.outcomes), (i, text)
