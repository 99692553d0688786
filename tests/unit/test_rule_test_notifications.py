"""`sentinel test` with expected notifications: routing, grouping, timers, send_resolved, the diff, JUnit."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from sentinel.rules.testing import format_report, junit_xml, main, run_file

ROOT = Path(__file__).resolve().parents[2]

RULES = """\
groups:
  - name: g
    rules:
      - alert: PipelineFailed
        when: failed
        severity: critical
      - alert: SlowFail
        when: failed
        severity: warning
"""

ROUTING = """\
route:
  receiver: slack
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
receivers:
  - name: slack
  - name: pager
    send_resolved: false
"""

# Two pipelines fail 20 s apart, one recovers at 40m, the other stays failed.
TEST = """\
  - name: two failures
    start: 2026-11-25T16:00:00-05:00
    pipelines:
      - source: s
        pipeline: a
        runs:
          - {scheduled: 0m, started: +1m, ended: +10m, state: failed}
          - {scheduled: 30m, started: +1m, ended: +10m}
      - source: s
        pipeline: b
        runs:
          - {scheduled: 0m, started: +1m, ended: +10m20s, state: failed}
    evaluate:
      - at: 12m
        match: subset
        alerts: [{labels: {alertname: PipelineFailed, severity: critical, source: s, pipeline: a}}]
    notifications:
{notifications}
"""

EXPECTED = """\
      match: exact
      expect:
        # a fails at 10m: the pager group waits 30s; b (10m20s) joins it before the flush
        - at: 10m30s
          receiver: pager
          group: {alertname: PipelineFailed}
          firing: [{pipeline: a}, {pipeline: b}]
        - at: 10m30s
          receiver: slack
          group: {alertname: SlowFail}
          firing: [{pipeline: a}, {pipeline: b}]
        # a recovers at 40m: the last flush is more than group_interval ago, so slack hears it at once
        - at: 40m
          receiver: slack
          group: {alertname: SlowFail}
          firing: [{pipeline: b}]
          resolved: [{pipeline: a}]
        # the pager (send_resolved: false) hears nothing of a's recovery; b repeats once repeat_interval has
        # passed since its page, at the group's next group_interval tick (from 40m: 1h15m). Slack's repeat
        # counts from its 40m notification, so it is not due before 1h40m.
        - at: 1h15m
          receiver: pager
          group: {alertname: PipelineFailed}
          firing: [{pipeline: b}]
"""


def write(tmp_path: Path, notifications: str, routing: str = ROUTING, extra: str = "") -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    p = tmp_path / "n_test.yaml"
    p.write_text(
        "rule_files: [rules.yaml]\n" + routing + extra + "tests:\n" + TEST.replace("{notifications}", notifications)
    )
    return p


def test_expected_notifications_pass(tmp_path: Path) -> None:
    report = run_file(write(tmp_path, EXPECTED))
    assert report.passed, format_report([report])


def test_a_wrong_instant_is_a_diff_naming_the_closest_notification(tmp_path: Path) -> None:
    report = run_file(write(tmp_path, EXPECTED.replace("at: 40m\n", "at: 40m30s\n")))
    text = format_report([report])
    assert not report.passed
    assert "notifications, match exact:" in text
    assert 'missing:    at 40m30s (2026-11-25T16:40:30-05:00) to slack group {alertname="SlowFail"}' in text
    assert "closest sent: at 40m (2026-11-25T16:40:00-05:00) to slack" in text
    assert 'unexpected: at 40m (2026-11-25T16:40:00-05:00) to slack group {alertname="SlowFail"}' in text


def test_subset_ignores_other_notifications_but_exact_does_not(tmp_path: Path) -> None:
    one = """\
      match: subset
      expect:
        - {at: 10m30s, receiver: pager, group: {alertname: PipelineFailed}, firing: [PipelineFailed, PipelineFailed]}
"""
    assert run_file(write(tmp_path, one)).passed
    report = run_file(write(tmp_path, one.replace("subset", "exact")))
    assert not report.passed
    # the replay runs to the last instant named (12m): slack's 10m30s page is the one not listed
    text = format_report([report])
    assert text.count("unexpected:") == 1 and 'to slack group {alertname="SlowFail"}' in text


def test_a_notification_lists_its_alerts_exactly(tmp_path: Path) -> None:
    # Only a's alert expected in the first page: b is in it too, so it does not match.
    one = """\
      match: subset
      expect:
        - {at: 10m30s, receiver: pager, firing: [{pipeline: a}]}
"""
    report = run_file(write(tmp_path, one))
    assert not report.passed
    assert "missing:    at 10m30s" in format_report([report])


def test_routing_from_a_sentinel_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text("sources: [{name: s, kind: airflow, url: 'http://x', password: '${NOT_SET_ANYWHERE}'}]\n" + ROUTING)
    report = run_file(write(tmp_path, EXPECTED, routing="config: sentinel.yaml\n"))
    assert report.passed, format_report([report])


def test_notifications_without_routing_is_a_file_error(tmp_path: Path) -> None:
    report = run_file(write(tmp_path, EXPECTED, routing=""))
    text = format_report([report])
    assert "n_test.yaml:" in text and "need `config: sentinel.yaml` or `route:` and `receivers:`" in text


def test_an_unknown_receiver_in_the_route_is_a_file_error(tmp_path: Path) -> None:
    report = run_file(write(tmp_path, EXPECTED, routing=ROUTING.replace("receiver: pager", "receiver: nobody")))
    assert any("'nobody' is not under receivers" in str(p) for p in report.problems)


def test_junit_reports_a_notification_mismatch_as_failure(tmp_path: Path) -> None:
    report = run_file(write(tmp_path, EXPECTED.replace("at: 1h15m", "at: 1h16m")))
    root = ET.fromstring(junit_xml([report]).split("\n", 1)[1])
    failure = root.find("./testsuite/testcase/failure")
    assert failure is not None and "notifications, match exact" in (failure.text or "")


def test_shipped_example_passes() -> None:
    assert main([str(ROOT / "rules/tests/notifications_test.yaml")]) == 0


def test_inhibit_rules_from_the_test_file_mute_the_target(tmp_path: Path) -> None:
    inhibit = """\
inhibit_rules:
  - source_matchers: ['alertname="PipelineFailed"']
    target_matchers: ['alertname="SlowFail"']
    equal: [pipeline]
"""
    only_pager = """\
      match: exact
      expect:
        - {at: 10m30s, receiver: pager, group: {alertname: PipelineFailed}, firing: [{pipeline: a}, {pipeline: b}]}
        - {at: 1h15m, receiver: pager, group: {alertname: PipelineFailed}, firing: [{pipeline: b}]}
"""
    report = run_file(write(tmp_path, only_pager, extra=inhibit))
    assert report.passed, format_report([report])
