"""Real Prometheus scraping a real Sentinel that watches a real Prefect 3 server, with the shipped
prometheus.yml and rules (intervals shortened to 1 s): after one failed and one successful run of a flow,
Prometheus' query API shows the counts and the 1-day success ratio, the recording rule behind the alert
history dashboard carries the firing PipelineFailed, and an alert Prometheus raises reaches Sentinel's
Alertmanager intake and is delivered by Sentinel's own route."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sentinel.config import load_config
from sentinel.daemon import Daemon
from tests.servers import procs
from tests.servers.prefect import PrefectServer
from tests.sink import WebhookSink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROBE = "PrometheusReachesSentinel"


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` (sync, may raise) until it returns something truthy; the last value or error is reported."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await asyncio.to_thread(check)
            if last:
                return last
        except (httpx.HTTPError, AssertionError, KeyError, IndexError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.5)


class Prometheus:
    """/usr/bin/prometheus on 127.0.0.1 with the repo's config and rules, retargeted at one Sentinel."""

    def __init__(self, tmp: Path, sentinel_port: int) -> None:
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
        cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
        target = [f"127.0.0.1:{sentinel_port}"]
        itself = [f"127.0.0.1:{self.port}"]
        for job in cfg["scrape_configs"]:
            job.pop("scrape_interval", None)
            job.pop("scrape_timeout", None)  # may not exceed the 1 s interval
            job["static_configs"] = [{"targets": target if job["job_name"] == "sentinel" else itself}]
        cfg["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": target}]
        rules = tmp / "rules"
        rules.mkdir()
        for f in (ROOT / "prometheus" / "rules").glob("*.yml"):
            doc = yaml.safe_load(f.read_text())
            for g in doc["groups"]:
                g.pop("interval", None)  # the recording groups run every minute in production
            (rules / f.name).write_text(yaml.safe_dump(doc))
        probe = {"alert": PROBE, "expr": 'up{job="sentinel"} == 1', "labels": {"severity": "info"}}
        (rules / "probe.yml").write_text(yaml.safe_dump({"groups": [{"name": "probe", "rules": [probe]}]}))
        cfg["rule_files"] = [str(rules / "*.yml")]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        exe = shutil.which("prometheus")
        assert exe, "prometheus missing: apt-get install prometheus (tests/run.sh does)"
        argv = [
            exe,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Prometheus holds a firing alert back from the Alertmanager for `resend_delay` (1 m by default)
            "--rules.alert.resend-delay=1s",
        ]
        self.proc = procs.ManagedProcess("prometheus", argv, {"PATH": "/usr/bin:/bin"}, cwd=tmp, log=tmp / "log")

    def start(self) -> None:
        self.proc.start()
        procs.wait_until(self.ready, 60, "Prometheus ready", alive=self.proc.check_running)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> dict[str, float]:
        """Instant query → {'k=v,k=v': value} over the result's labels (without __name__, job, instance)."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        out = {}
        for s in body["data"]["result"]:
            labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "job", "instance")}
            out[",".join(f"{k}={v}" for k, v in sorted(labels.items()))] = float(s["value"][1])
        return out

    def stop(self) -> None:
        self.proc.stop(grace=5)


async def test_prometheus_sees_runs_ratios_recordings_and_alerts_reach_sentinel(
    request: pytest.FixtureRequest, sink: WebhookSink, tmp_path: Path
) -> None:
    prefect: PrefectServer = await asyncio.to_thread(request.getfixturevalue, "prefect3")
    flow = f"prom-e2e-{uuid.uuid4().hex[:8]}"  # the server is shared: a pipeline no other test touches
    (tmp_path / "rules.yaml").write_text(
        f"""\
groups:
  - name: e2e
    pipelines: {{pipeline: {flow}}}
    rules:
      - alert: PipelineFailed
        when: failed
        severity: critical
"""
    )
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(
        f"""\
sources:
  - name: pf
    kind: prefect
    url: {prefect.api_url}
    poll_interval: 1s
    max_requests_per_second: 20
    burst: 20
rule_files: [rules.yaml]
evaluation_interval: 1s
receivers:
  - name: sink
    webhook: {{url: "{sink.url}/am"}}
route:
  receiver: sink
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 4h
store: {{path: state.db}}
server: {{listen: "127.0.0.1:0"}}
"""
    )
    daemon = Daemon(load_config(cfg))
    await daemon.start()
    prom: Prometheus | None = None
    try:
        await until(lambda: daemon.ready and daemon.dispatcher.ready.is_set(), 60, "Sentinel ready")
        assert daemon.web_port
        (tmp_path / "prom").mkdir()
        prom = Prometheus(tmp_path / "prom", daemon.web_port)
        await asyncio.to_thread(prom.start)
        p = prom
        await until(lambda: p.query('up{job="sentinel"}') == {"": 1.0}, 30, "Prometheus scraping Sentinel")

        runs = f'sentinel_pipeline_runs_total{{pipeline="{flow}"}}'
        await asyncio.to_thread(prefect.run_flow, flow, True)
        # success exists at 0 from the first sight of the pipeline, so increase() sees the first success too.
        first = {f"pipeline={flow},source=pf,state=failed": 1.0, f"pipeline={flow},source=pf,state=success": 0.0}
        await until(lambda: p.query(runs) == first, 30, "the failed run")
        # The alert history dashboard reads firing alerts through this recording rule.
        firing = 'alertname_severity:sentinel_alerts_firing:sum{alertname="PipelineFailed"}'
        await until(
            lambda: p.query(firing) == {"alertname=PipelineFailed,severity=critical": 1.0}, 30, "recorded firing alert"
        )

        await asyncio.to_thread(prefect.run_flow, flow, False)
        expected = {f"pipeline={flow},source=pf,state=failed": 1.0, f"pipeline={flow},source=pf,state=success": 1.0}
        await until(lambda: p.query(runs) == expected, 30, "one failed and one successful run")
        ratio = f'sentinel_pipeline_success_ratio{{pipeline="{flow}", window="1d"}}'
        await until(lambda: p.query(ratio) == {f"pipeline={flow},source=pf,window=1d": 0.5}, 30, "success ratio 0.5")
        await until(lambda: not p.query(firing), 30, "the recorded firing alert gone after the success")

        # Prometheus → Sentinel's Alertmanager intake → Sentinel's route → the receiver.
        def probe_delivered() -> bool:
            return any(
                a["labels"].get("alertname") == PROBE and a["status"] == "firing"
                for d in sink.deliveries
                if d.path == "/am"
                for a in d.body["alerts"]
            )

        await until(probe_delivered, 60, f"{PROBE} from Prometheus delivered by Sentinel")
    finally:
        if prom is not None:
            await asyncio.to_thread(prom.stop)
        await daemon.stop()
