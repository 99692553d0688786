"""A scheduler that is down, slow or returns garbage: counted, logged once per streak, one SourceDown,
never a crash. The daemon polls a real local HTTP server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from loguru import logger

from sentinel.config import load_config
from sentinel.daemon import Daemon
from tests.sink import WebhookSink
from tests.waiting import until


class BrokenScheduler:
    def __init__(self) -> None:
        self.mode = "500"
        self.hits = 0
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.mode == "500":
            return web.Response(status=500, text="Internal Server Error")
        if self.mode == "slow":
            await asyncio.sleep(2)
            return web.json_response({"version": "3.3.2"})
        return web.Response(status=200, body=b"<html>not json", content_type="application/json")

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner


@pytest.fixture
async def broken() -> AsyncIterator[BrokenScheduler]:
    b = BrokenScheduler()
    runner = await b.start()
    yield b
    await runner.cleanup()


RULES = """\
groups:
  - name: platform
    rules:
      - alert: SourceDown
        when: source_down
        severity: critical
"""


def config(tmp: Path, port: int, sink: WebhookSink) -> Path:
    (tmp / "rules.yaml").write_text(RULES)
    p = tmp / "sentinel.yaml"
    p.write_text(f"""\
sources:
  - name: flaky
    kind: airflow
    url: http://127.0.0.1:{port}
    username: u
    password: very-secret-pw
    poll_interval: 0.2s
    timeout: 0.5s
    max_requests_per_second: 50
    burst: 20
rule_files: [rules.yaml]
evaluation_interval: 0.2s
receivers:
  - name: sink
    webhook: {{url: "{sink.url}/am"}}
route: {{receiver: sink, group_wait: 0s, group_interval: 0.3s}}
store: {{path: state.db}}
server: {{listen: "127.0.0.1:0"}}
""")
    return p


def outcome_count(d: Daemon, outcome: str) -> float:
    v = d.metrics.registry.get_sample_value("sentinel_source_requests_total", {"source": "flaky", "outcome": outcome})
    return v or 0.0


@pytest.mark.parametrize(("mode", "outcome"), [("500", "http_5xx"), ("slow", "timeout"), ("garbage", "invalid_json")])
async def test_misbehaving_scheduler(mode: str, outcome: str, broken: BrokenScheduler, tmp_path: Path) -> None:
    broken.mode = mode
    sink = await WebhookSink().start()
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    d = Daemon(load_config(config(tmp_path, broken.port, sink)))
    try:
        await d.start()
        poller = d.pollers["flaky"]
        await until(lambda: poller.failures >= 3)
        assert outcome_count(d, outcome) >= 3
        assert d.metrics.registry.get_sample_value("sentinel_source_up", {"source": "flaky"}) == 0
        # exactly one SourceDown, however many failed polls
        await sink.wait_for(lambda ds: len(ds) >= 1, 10)
        await until(lambda: poller.failures >= 5)
        firing = [x for x in sink.deliveries if x.body["status"] == "firing"]
        assert len(firing) == 1
        assert firing[0].body["alerts"][0]["labels"]["component"] == "api"
        # logged once per streak, and never the password
        unreachable = [x for x in lines if "unreachable" in x]
        assert len(unreachable) == 1, lines
        assert not [x for x in lines if "very-secret-pw" in x]
        assert all(not t.done() for t in d._tasks), "a daemon task died"
    finally:
        logger.remove(handler)
        await d.stop()
        await sink.stop()
