"""`python -m sentinel.sim`: run the simulator on its own, e.g. to point a real Sentinel at it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from sentinel.clock import SystemClock
from sentinel.sim.scenario import NEW_YORK, investment_world
from sentinel.sim.server import start_simulator
from sentinel.sim.simclock import SimClock


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    print("simulator stopped", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sentinel.sim",
        description="Serve simulated Airflow and Prefect APIs running the three investment pipelines.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8642, help="0 picks a free port (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--schedules",
        choices=("demo", "real"),
        default="demo",
        help="demo: every pipeline runs every 3 minutes; real: once per weekday after the NY close",
    )
    p.add_argument("--synthetic", type=int, default=0, help="add this many synthetic pipelines")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument(
        "--start",
        help="simulated start, ISO 8601; without an offset it is New York time (default: now)",
    )
    p.add_argument("--tick", type=float, default=0.2, help="real seconds between world advances")
    return p


async def _serve(args: argparse.Namespace) -> None:
    world = investment_world(seed=args.seed, synthetic=args.synthetic, demo=args.schedules == "demo")
    clock = SimClock(_start(args.start), speed=args.speed)
    server = await start_simulator(world, clock, host=args.host, port=args.port, tick=args.tick)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' event loop
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        _announce(server.airflow_url, server.prefect_url, clock, len(world.pipelines))
        await stop.wait()  # Ctrl-C cancels this; `finally` still shuts the server down cleanly
    finally:
        await server.stop()


def _start(text: str | None) -> datetime:
    if text is None:
        return SystemClock().now()
    start = datetime.fromisoformat(text)
    return start if start.tzinfo is not None else start.replace(tzinfo=ZoneInfo(NEW_YORK))


def _announce(airflow_url: str, prefect_url: str, clock: SimClock, pipelines: int) -> None:
    print(f"simulating {pipelines} pipelines from {clock.now().isoformat()} at {clock.speed:g}x", flush=True)
    print(f"  airflow: {airflow_url}", flush=True)
    print(f"  prefect: {prefect_url}", flush=True)
    if clock.speed != 1:
        # A real daemon judges deadlines and staleness by its own clock, which this one outruns.
        print("  note: speed != 1, so a real Sentinel's clock will disagree with the simulator's", flush=True)
    print("Ctrl-C to stop", flush=True)


if __name__ == "__main__":
    sys.exit(main())
