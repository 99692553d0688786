"""Silences and alert status over HTTP, and `sentinel silence` / `sentinel alerts`, against a real daemon on
an ephemeral port delivering to a real webhook sink: token, 400s naming the field, what gets notified,
why an alert is held back, and silences surviving a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentinel import cli
from sentinel.alerting.alert import Alert
from sentinel.clock import FrozenClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.rules.lifecycle import Instance
from tests.sink import WebhookSink
from tests.waiting import until

T0 = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
TOKEN = "tok-silence-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """\
receivers:
  - name: hook
    webhook: {{url: "{sink}/hook"}}
route:
  receiver: hook
  group_by: [source]
  group_wait: 0s
  group_interval: 1m
inhibit_rules:
  - source_matchers: ['alertname="SourceDown"']
    target_matchers: ['alertname!="SourceDown"']
    equal: [source]
store: {{path: state.db}}
server: {{listen: "127.0.0.1:0", api_token: {token}}}
"""


async def start(tmp_path: Path, sink: WebhookSink, clock: FrozenClock) -> Daemon:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(CONFIG.format(sink=sink.url, token=TOKEN))
    d = Daemon(load_config(cfg), clock=clock)
    await d.start()
    return d


@pytest.fixture
async def daemon(tmp_path: Path, sink: WebhookSink) -> AsyncIterator[Daemon]:
    d = await start(tmp_path, sink, FrozenClock(T0))
    yield d
    await d.stop()


def base(d: Daemon) -> str:
    return f"http://127.0.0.1:{d.web_port}"


def firing(d: Daemon, name: str, **labels: str) -> Alert:
    """An alert as the rule engine holds it (so /api/v1/alerts lists it) and hands it to the dispatcher."""
    now = d.clock.now()
    a = Alert.of({"alertname": name, "severity": "critical", **labels}, starts_at=now)
    inst = Instance(a.fingerprint, f"g/{name}", a.labels, (), "firing", now, now, fired_at=now)
    d.engine.restore({a.fingerprint: inst.dump()})
    return a


def postable(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "matchers": ['pipeline="market_data_ingest"', {"name": "source", "value": "af.*", "isRegex": True}],
        "endsAt": (T0 + timedelta(hours=2)).isoformat(),
        "createdBy": "ana",
        "comment": "vendor feed late, CHG-42",
    }
    return {**body, **over}


async def test_post_needs_the_token_and_names_the_bad_field(daemon: Daemon) -> None:
    async with httpx.AsyncClient(base_url=base(daemon)) as c:
        assert (await c.post("/api/v1/silences", json=postable())).status_code == 401
        assert (
            await c.post("/api/v1/silences", json=postable(), headers={"Authorization": "Bearer no"})
        ).status_code == 401

        async def bad(body: Any) -> str:
            r = await c.post("/api/v1/silences", content=body if isinstance(body, bytes) else None,
                             json=None if isinstance(body, bytes) else body, headers=AUTH)  # fmt: skip
            assert r.status_code == 400, r.text
            return str(r.json()["field"])

        assert await bad(b"{not json") == "body"
        assert await bad({k: v for k, v in postable().items() if k != "endsAt"}) == "endsAt"
        assert await bad(postable(matchers=[])) == "matchers"
        assert await bad(postable(matchers=['team=""'])) == "matchers"
        assert await bad(postable(matchers=["no quotes or operator"])) == "matchers[0]"
        assert await bad(postable(matchers=[{"name": "1x", "value": "v"}])) == "matchers[0]"
        assert await bad(postable(endsAt=(T0 - timedelta(hours=1)).isoformat())) == "endsAt"
        assert await bad(postable(comment="")) == "comment"
        assert await bad(postable(ends_at="2h")) == "ends_at"  # unknown keys are typos, not ignored

        r = await c.post("/api/v1/silences", json=postable(), headers=AUTH)
        assert r.status_code == 200
        sid = r.json()["silenceID"]
        listed = (await c.get("/api/v1/silences")).json()
        assert [(s["id"], s["status"]["state"], s["createdBy"]) for s in listed] == [(sid, "active", "ana")]
        assert listed[0]["matchers"][1] == {"name": "source", "value": "af.*", "isRegex": True, "isEqual": True}
        assert (await c.get(f"/api/v1/silences/{sid}")).json()["comment"] == "vendor feed late, CHG-42"

        assert (await c.delete(f"/api/v1/silences/{sid}")).status_code == 401
        gone = await c.delete(f"/api/v1/silences/{sid}", headers=AUTH)
        assert gone.status_code == 200 and gone.json()["status"]["state"] == "expired"
        assert (await c.get("/api/v1/silences?state=active")).json() == []
        assert (await c.delete("/api/v1/silences/nope", headers=AUTH)).status_code == 404
        assert (await c.get("/api/v1/silences?state=bogus")).status_code == 400


async def test_silenced_and_inhibited_alerts_are_not_sent_and_the_api_says_why(
    daemon: Daemon, sink: WebhookSink, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=base(daemon)) as c:
        sid = (await c.post("/api/v1/silences", json=postable(), headers=AUTH)).json()["silenceID"]
        market = firing(daemon, "PipelineFailed", source="af", pipeline="market_data_ingest")
        risk = firing(daemon, "PipelineFailed", source="af", pipeline="portfolio_risk")
        daemon.dispatcher.put([market, risk])
        await until(lambda: len(sink.on("/hook")) == 1)
        sent = sink.on("/hook")[0].body["alerts"]
        assert [a["labels"]["pipeline"] for a in sent] == ["portfolio_risk"]

        alerts = {a["labels"].get("pipeline"): a for a in (await c.get("/api/v1/alerts")).json()}
        assert alerts["market_data_ingest"]["status"] == {
            "state": "suppressed",
            "silencedBy": [sid],
            "inhibitedBy": [],
            "mutedBy": [],
        }
        assert alerts["portfolio_risk"]["status"]["state"] == "active"

        down = firing(daemon, "SourceDown", source="af", component="api")
        daemon.dispatcher.put([down])
        alerts = {
            a["labels"]["alertname"] + a["labels"].get("pipeline", ""): a
            for a in (await c.get("/api/v1/alerts")).json()
        }
        assert alerts["PipelineFailedportfolio_risk"]["status"]["inhibitedBy"] == [down.fingerprint]
        assert alerts["SourceDown"]["status"]["state"] == "active"
        metrics = (await c.get("/metrics")).text
        assert 'sentinel_alerts_suppressed_total{reason="silenced"} 1.0' in metrics


async def cli_main(argv: list[str]) -> int:
    return await asyncio.to_thread(cli.main, argv)


async def test_cli_adds_lists_expires_and_shows_alerts(
    tmp_path: Path, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = await start(tmp_path, sink, FrozenClock(T0))
    try:
        await _cli_session(daemon, tmp_path, sink, monkeypatch, capsys)
    finally:
        await daemon.stop()


async def _cli_session(
    daemon: Daemon,
    tmp_path: Path,
    sink: WebhookSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = ["--url", base(daemon)]
    failed = firing(daemon, "PipelineFailed", source="af", pipeline="eod_reporting")
    monkeypatch.delenv("SENTINEL_API_TOKEN", raising=False)
    add = ["silence", "add", 'pipeline="eod_reporting"', "alertname=PipelineFailed", "-d", "3h", "-c", "rerun", *url]
    assert await cli_main(add) == 1
    assert "SENTINEL_API_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("SENTINEL_API_TOKEN", TOKEN)
    assert await cli_main([*add[:2], 'pipeline=""', *add[4:]]) == 1
    assert "must not match the empty string" in capsys.readouterr().err
    assert await cli_main([*add, "--author", "bo"]) == 0
    sid = capsys.readouterr().out.strip()

    assert await cli_main(["silence", "ls", *url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "STATE", "MATCHERS"]
    assert sid in table[1] and "active" in table[1] and 'pipeline="eod_reporting"' in table[1] and "bo" in table[1]

    assert await cli_main(["alerts", *url]) == 0
    out = capsys.readouterr().out
    assert "PipelineFailed" in out and "suppressed" in out and f"silenced by {sid}" in out
    assert await cli_main(["alerts", "--json", *url]) == 0
    assert '"silencedBy"' in capsys.readouterr().out
    assert await cli_main(["ack", failed.fingerprint, "--by", "bo", "--comment", "on it", *url]) == 0
    assert f"acknowledged {failed.fingerprint} by bo" in capsys.readouterr().out
    assert await cli_main(["ack", "0000000000000000", "--by", "bo", *url]) == 1
    assert "sentinel ack:" in capsys.readouterr().err

    # Silences survive a restart of the daemon.
    await daemon.stop()
    daemon.stop = _noop  # type: ignore[method-assign]
    again = await start(tmp_path, sink, FrozenClock(T0 + timedelta(minutes=5)))
    try:
        url = ["--url", base(again)]
        assert await cli_main(["silence", "ls", "-q", *url]) == 0
        assert capsys.readouterr().out.split() == [sid]
        assert await cli_main(["silence", "expire", sid, *url]) == 0
        assert f"expired {sid}" in capsys.readouterr().out
        assert await cli_main(["silence", "ls", "--expired", "--json", *url]) == 0
        assert '"expired"' in capsys.readouterr().out
    finally:
        await again.stop()


async def _noop() -> None:
    return None


async def test_reload_rebuilds_inhibition_and_time_intervals_and_keeps_silences(
    daemon: Daemon, tmp_path: Path, sink: WebhookSink
) -> None:
    async with httpx.AsyncClient(base_url=base(daemon)) as c:
        sid = (await c.post("/api/v1/silences", json=postable(), headers=AUTH)).json()["silenceID"]
        eod = firing(daemon, "PipelineFailed", source="pf", pipeline="eod_reporting")
        down = firing(daemon, "SourceDown", source="pf")
        daemon.dispatcher.put([down])
        by_name = {a["labels"]["alertname"]: a for a in (await c.get("/api/v1/alerts")).json()}
        assert by_name["PipelineFailed"]["status"]["inhibitedBy"] == [down.fingerprint]

        # New config: no inhibition, and the whole route muted around the clock.
        text = CONFIG.format(sink=sink.url, token=TOKEN).replace("inhibit_rules:", "old_inhibit_rules:")
        head, rules_and_rest = text.split("old_inhibit_rules:")
        rest = rules_and_rest.split("store:", 1)[1]
        text = head.replace("  group_interval: 1m\n", "  group_interval: 1m\n  mute_time_intervals: [always]\n")
        text += "time_intervals:\n  - name: always\n    time_intervals: [{}]\nstore:" + rest
        (tmp_path / "sentinel.yaml").write_text(text)
        r = await c.post("/-/reload", headers=AUTH)
        assert r.status_code == 200, r.text

        status = {a["labels"]["alertname"]: a for a in (await c.get("/api/v1/alerts")).json()}
        assert eod.fingerprint == status["PipelineFailed"]["fingerprint"]
        assert status["PipelineFailed"]["status"] == {
            "state": "suppressed",
            "silencedBy": [],
            "inhibitedBy": [],
            "mutedBy": ["always"],
        }
        assert [s["id"] for s in (await c.get("/api/v1/silences")).json()] == [sid]
        late = firing(daemon, "PipelineLate", source="other", pipeline="eod_reporting")  # a new group: flushed now
        daemon.dispatcher.put([late])
        muted = daemon.metrics.alerts_suppressed.labels("time_interval")
        await until(lambda: muted._value.get() >= 1)  # the group was flushed, and held back
        assert not any(
            a["labels"].get("pipeline") == "eod_reporting" for d in sink.on("/hook") for a in d.body["alerts"]
        )
