"""Restart safety: pending groups keep their schedule, nothing already sent is sent again, and a paid channel
(SMS) never gets the same message twice — even when the daemon is killed with a notification in flight."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from sentinel.alerting.alert import Alert
from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.intents import IntentLog
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import DeliveryOptions, build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.stage import FlushContext
from sentinel.clock import FrozenClock
from sentinel.config import ReceiverConfig, RouteConfig
from sentinel.notify.build import build_integrations
from sentinel.notify.webhook import WebhookIntegration
from sentinel.store import Store

T0 = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
S = timedelta(seconds=1)
ROUTE = {"receiver": "r", "group_by": ["alertname"], "group_wait": "30s", "group_interval": "5m"}


class Recorder:
    def __init__(self, name: str, kind: str = "webhook") -> None:
        self.name, self.kind, self.send_resolved = name, kind, True
        self.sent: list[tuple[datetime, list[str]]] = []
        self.block: asyncio.Event | None = None  # set: notify hangs until it is set (a send in flight)
        self.calls = 0

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        self.calls += 1
        if self.block is not None:
            await self.block.wait()
        self.sent.append((ctx.now, [a.status(ctx.now) for a in alerts]))


def failed(pipeline: str = "market_data") -> Alert:
    return Alert.of({"alertname": "PipelineFailed", "pipeline": pipeline}, starts_at=T0)


class Node:
    """One life of the daemon's delivery half on a shared state file."""

    def __init__(self, path: Path, clock: FrozenClock, integrations: list[Recorder]) -> None:
        self.store = Store(path)
        self.clock = clock
        self.nflog = NotificationLog(self.store)
        self.intents = IntentLog(self.store)
        self.unsure: list[str] = []
        pipelines = build_pipelines({"r": integrations}, self.nflog, intents=self.intents)
        route = Route.build(RouteConfig.model_validate(ROUTE))
        self.d = Dispatcher(route, pipelines, clock, nflog=self.nflog, store=self.store)

    async def start(self) -> Node:
        await self.store.open()
        await self.nflog.load(self.clock.now())
        await self.intents.reconcile(self.nflog, lambda r, i: self.unsure.append(f"{r}/{i}"))
        await self.d.restore()
        return self

    async def at(self, when: datetime) -> int:
        self.clock.set(when)
        return await self.d.flush_due()


