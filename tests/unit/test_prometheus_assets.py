"""prometheus/ as shipped: the config and rules load in Prometheus 2.x, and the alerts on Sentinel itself and
the recording rules behind the dashboards behave as their promtool unit tests say."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "prometheus"
SELF_ALERTS = {"SentinelDown", "SourceDownForLong", "NotificationsFailing", "ConfigReloadFailed", "BudgetForecastHigh"}


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: apt-get install prometheus (tests/run.sh does)"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rule_files() -> list[Path]:
    return sorted((PROM / "rules").glob("*.yml"))


def test_config_is_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_are_valid() -> None:
    assert rule_files()
    out = promtool("check", "rules", *map(str, rule_files()))
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert tests
    out = promtool("test", "rules", *map(str, tests))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAILED" not in out.stdout


def test_every_self_alert_is_unit_tested_and_has_a_runbook() -> None:
    alerts = {
        r["alert"]: r
        for f in rule_files()
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert set(alerts) >= SELF_ALERTS
    tested = {
        case["alertname"]
        for f in (PROM / "tests").glob("*.yml")
        for t in yaml.safe_load(f.read_text())["tests"]
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts) <= tested, f"alerts without a firing test case: {sorted(set(alerts) - tested)}"
    doc = (ROOT / "docs" / "observability.md").read_text().lower()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning")
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert anchor == name.lower() and f"### {name.lower()}" in doc, f"{name}: runbook section missing"


def test_prometheus_sends_alerts_to_sentinel_and_scrapes_it() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (am,) = cfg["alerting"]["alertmanagers"]
    assert am["api_version"] == "v2"  # Sentinel's intake is POST /api/v2/alerts
    sentinel_job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "sentinel")
    assert sentinel_job["static_configs"][0]["targets"] == am["static_configs"][0]["targets"]
