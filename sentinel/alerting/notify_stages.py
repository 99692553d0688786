"""The per-integration stages: dedup against the log, deliver with retries, record what was sent."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from loguru import logger

from sentinel.alerting.ack import REPAGE
from sentinel.alerting.alert import Alert
from sentinel.alerting.nflog import Entry, NotificationLog, entry_key
from sentinel.alerting.stage import FlushContext, Stage
from sentinel.notify.base import DeliveryError, Integration


def needs_update(entry: Entry | None, firing: frozenset[str], resolved: frozenset[str], ctx: FlushContext) -> bool:
    """Alertmanager's decision table (notify/notify.go DedupStage.needsUpdate)."""
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    # All resolved: say so whether or not send_resolved, so the log's firing set is cleared. If the receiver
    # was never told of them (they fired and resolved between two flushes) there is nothing to say, ever:
    # a resolved-only group must not "repeat".
    if not firing:
        return bool(entry.firing)
    if firing & ctx.extra.get(REPAGE, frozenset()):  # type: ignore[operator]
        return True  # an acknowledgement ran out: page again
    if ctx.send_resolved and not resolved <= entry.resolved:
        return True
    return ctx.now - entry.timestamp >= ctx.repeat_interval


def _split(alerts: list[Alert], now: datetime) -> tuple[frozenset[str], frozenset[str]]:
    firing: list[str] = []
    resolved: list[str] = []
    for a in alerts:
        (resolved if a.ends_at is not None and a.ends_at <= now else firing).append(a.fingerprint)
    return frozenset(firing), frozenset(resolved)


class DedupStage:
    def __init__(self, nflog: NotificationLog) -> None:
        self.nflog = nflog

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        firing, resolved = _split(alerts, ctx.now)
        entry = self.nflog.query(entry_key(ctx.group_key, ctx.receiver, ctx.integration))
        if not needs_update(entry, firing, resolved, ctx):
            return []
        if not ctx.send_resolved:
            kept = [a for a in alerts if not a.resolved_at(ctx.now)]
            # Nothing firing and resolutions unwanted: record the all-clear without sending it.
            if not kept:
                await self.nflog.log(entry_key(ctx.group_key, ctx.receiver, ctx.integration), firing, resolved, ctx.now)
            return kept
        return alerts


class Outcome(Protocol):
    def __call__(self, receiver: str, outcome: str, seconds: float) -> None: ...


class RetryStage:
    """Deliver, retrying retryable failures with exponential backoff and jitter until the flush deadline."""

    def __init__(
        self,
        integration: Integration,
        *,
        on_outcome: Outcome | None = None,
        first_delay: float = 0.5,
        max_delay: float = 60.0,
        factor: float = 1.5,
        rng: random.Random | None = None,
        paid: bool = False,
    ) -> None:
        self.integration = integration
        self.paid = paid
        self.on_outcome = on_outcome
        self.first_delay, self.max_delay, self.factor = first_delay, max_delay, factor
        self._rng = rng or random.Random()

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = (ctx.deadline - ctx.now).total_seconds() if ctx.deadline else 300.0
        delay, attempt = self.first_delay, 0
        while True:
            attempt += 1
            try:
                await self.integration.notify(ctx, alerts)
            except DeliveryError as exc:
                elapsed = loop.time() - started
                # A paid send that may have arrived is not retried; the intent stage records it as sent.
                ambiguous = self.paid and exc.maybe_delivered
                if not exc.retryable or ambiguous or elapsed + delay > budget:
                    self._report(ctx, "failed", loop.time() - started)
                    logger.warning(
                        "notification to {}/{} failed after {} attempt(s){}: {}",
                        ctx.receiver,
                        self.integration.name,
                        attempt,
                        "" if exc.retryable else " (permanent)",
                        exc,
                    )
                    raise
                self._report(ctx, "retried", 0.0)
                await asyncio.sleep(delay * (0.5 + self._rng.random()))  # jitter keeps receivers from stampedes
                delay = min(self.max_delay, delay * self.factor)
                continue
            self._report(ctx, "ok", loop.time() - started)
            return alerts

    def _report(self, ctx: FlushContext, outcome: str, seconds: float) -> None:
        if self.on_outcome is not None:
            self.on_outcome(ctx.receiver, outcome, seconds)


class RateLimiter:
    """At most `per_minute` sends in any 60 s; a send over the limit is given the first free slot (it waits,
    it is never dropped). Slots are reserved in order, so concurrent flushes queue fairly."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._slots: deque[float] = deque(maxlen=per_minute)

    def reserve(self, now: float) -> float:
        """Reserve the next slot at monotonic time `now`; returns how many seconds to wait for it."""
        slot = now
        if len(self._slots) == self.per_minute:
            slot = max(now, self._slots[0] + 60.0)
        self._slots.append(slot)
        return slot - now


class RateLimitStage:
    def __init__(
        self,
        limiter: RateLimiter,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limiter = limiter
        self._monotonic = monotonic
        self._sleep = sleep

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        wait = self.limiter.reserve(self._monotonic())
        if wait > 0:
            logger.info("receiver {} is over its rate limit: holding a notification {:.1f}s", ctx.receiver, wait)
            await self._sleep(wait)
        return alerts


class FirstSuccessStage:
    """A fallback chain: deliver through the first stage that succeeds, in the configured order."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        last: Exception | None = None
        # Each integration gets an equal share of the retry budget, so a flaky first one cannot use it all.
        share = ctx
        if ctx.deadline is not None:
            share = replace(ctx, deadline=ctx.now + (ctx.deadline - ctx.now) / len(self.stages))
        for i, stage in enumerate(self.stages):
            try:
                return await stage(share, alerts)
            except DeliveryError as exc:
                last = exc
                if i + 1 < len(self.stages):
                    logger.warning("receiver {}: falling back to its next integration after: {}", ctx.receiver, exc)
        assert last is not None
        raise last


class AnyDeliversStage:
    """One tier of a tiered fallback: every integration of the tier at once; delivered if any one delivered.

    Apprise's `notify(tag=…)` sends to all URLs with the tag the same way; here each keeps its own retries."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        results = await asyncio.gather(*(stage(ctx, alerts) for stage in self.stages), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, DeliveryError):
                raise r
        if all(isinstance(r, DeliveryError) for r in results):
            raise next(r for r in reversed(results) if isinstance(r, DeliveryError))
        return alerts


class SetNotifiesStage:
    def __init__(self, nflog: NotificationLog) -> None:
        self.nflog = nflog

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        firing, resolved = _split(alerts, ctx.now)
        await self.nflog.log(entry_key(ctx.group_key, ctx.receiver, ctx.integration), firing, resolved, ctx.now)
        return alerts
