"""Exactly-once delivery to paid channels (SMS, voice) across crashes.

Before a paid integration is called, an INTENT record (what is about to be sent, to whom) is committed and
fsync'd; after it succeeds the notification log is written and the intent removed. A crash in between leaves
an intent with no matching log entry. On start, such an intent is reconciled: the message may or may not
have left, and a second SMS costs money and wakes someone twice, so it is NOT re-sent — the log entry is
written as if it had been delivered, and the event is logged and counted ("possibly delivered before
crash"). Free channels write no intent: their log entry is simply missing after a crash, so the dedup stage
sends again (at least once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loguru import logger

from sentinel.alerting.alert import Alert
from sentinel.alerting.nflog import NotificationLog, entry_key, split_key
from sentinel.alerting.stage import FlushContext, Stage
from sentinel.clock import utc
from sentinel.notify.base import DeliveryError
from sentinel.store import Store

NS = "intents"


@dataclass(frozen=True)
class Intent:
    key: str  # the notification-log entry key: receiver, integration, group
    firing: frozenset[str]
    resolved: frozenset[str]
    at: datetime

    def dump(self) -> dict[str, Any]:
        return {"firing": sorted(self.firing), "resolved": sorted(self.resolved), "at": self.at.isoformat()}

    @classmethod
    def restore(cls, key: str, d: dict[str, Any]) -> Intent:
        return cls(key, frozenset(d["firing"]), frozenset(d["resolved"]), utc(datetime.fromisoformat(d["at"])))


class IntentLog:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store

    async def begin(self, intent: Intent) -> None:
        if self.store is not None:
            await self.store.put_durable(NS, intent.key, intent.dump())

    async def end(self, key: str) -> None:
        if self.store is not None:
            await self.store.put_many(NS, {}, delete=[key])

    async def reconcile(
        self, nflog: NotificationLog, on_possibly_delivered: Callable[[str, str], None] | None = None
    ) -> list[Intent]:
        """Settle the intents a crash left behind; returns the ones that may have been delivered."""
        if self.store is None:
            return []
        unsure: list[Intent] = []
        done: list[str] = []
        for key, d in (await self.store.all(NS)).items():
            intent = Intent.restore(key, d)
            entry = nflog.query(key)
            done.append(key)
            if entry is not None and entry.timestamp >= intent.at:
                continue  # delivered and logged; only the clean-up was lost
            receiver, integration, group_key = split_key(key)
            logger.warning(
                "notification to {}/{} for group {} was in flight at the crash: possibly delivered before "
                "crash; not re-sending to a paid channel ({} firing, {} resolved)",
                receiver,
                integration,
                group_key,
                len(intent.firing),
                len(intent.resolved),
            )
            await nflog.log(key, intent.firing, intent.resolved, intent.at)
            if on_possibly_delivered is not None:
                on_possibly_delivered(receiver, integration)
            unsure.append(intent)
        await self.store.put_many(NS, {}, delete=done)
        return unsure


class IntentStage:
    """Wraps the delivery stage of a paid integration: intent committed before, removed after.

    A delivery that failed for certain removes its intent too (nothing left, the next flush retries);
    only a crash leaves one behind.
    """

    def __init__(
        self, intents: IntentLog, deliver: Stage, on_possibly_delivered: Callable[[str], None] | None = None
    ) -> None:
        self.intents = intents
        self.deliver = deliver
        self.on_possibly_delivered = on_possibly_delivered

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        key = entry_key(ctx.group_key, ctx.receiver, ctx.integration)
        firing = frozenset(a.fingerprint for a in alerts if not a.resolved_at(ctx.now))
        resolved = frozenset(a.fingerprint for a in alerts if a.resolved_at(ctx.now))
        await self.intents.begin(Intent(key, firing, resolved, ctx.now))
        try:
            return await self.deliver(ctx, alerts)
        except DeliveryError as exc:
            if exc.maybe_delivered:
                # Sent, unanswered: treat as delivered (the log is written next) rather than risk a duplicate.
                logger.warning("{}/{}: {}; possibly delivered, not re-sending", ctx.receiver, ctx.integration, exc)
                if self.on_possibly_delivered is not None:
                    self.on_possibly_delivered(ctx.receiver)
                return alerts
            await self.intents.end(key)
            raise
        except Exception:
            await self.intents.end(key)
            raise


class EndIntentStage:
    """After the log entry is written: the intent is fulfilled."""

    def __init__(self, intents: IntentLog) -> None:
        self.intents = intents

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        await self.intents.end(entry_key(ctx.group_key, ctx.receiver, ctx.integration))
        return alerts
