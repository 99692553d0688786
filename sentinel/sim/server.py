"""Serve a simulated world over HTTP: Airflow's API under /airflow/, Prefect's under /prefect/api/."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiohttp import web
from loguru import logger

from sentinel.clock import Clock
from sentinel.sim.world import World

__all__ = ["SimServer", "start_simulator"]


@dataclass
class SimServer:
    """A running simulator. URLs are what a Sentinel source's `url:` takes for each kind."""

    world: World
    clock: Clock
    url: str  # http://host:port, the root both faces hang from
    airflow_url: str
    prefect_url: str
    _runner: web.AppRunner
    _ticker: asyncio.Task[None]

    async def stop(self) -> None:
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        await self._runner.cleanup()


async def start_simulator(
    world: World,
    clock: Clock,
    host: str = "127.0.0.1",
    port: int = 0,
    tick: float = 0.2,
) -> SimServer:
    """Serve `world` on host:port (0 picks a free port) and advance it to `clock.now()` every `tick` s."""
    # Imported here: the faces are separate modules and need not exist to import this one.
    from sentinel.sim.airflow_api import airflow_app
    from sentinel.sim.prefect_api import prefect_app

    app = web.Application()
    app.add_subapp("/airflow/", airflow_app(world, clock))
    app.add_subapp("/prefect/", prefect_app(world, clock))
    # The first advance registers every schedule; do it before serving so no request sees an empty world.
    world.advance(clock.now())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    base = f"http://{_url_host(host)}:{runner.addresses[0][1]}"
    ticker = asyncio.create_task(_keep_advancing(world, clock, tick), name="sim-advance")
    return SimServer(world, clock, base, f"{base}/airflow", f"{base}/prefect/api", runner, ticker)


async def _keep_advancing(world: World, clock: Clock, tick: float) -> None:
    while True:
        try:
            world.advance(clock.now())
        except Exception:
            # A bug in the dynamics must not take the API down with it: log and keep serving.
            logger.exception("simulator: advancing the world failed")
        await asyncio.sleep(tick)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
