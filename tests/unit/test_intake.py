"""Alertmanager's `POST /api/v2/alerts` intake on a frozen clock: the defaults Prometheus relies on
(missing startsAt/endsAt), re-posts that keep an alert alive, resolution by endsAt or by silence of the
sender, errors that name the field, and whether a token is needed. Notifications land on a real sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentinel.clock import FrozenClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.web.intake import intake_of
from tests.sink import WebhookSink

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

CONFIG = """\
receivers:
  - name: hook
    webhook: {{url: "{sink}/hook"}}
route: {{receiver: hook, group_by: [alertname], group_wait: 10s, group_interval: 20s, repeat_interval: 4h}}
resolve_timeout: 2m
store: {{path: ":memory:"}}
server: {{listen: "127.0.0.1:0", api_token: tok-123456{extra}}}
"""


async def _daemon(tmp_path: Path, sink: WebhookSink, extra: str = "") -> Daemon:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(CONFIG.format(sink=sink.url, extra=extra))
    d = Daemon(load_config(cfg), clock=FrozenClock(T0))
    await d.start()
    return d


@pytest.fixture
async def daemon(tmp_path: Path, sink: WebhookSink) -> AsyncIterator[Daemon]:
    d = await _daemon(tmp_path, sink)
    yield d
    await d.stop()


def _base(d: Daemon) -> str:
    return f"http://127.0.0.1:{d.web_port}"


async def _post(d: Daemon, alerts: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=_base(d)) as c:
        return await c.post("/api/v2/alerts", json=alerts, headers=headers or {})


def _advance(d: Daemon, seconds: float) -> None:
    assert isinstance(d.clock, FrozenClock)
    d.clock.advance(seconds)
    d.dispatcher._wake.set()  # the dispatcher sleeps in real time; a frozen clock has to nudge it


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


def _statuses(sink: WebhookSink) -> list[list[tuple[str, str]]]:
    return [sorted((a["labels"]["instance"], a["status"]) for a in d.body["alerts"]) for d in sink.on("/hook")]


def _am(instance: str, **extra: Any) -> dict[str, Any]:
    return {"labels": {"alertname": "Down", "instance": instance}, "annotations": {"summary": "x"}, **extra}


async def test_missing_times_default_like_alertmanager_and_reposts_refresh(daemon: Daemon, sink: WebhookSink) -> None:
    r = await _post(daemon, [_am("a"), _am("b")])
    assert r.status_code == 200
    stored = {s.alert.label("instance"): s.alert for s in intake_of(daemon).alerts.values()}
    assert stored["a"].starts_at == T0 and stored["a"].ends_at == T0 + timedelta(minutes=2)

    _advance(daemon, 10)  # group_wait
    await _until(lambda: len(sink.on("/hook")) == 1)
    body = sink.on("/hook")[0].body
    assert _statuses(sink) == [[("a", "firing"), ("b", "firing")]]
    assert body["alerts"][0]["startsAt"] == "2026-03-02T09:00:00Z"
    assert body["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"  # firing: Alertmanager blanks the end

    # Prometheus re-sends every minute: only `a` keeps being posted, so `b` times out after resolve_timeout.
    for _ in range(3):
        _advance(daemon, 60)
        assert (await _post(daemon, [_am("a")])).status_code == 200
    a = next(s.alert for s in intake_of(daemon).alerts.values() if s.alert.label("instance") == "a")
    assert a.starts_at == T0  # merged with the stored alert: the first start is kept
    assert a.ends_at == T0 + timedelta(minutes=3, seconds=10) + timedelta(minutes=2)
    _advance(daemon, 20)
    await _until(lambda: len(sink.on("/hook")) == 2)
    assert _statuses(sink)[1] == [("a", "firing"), ("b", "resolved")]
    assert sink.on("/hook")[1].body["alerts"][1]["endsAt"] == "2026-03-02T09:02:00Z"

    # `sentinel alerts` / GET /api/v1/alerts list posted alerts beside the rules' own.
    async with httpx.AsyncClient(base_url=_base(daemon)) as c:
        listed = {a["labels"]["instance"]: a for a in (await c.get("/api/v1/alerts")).json()}
    assert {k: (v["state"], v["origin"]) for k, v in listed.items()} == {
        "a": ("firing", "api"),
        "b": ("resolved", "api"),
    }
    assert listed["a"]["activeAt"] == T0.isoformat() and listed["a"]["status"]["state"] == "active"


async def test_ends_at_in_the_past_resolves_and_a_later_post_starts_a_new_episode(
    daemon: Daemon, sink: WebhookSink
) -> None:
    await _post(daemon, [_am("a")])
    _advance(daemon, 10)
    await _until(lambda: len(sink.on("/hook")) == 1)
    _advance(daemon, 5)
    resolved_at = daemon.clock.now() - timedelta(seconds=1)
    r = await _post(daemon, [_am("a", endsAt=resolved_at.isoformat())])
    assert r.status_code == 200
    _advance(daemon, 20)
    await _until(lambda: len(sink.on("/hook")) == 2)
    assert _statuses(sink)[1] == [("a", "resolved")]
    assert sink.on("/hook")[1].body["alerts"][0]["startsAt"] == "2026-03-02T09:00:00Z"
    await _until(lambda: not daemon.dispatcher.groups)

    # Firing again after the resolution: a new alert, with its own start (no overlap, no merge).
    _advance(daemon, 100)
    await _post(daemon, [_am("a")])
    again = next(iter(intake_of(daemon).alerts.values())).alert
    assert again.starts_at == daemon.clock.now()


async def test_explicit_end_wins_over_a_later_timeout_repost(daemon: Daemon) -> None:
    until = T0 + timedelta(hours=1)
    await _post(daemon, [_am("a", startsAt=T0.isoformat(), endsAt=until.isoformat())])
    _advance(daemon, 30)
    await _post(daemon, [_am("a")])  # no endsAt: would be now + 2m, but the explicit hour is later
    a = next(iter(intake_of(daemon).alerts.values())).alert
    assert a.ends_at == until and a.starts_at == T0


async def test_bad_alerts_get_400_naming_the_field_and_good_ones_still_count(daemon: Daemon) -> None:
    r = await _post(
        daemon,
        [
            _am("ok"),
            {"labels": {}},
            {"labels": {"bad-name": "x"}},
            {"labels": {"alertname": 3}},
            _am("late", startsAt=T0.isoformat(), endsAt=(T0 - timedelta(minutes=1)).isoformat()),
            _am("t", startsAt="yesterday"),
        ],
    )
    assert r.status_code == 400
    fields = [e["field"] for e in r.json()["errors"]]
    assert fields == ["[1].labels", "[2].labels.bad-name", "[3].labels.alertname", "[4].endsAt", "[5].startsAt"]
    assert "start time must be before end time" in r.json()["error"]
    assert [s.alert.label("instance") for s in intake_of(daemon).alerts.values()] == ["ok"]

    async with httpx.AsyncClient(base_url=_base(daemon)) as c:
        r = await c.post("/api/v2/alerts", content=b"{not json")
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "body"
        r = await c.post("/api/v2/alerts", json={"labels": {"a": "b"}})
        assert r.status_code == 400 and "list" in r.json()["error"]


async def test_token_only_when_asked_and_ready_endpoints(daemon: Daemon, tmp_path: Path, sink: WebhookSink) -> None:
    assert (await _post(daemon, [_am("a")])).status_code == 200  # Prometheus sends no token by default
    async with httpx.AsyncClient(base_url=_base(daemon)) as c:
        assert (await c.get("/-/healthy")).status_code == 200
        assert (await c.get("/-/ready")).status_code == 200

    locked_dir = tmp_path / "locked"
    locked_dir.mkdir()
    locked = await _daemon(locked_dir, sink, extra=", intake_requires_token: true")
    try:
        assert (await _post(locked, [_am("a")])).status_code == 401
        ok = await _post(locked, [_am("a")], headers={"Authorization": "Bearer tok-123456"})
        assert ok.status_code == 200
    finally:
        await locked.stop()
