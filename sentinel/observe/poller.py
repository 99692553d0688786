"""One poll loop per source: poll, hand the result on, back off while the source is in trouble.

Trouble is logged once per streak (first failure, then the recovery), never once per cycle, and an
adapter bug is treated like an unreachable source rather than killing the loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from loguru import logger

from adapters.base import Adapter
from sentinel.clock import Clock
from sentinel.model import PollResult, SourceHealth, SourceSpec
from sentinel.store import Store

CURSORS = "cursors"
MAX_BACKOFF = timedelta(minutes=2)


def backoff(interval: timedelta, failures: int, rng: random.Random) -> float:
    """Seconds to wait after `failures` failed cycles in a row: doubling, capped, jittered ±20%."""
    base = interval.total_seconds()
    if failures <= 0:
        return base
    cap = max(MAX_BACKOFF.total_seconds(), base)
    return min(cap, base * 2 ** (failures - 1)) * (0.8 + 0.4 * rng.random())


class SourcePoller:
    def __init__(
        self,
        spec: SourceSpec,
        adapter: Adapter,
        store: Store,
        clock: Clock,
        on_result: Callable[[PollResult], Awaitable[None]],
        on_duration: Callable[[str, float], None] | None = None,
    ) -> None:
        self.spec = spec
        self.adapter = adapter
        self.store = store
        self.clock = clock
        self.on_result = on_result
        self.on_duration = on_duration
        self.failures = 0
        self.cycles = 0
        self._rng = random.Random()

    async def poll_once(self, cursor: dict[str, Any]) -> PollResult:
        started = time.monotonic()
        try:
            result = await self.adapter.poll(cursor)
        except Exception as exc:
            logger.opt(exception=exc).error("adapter for source {} raised; treating the source as down", self.spec.name)
            health = SourceHealth(
                source=self.spec.name,
                reachable=False,
                observed_at=self.clock.now(),
                error=f"adapter error: {type(exc).__name__}",
            )
            result = PollResult(source=self.spec.name, health=health, cursor=cursor)
        if self.on_duration is not None:
            self.on_duration(self.spec.name, time.monotonic() - started)
        return result

    async def run(self) -> None:
        cursor: dict[str, Any] = await self.store.get(CURSORS, self.spec.name) or {}
        while True:
            started = time.monotonic()
            result = await self.poll_once(cursor)
            self.cycles += 1
            if result.health.reachable:
                if self.failures:
                    logger.info("source {} is reachable again after {} failed poll(s)", self.spec.name, self.failures)
                self.failures = 0
            else:
                self.failures += 1
                if self.failures == 1:
                    logger.warning("source {} unreachable: {}", self.spec.name, result.health.error)
            try:
                await self.on_result(result)
            except Exception as exc:  # a downstream bug must not stop polling
                logger.opt(exception=exc).error("handling poll result of {} failed", self.spec.name)
            else:
                # The cursor moves only after the result is safely handled (runs persisted first).
                if result.health.reachable and result.cursor != cursor:
                    cursor = result.cursor
                    await self.store.put(CURSORS, self.spec.name, cursor)
            wait = backoff(self.spec.poll_interval, self.failures, self._rng) - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, wait))
