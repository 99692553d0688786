"""A real local webhook sink: an aiohttp server on 127.0.0.1 that records every POST it receives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Delivery:
    path: str
    body: Any
    received: float  # time.time()
    headers: dict[str, str]


class WebhookSink:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.status = 200  # what to answer; tests flip it to exercise retries
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        if self.status < 300:
            self.deliveries.append(Delivery(request.path, body, time.time(), dict(request.headers)))
        return web.Response(status=self.status, text="ok")

    async def start(self) -> WebhookSink:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def on(self, path: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == path]

    async def wait_for(self, predicate: Callable[[list[Delivery]], bool], timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while not predicate(self.deliveries):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sink did not see the expected deliveries within {timeout}s; got {len(self.deliveries)}: "
                    + "; ".join(str(d.body)[:300] for d in self.deliveries[-5:])
                )
            await asyncio.sleep(0.05)
        return self.deliveries
