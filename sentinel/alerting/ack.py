"""Acknowledgements: "someone is on it". An acknowledged alert gets no more repeats and no escalation.

An ack belongs to one firing episode: it is cleared when the alert resolves, so the next failure pages
again. It may also carry an expiry ("snooze for 2h"), after which the alert pages as if never acknowledged.
Who, why and when are kept for the API; acks are persisted so a restart does not re-page an acked alert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sentinel.alerting.alert import Alert
from sentinel.alerting.stage import FlushContext
from sentinel.clock import utc
from sentinel.store import Store

NS = "acks"
REPAGE = "repage"
# An ack whose alert vanished without resolving (its rule was deleted) must not live forever.
MAX_AGE = timedelta(days=7)
MAX_ACKS = 10_000


@dataclass(frozen=True)
class Ack:
    fingerprint: str
    by: str
    comment: str
    at: datetime
    expires: datetime | None = None

    def active(self, now: datetime) -> bool:
        return (self.expires is None or now < self.expires) and now - self.at < MAX_AGE

    def view(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "comment": self.comment,
            "at": self.at.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
        }

    def dump(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, **self.view()}

    @classmethod
    def restore(cls, d: dict[str, Any]) -> Ack:
        expires = d.get("expires")
        return cls(
            d["fingerprint"],
            d["by"],
            d["comment"],
            utc(datetime.fromisoformat(d["at"])),
            utc(datetime.fromisoformat(expires)) if expires else None,
        )


class AckBook:
    """Fingerprint -> active ack. Writes from the API are saved at once; clears are batched into `save`."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._acks: dict[str, Ack] = {}
        self._cleared: set[str] = set()
        # Acks that ran out while their alert still fires: the alert must page again even though the
        # notification log says the receiver was told (before the ack).
        self.lapsed: set[str] = set()
        self.listeners: list[Callable[[Ack], None]] = []

    async def load(self, now: datetime) -> None:
        if self.store is None:
            return
        stale = []
        for key, d in (await self.store.all(NS)).items():
            ack = Ack.restore(d)
            if ack.active(now):
                self._acks[key] = ack
            else:
                stale.append(key)
        await self.store.put_many(NS, {}, delete=stale)

    def get(self, fp: str, now: datetime) -> Ack | None:
        ack = self._acks.get(fp)
        if ack is None:
            return None
        if not ack.active(now):
            self.clear(fp)
            self.lapsed.add(fp)
            return None
        return ack

    def is_acked(self, fp: str, now: datetime) -> bool:
        return self.get(fp, now) is not None

    def next_expiry(self, fps: set[str], now: datetime) -> datetime | None:
        """When the earliest active ack among `fps` runs out (the alert pages again then)."""
        times = [a.expires for fp in fps if (a := self.get(fp, now)) is not None and a.expires is not None]
        return min(times, default=None)

    async def add(self, ack: Ack) -> None:
        if len(self._acks) >= MAX_ACKS and ack.fingerprint not in self._acks:
            oldest = min(self._acks.values(), key=lambda a: a.at)
            self.clear(oldest.fingerprint)
        self._acks[ack.fingerprint] = ack
        self._cleared.discard(ack.fingerprint)
        self.lapsed.discard(ack.fingerprint)
        if self.store is not None:
            await self.store.put(NS, ack.fingerprint, ack.dump())
        for listener in self.listeners:
            listener(ack)

    def clear(self, fp: str) -> None:
        """The alert resolved: its ack ends with the episode. Persisted by the next `save`."""
        self.lapsed.discard(fp)
        if self._acks.pop(fp, None) is not None:
            self._cleared.add(fp)

    async def save(self) -> None:
        if self.store is not None and self._cleared:
            gone, self._cleared = self._cleared, set()
            await self.store.put_many(NS, {}, delete=gone)

    def __len__(self) -> int:
        return len(self._acks)

    def __bool__(self) -> bool:
        return bool(self._acks or self.lapsed)


class AckStage:
    """Drops firing alerts someone acknowledged, so they are neither repeated nor escalated.

    Resolutions pass: the person who acked wants to hear that it is over. A group whose firing alerts are
    all acknowledged sends nothing (the sequence stops on an empty list).
    """

    def __init__(self, acks: AckBook) -> None:
        self.acks = acks

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        if not self.acks:
            return alerts  # nobody acknowledged anything: what the lines below would conclude
        kept = [a for a in alerts if a.resolved_at(ctx.now) or not self.acks.is_acked(a.fingerprint, ctx.now)]
        repage = frozenset(a.fingerprint for a in kept if a.fingerprint in self.acks.lapsed)
        if repage:
            ctx.extra[REPAGE] = repage  # read by the dedup stage: these must be sent even if "already told"
        return kept
