"""grafana/ as shipped. No Grafana server runs here, so each dashboard is checked against Grafana 11.6's own
JSON schemas (tests/assets/grafana-schema), every PromQL expression must parse in promtool, every series it
reads must be one Sentinel exports or a recording rule in prometheus/rules, and every variable it uses must
be defined."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "assets" / "grafana-schema"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "grafana" / "provisioning"
GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}
# Series Prometheus itself provides next to Sentinel's.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


@cache
def schema(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    return result


def validate(instance: Any, file: str, definition: str | None, where: str) -> None:
    root = schema(file)
    s = root if definition is None else {"definitions": root["definitions"], "$ref": f"#/definitions/{definition}"}
    errors = sorted(jsonschema.Draft7Validator(s).iter_errors(instance), key=lambda e: list(e.absolute_path))
    # A panel is `oneOf` Panel/RowPanel: name the innermost reason, not "valid under none of the schemas".
    errors = [jsonschema.exceptions.best_match(e.context) if e.context else e for e in errors]
    assert not errors, f"{where}: " + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


def expressions(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and label_values() variable."""
    for p in panels(dash):
        for t in p.get("targets", []):
            yield f"panel {p['id']} {p['title']!r} target {t['refId']}", t["expr"]
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']!r}", a["expr"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"])
            assert m, f"variable {v['name']}: expected label_values(selector, label), got {v['query']!r}"
            yield f"variable {v['name']}", m.group(1)


def substitute(expr: str, variables: set[str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in GRAFANA_VARS:
            return GRAFANA_VARS[name]
        assert name in variables, f"${name} is not a variable of this dashboard (have {sorted(variables)})"
        return "x"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def exported_series() -> set[str]:
    """Sample names a Sentinel daemon's /metrics page can carry, including collectors registered by the
    KPI, SLA and cost modules (they register against the daemon's registry)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
    for family in _daemon_registry().collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def _daemon_registry() -> Any:
    # The full set of collectors only exists inside a Daemon; build one on an empty config, never started.
    import tempfile

    from sentinel.config import load_config
    from sentinel.daemon import Daemon

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sentinel.yaml"
        cfg.write_text("receivers: [{name: r, console: true}]\nroute: {receiver: r}\nstore: {path: ':memory:'}\n")
        return Daemon(load_config(cfg), serve_http=False).metrics.registry


def recorded_series() -> set[str]:
    return {
        r["record"]
        for f in (ROOT / "prometheus" / "rules").glob("*.yml")
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    }


def series_names(expr: str) -> set[str]:
    no_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_strings)
    no_groupings = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", no_ranges)
    no_matchers = re.sub(r"\{[^}]*\}", "", no_groupings)
    words = set(re.findall(r"[A-Za-z_:][\w:]*(?!\s*\()", no_matchers))
    return {w for w in words if w.startswith("sentinel_") or ":" in w or w in PROMETHEUS_SERIES} - PROMQL_WORDS


def test_there_are_five_dashboards() -> None:
    titles = {load(p)["title"] for p in DASHBOARDS}
    assert titles == {
        "Sentinel / Pipeline overview",
        "Sentinel / Pipeline detail",
        "Sentinel / SLA compliance",
        "Sentinel / Cost vs budget",
        "Sentinel / Alert history",
    }
    assert len({load(p)["uid"] for p in DASHBOARDS}) == len(DASHBOARDS)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_matches_grafana_11_schema(path: Path) -> None:
    dash = load(path)
    validate(dash, "dashboard", None, path.name)
    assert 39 <= dash["schemaVersion"] <= 41
    uid = datasource_uid()
    for p in panels(dash):
        where = f"{path.name} panel {p['id']} {p['title']!r}"
        assert (SCHEMAS / f"{p['type']}.jsonschema.json").exists(), f"{where}: no schema for panel type {p['type']}"
        validate(p["options"], p["type"], "Options", f"{where} options")
        custom = p["fieldConfig"]["defaults"].get("custom")
        if "FieldConfig" in schema(p["type"])["definitions"]:
            validate(custom or {}, p["type"], "FieldConfig", f"{where} fieldConfig.defaults.custom")
        else:
            assert custom is None, f"{where}: {p['type']} panels take no fieldConfig.defaults.custom"
        assert p["targets"], f"{where}: no query"
        for t in p["targets"]:
            validate(t, "prometheus", None, f"{where} target {t.get('refId')}")
            assert t["datasource"]["uid"] == uid, f"{where}: datasource is not the provisioned one"
        assert p["datasource"]["uid"] == uid


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_have_unique_ids_and_do_not_overlap(path: Path) -> None:
    dash = load(path)
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], int] = {}
    for p in panels(dash):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"panel {p['id']} is wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"panel {p['id']} overlaps panel {taken[(x, y)]}"
                taken[(x, y)] = p["id"]


def test_every_expression_parses_in_promtool(tmp_path: Path) -> None:
    groups = []
    for path in DASHBOARDS:
        dash = load(path)
        variables = {v["name"] for v in dash["templating"]["list"]}
        rules = []
        for i, (where, expr) in enumerate(expressions(dash)):
            rules.append({"record": f"dashboard_expr_{i}", "expr": substitute(expr, variables)})
            rules[-1]["labels"] = {"where": where}
        groups.append({"name": path.name, "rules": rules})
    rules_file = tmp_path / "dashboards.yml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    exe = shutil.which("promtool")
    assert exe, "promtool missing: apt-get install prometheus (tests/run.sh does)"
    out = subprocess.run([exe, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    count = sum(len(g["rules"]) for g in groups)
    assert f"SUCCESS: {count} rules found" in out.stdout


def test_every_series_read_exists() -> None:
    known = exported_series() | recorded_series() | PROMETHEUS_SERIES
    # the recording rules themselves must read exported series too
    for name, expr in _recording_exprs():
        missing = series_names(expr) - known
        assert not missing, f"recording rule {name} reads series Sentinel does not export: {sorted(missing)}"
    for path in DASHBOARDS:
        for where, expr in expressions(load(path)):
            missing = series_names(expr) - known
            assert not missing, f"{path.name} {where} reads unknown series {sorted(missing)}"


def _recording_exprs() -> Iterator[tuple[str, str]]:
    for f in (ROOT / "prometheus" / "rules").glob("*.yml"):
        for g in yaml.safe_load(f.read_text())["groups"]:
            for r in g["rules"]:
                yield r.get("record") or r["alert"], r["expr"]


def datasource_uid() -> str:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "sentinel.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    uid: str = ds["uid"]
    return uid


def test_provisioning_points_at_the_dashboards_folder() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "sentinel.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    # docker-compose.yml mounts grafana/dashboards there; test_compose checks the mount itself.
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
