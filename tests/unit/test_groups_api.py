"""The HTTP face of delivery: GET /api/v1/groups, POST /api/v1/alerts/{fp}/ack, `sentinel ack`, and
incidents counted in /metrics — against a real daemon on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from sentinel import cli
from sentinel.alerting.alert import Alert
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.rules.lifecycle import Instance

CONFIG = """\
sources: []
receivers:
  - name: hook
    webhook: {url: "http://127.0.0.1:9/never"}
route:
  receiver: hook
  group_by: [alertname, pipeline]
  group_wait: 1h
store: {path: state.db}
server: {listen: "127.0.0.1:0", api_token: tok-123456}
"""
AUTH = {"Authorization": "Bearer tok-123456"}


def failed(pipeline: str, source: str = "af") -> Alert:
    return Alert.of(
        {"alertname": "PipelineFailed", "source": source, "pipeline": pipeline, "severity": "critical"},
        starts_at=datetime.now(UTC),
    )


async def started(cfg: Path) -> Daemon:
    d = Daemon(load_config(cfg))
    await d.start()
    return d


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(CONFIG)
    d = await started(cfg)
    yield d
    await d.stop()


async def test_groups_show_receiver_labels_alerts_and_next_flush(daemon: Daemon) -> None:
    before = datetime.now(UTC)
    daemon.dispatcher.put([failed("market_data"), failed("risk")])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.web_port}") as c:
        groups = (await c.get("/api/v1/groups")).json()
    assert sorted((g["receiver"], g["kind"], tuple(g["labels"].items())) for g in groups) == [
        ("hook", "route", (("alertname", "PipelineFailed"), ("pipeline", "market_data"))),
        ("hook", "route", (("alertname", "PipelineFailed"), ("pipeline", "risk"))),
    ]
    g = groups[0]
    assert [(a["state"], a["acked"]) for a in g["alerts"]] == [("firing", None)]
    assert g["alerts"][0]["fingerprint"] == failed(g["labels"]["pipeline"]).fingerprint
    next_flush = datetime.fromisoformat(g["nextFlush"])
    assert before + timedelta(minutes=59) < next_flush < datetime.now(UTC) + timedelta(hours=1, seconds=1)


async def test_ack_needs_token_valid_body_and_a_firing_alert(daemon: Daemon) -> None:
    a = failed("market_data")
    daemon.dispatcher.put([a])
    url = f"/api/v1/alerts/{a.fingerprint}/ack"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.web_port}") as c:
        assert (await c.post(url, json={"by": "ana"})).status_code == 401
        r = await c.post(url, content=b"{nope", headers=AUTH)
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = await c.post(url, json={"comment": "x"}, headers=AUTH)
        assert r.status_code == 400 and r.json()["field"] == "by"
        r = await c.post(url, json={"by": "ana", "expires": "tomorrowish"}, headers=AUTH)
        assert r.status_code == 400 and r.json()["field"] == "expires"
        r = await c.post("/api/v1/alerts/0123456789abcdef/ack", json={"by": "ana"}, headers=AUTH)
        assert r.status_code == 404
        r = await c.post(url, json={"by": "ana", "comment": "rerunning", "expires": "2h"}, headers=AUTH)
        assert r.status_code == 200, r.text
        acked = (await c.get("/api/v1/groups")).json()[0]["alerts"][0]["acked"]
    assert acked["by"] == "ana" and acked["comment"] == "rerunning"
    assert datetime.fromisoformat(acked["expires"]) - datetime.fromisoformat(acked["at"]) == timedelta(hours=2)


async def test_sentinel_ack_command_and_the_ack_survive_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(CONFIG)
    d = await started(cfg)
    now = datetime.now(UTC)
    a = failed("market_data")
    # A firing rule instance, as the engine restores it after a restart.
    inst = Instance(a.fingerprint, "g/PipelineFailed", a.labels, (), "firing", now, now, fired_at=now)
    d.engine.restore({a.fingerprint: inst.dump()})
    d.dispatcher.put([a])
    base = f"http://127.0.0.1:{d.web_port}"
    try:
        monkeypatch.setenv("SENTINEL_API_TOKEN", "wrong")
        args = ["ack", a.fingerprint, "--by", "bob", "--comment", "vendor outage", "--url", base]
        assert await _cli(args) == 1
        assert "SENTINEL_API_TOKEN" in capsys.readouterr().err
        monkeypatch.setenv("SENTINEL_API_TOKEN", "tok-123456")
        assert await _cli(args) == 0
        assert f"acknowledged {a.fingerprint} by bob" in capsys.readouterr().out
        async with httpx.AsyncClient(base_url=base) as c:
            alerts = (await c.get("/api/v1/alerts")).json()
        assert alerts[0]["acked"]["by"] == "bob" and alerts[0]["acked"]["comment"] == "vendor outage"
    finally:
        await d.stop()
    d = await started(cfg)  # same state file: the pending group and the ack come back
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.web_port}") as c:
            groups = (await c.get("/api/v1/groups")).json()
        assert [al["acked"]["by"] for g in groups for al in g["alerts"]] == ["bob"]
    finally:
        await d.stop()


async def test_correlated_burst_is_one_incident_group_and_counted(tmp_path: Path) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(CONFIG + "correlation: {threshold: 3, window: 5m, by: [source]}\n")
    d = await started(cfg)
    try:
        d.dispatcher.put([failed("market_data"), failed("risk"), failed("eod"), failed("other", source="pf")])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.web_port}") as c:
            groups = (await c.get("/api/v1/groups")).json()
            page = (await c.get("/metrics")).text
        incident = [g for g in groups if g["kind"] == "incident"]
        assert len(incident) == 1 and incident[0]["labels"] == {"alertname": "Incident", "source": "af"}
        assert sorted(a["labels"]["pipeline"] for a in incident[0]["alerts"]) == ["eod", "market_data", "risk"]
        assert [g["labels"].get("pipeline") for g in groups if g["kind"] == "route"] == ["other"]
        assert "sentinel_incidents_total 1.0" in page
    finally:
        await d.stop()


async def _cli(argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(cli.main, argv)