async def test_pending_group_flushes_on_its_original_schedule_after_a_crash(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    first = await Node(tmp_path / "s.db", clock, [Recorder("hook")]).start()
    first.d.put([failed()])
    await first.d.save()
    # kill -9: no stop(), nothing flushed. The next life starts 10 s later.
    clock.set(T0 + 10 * S)
    rec = Recorder("hook")
    second = await Node(tmp_path / "s.db", clock, [rec]).start()
    assert await second.at(T0 + 29 * S) == 0
    await second.at(T0 + 30 * S)
    assert rec.sent == [(T0 + 30 * S, ["firing"])]
    # And what was sent is not sent again by a third life.
    rec3 = Recorder("hook")
    third = await Node(tmp_path / "s.db", clock, [rec3]).start()
    await third.at(T0 + 10 * 60 * S)
    assert rec3.sent == []
    for n in (first, second, third):
        await n.store.close()


async def test_in_flight_send_is_not_repeated_to_a_paid_channel_but_is_to_a_free_one(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    sms, chat = Recorder("sms", kind="sms"), Recorder("chat")
    sms.block, chat.block = asyncio.Event(), asyncio.Event()
    first = await Node(tmp_path / "s.db", clock, [sms, chat]).start()
    first.d.put([failed()])
    await first.d.save()  # the dispatcher's loop saves right after intake
    clock.set(T0 + 30 * S)
    flush = asyncio.create_task(first.d.flush_due())
    await _until(lambda: sms.calls == 1 and chat.calls == 1)
    flush.cancel()  # the crash: both sends were on the wire, neither was logged
    await asyncio.gather(flush, return_exceptions=True)
    sms2, chat2 = Recorder("sms", kind="sms"), Recorder("chat")
    clock.set(T0 + 60 * S)
    second = await Node(tmp_path / "s.db", clock, [sms2, chat2]).start()
    assert second.unsure == ["r/sms"]  # logged as "possibly delivered before crash" and counted
    await second.at(T0 + 60 * S)
    assert sms2.sent == []  # may have been delivered: never a second SMS
    assert chat2.sent == [(T0 + 60 * S, ["firing"])]  # free channel: at least once
    # The resolution still reaches the paid channel, once.
    clock.set(T0 + 2 * 60 * S)
    second.d.put([failed().resolve(T0 + 2 * 60 * S)])
    await second.at(T0 + 6 * 60 * S)
    assert sms2.sent == [(T0 + 6 * 60 * S, ["resolved"])]
    for n in (first, second):
        await n.store.close()


def test_paid_is_automatic_for_sms_schemes_and_can_be_forced() -> None:
    receiver = ReceiverConfig.model_validate(
        {
            "name": "oncall",
            "urls": [
                "twilio://AC0123456789abcdef0123456789abcdef:tok0123456789abcdef0123456789abcd@15551234567/15557654321",
                "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#alerts",
            ],
        }
    )
    twilio, slack = build_integrations(receiver)
    assert DeliveryOptions().is_paid(twilio) and not DeliveryOptions().is_paid(slack)
    assert DeliveryOptions().is_paid(Recorder("twilio[0]", kind="sms"))
    assert not DeliveryOptions().is_paid(Recorder("slack[0]", kind="slack"))
    assert DeliveryOptions(paid=True).is_paid(Recorder("webhook[0]"))
    assert not DeliveryOptions(paid=False).is_paid(Recorder("twilio[0]", kind="sms"))


async def test_unanswered_paid_send_is_not_retried_but_a_free_one_is(sinks: tuple[Sink, Sink]) -> None:
    paid_sink, free_sink = sinks
    paid_sink.release.clear()  # both answer too late: the request arrived, the answer never did
    free_sink.release.clear()
    clock = FrozenClock(T0)
    nflog, intents = NotificationLog(), IntentLog()
    outcomes: list[tuple[str, str]] = []
    receivers = {
        "sms": [WebhookIntegration(paid_sink.url + "/sms", timeout=0.3)],
        "chat": [WebhookIntegration(free_sink.url + "/chat", timeout=0.3)],
    }
    pipelines = build_pipelines(
        receivers,
        nflog,
        on_outcome=lambda r, o, _s: outcomes.append((r, o)),
        intents=intents,
        options={"sms": DeliveryOptions(paid=True)},
    )
    route = Route.build(
        RouteConfig.model_validate(
            {
                **ROUTE,
                "group_interval": "2s",  # the free channel's retries run (in real time) until the next flush
                "receiver": "chat",
                "routes": [{"receiver": "sms", "continue": True}, {"receiver": "chat"}],
            }
        )
    )
    d = Dispatcher(route, pipelines, clock, nflog=nflog)
    d.put([failed()])
    clock.set(T0 + 30 * S)
    await d.flush_due()
    assert len(paid_sink.got) == 1 and ("sms", "possibly_delivered") in outcomes
    assert len(free_sink.got) >= 2  # a free channel is retried until the flush's deadline
    paid_sink.release.set()
    free_sink.release.set()
    clock.set(T0 + 60 * S)
    await d.flush_due()
    assert len(paid_sink.got) == 1  # logged as sent: the next flush does not send it again


# -- the real thing: `sentinel run`, kill -9, restart ------------------------------------------------------

CONFIG = """\
sources: []
resolve_timeout: 1h
receivers:
  - name: sms
    paid: true
    webhook: {{url: "{paid}/sms", timeout: 60s}}
  - name: chat
    webhook: {{url: "{free}/chat", timeout: 60s}}
route:
  receiver: chat
  group_by: ['...']
  group_wait: 5s  # long enough to kill the daemon while A3 waits, even on a loaded machine
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: sms
      continue: true
    - receiver: chat
store: {{path: state.db}}
server: {{listen: "127.0.0.1:0"}}
"""


class Sink:
    """A webhook receiver that records each request as it arrives and can hold its answer (a slow SMS API)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, float]] = []  # (fingerprint, status, arrival)
        self.release = asyncio.Event()
        self.release.set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        now = time.time()
        self.got.extend((a["fingerprint"], a["status"], now) for a in body["alerts"])
        await self.release.wait()
        return web.Response(text="ok")

    def count(self, fp: str, status: str) -> int:
        return sum(1 for f, s, _ in self.got if f == fp and s == status)

    async def start(self) -> Sink:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.port = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            m = re.search(r"sentinel started.*listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))

    @property
    def output(self) -> str:
        return "".join(self.lines)


REPO = str(Path(__file__).resolve().parents[2])


async def sentinel_run(cfg: Path) -> Proc:
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sentinel", "run", "-c", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=cfg.parent,
    )  # fmt: skip
    p = Proc(proc)
    await _until(lambda: p.port != 0 or proc.returncode is not None, 60, lambda: p.output)
    assert p.port, p.output
    return p


@pytest.fixture
async def sinks() -> AsyncIterator[tuple[Sink, Sink]]:
    paid, free = await Sink().start(), await Sink().start()
    yield paid, free
    await paid.stop()
    await free.stop()


def _alert(name: str, ends_at: datetime | None = None) -> dict[str, Any]:
    a: dict[str, Any] = {"labels": {"alertname": name, "severity": "critical", "pipeline": name.lower()}}
    if ends_at is not None:
        a["endsAt"] = ends_at.isoformat()
    return a


def _fp(name: str) -> str:
    return Alert.of(_alert(name)["labels"]).fingerprint


def _groups_on_disk(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return " ".join(v.decode() for (v,) in con.execute("SELECT value FROM kv WHERE ns='groups'"))
    finally:
        con.close()


async def test_kill_9_with_groups_pending_and_a_send_in_flight(tmp_path: Path, sinks: tuple[Sink, Sink]) -> None:
    paid, free = sinks
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(CONFIG.format(paid=paid.url, free=free.url))
    first = await sentinel_run(cfg)
    procs = [first]
    try:
        api = f"http://127.0.0.1:{first.port}/api/v2/alerts"
        paid.release.clear()  # both APIs are slow: the sends below stay in flight
        free.release.clear()
        async with httpx.AsyncClient() as c:
            assert (await c.post(api, json=[_alert("A1"), _alert("A2")])).status_code == 200
            await _until(lambda: all(s.count(_fp(n), "firing") for s in (paid, free) for n in ("A1", "A2")), 30)
            assert (await c.post(api, json=[_alert("A3")])).status_code == 200
        # A3's groups are on disk and still waiting out their group_wait: now the crash.
        await _until(lambda: _groups_on_disk(tmp_path / "state.db").count(_fp("A3")) >= 2, 10)
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
        assert not paid.count(_fp("A3"), "firing"), "A3 flushed before the kill; the test lost its premise"
        paid.release.set()
        free.release.set()

        second = await sentinel_run(cfg)
        procs.append(second)
        await _until(lambda: paid.count(_fp("A3"), "firing") and free.count(_fp("A3"), "firing"), 30)
        # Free channel: the sends in flight at the crash are made again (at least once).
        await _until(lambda: all(free.count(_fp(n), "firing") >= 2 for n in ("A1", "A2")), 30)
        # Resolve everything; once the resolutions are through, any duplicate firing send would have preceded them.
        api = f"http://127.0.0.1:{second.port}/api/v2/alerts"
        async with httpx.AsyncClient() as c:
            now = datetime.now(UTC)
            body = [_alert(n, ends_at=now) for n in ("A1", "A2", "A3")]
            assert (await c.post(api, json=body)).status_code == 200
        await _until(lambda: all(paid.count(_fp(n), "resolved") for n in ("A1", "A2", "A3")), 30)
        async with httpx.AsyncClient() as c:
            metrics = (await c.get(f"http://127.0.0.1:{second.port}/metrics")).text
    finally:
        for p in procs:
            if p.proc.returncode is None:
                p.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(p.proc.wait(), 30)
                except TimeoutError:
                    p.proc.kill()
    for n in ("A1", "A2", "A3"):
        assert paid.count(_fp(n), "firing") == 1, (n, paid.got)
        assert paid.count(_fp(n), "resolved") == 1, (n, paid.got)
        assert free.count(_fp(n), "firing") >= 1
    assert "possibly delivered before crash" in second.output
    assert 'sentinel_notifications_total{outcome="possibly_delivered",receiver="sms"} 2.0' in metrics
    assert "Traceback" not in first.output + second.output


async def _until(cond: Callable[[], object], timeout: float = 5.0, why: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline" + (f":\n{why()}" if why else ""))
        await asyncio.sleep(0.02)
