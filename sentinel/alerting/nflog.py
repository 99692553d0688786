"""The notification log: what each receiver integration was last told about each group.

It only records and answers queries; the dedup stage decides. Entries are persisted so a restart
neither re-sends what was sent nor forgets to send a resolution. Writes are group-committed: `log` returns
once its entry is on disk, but the entries logged while a write is running go to disk together in the next
one, a moment later (a busy flush logs hundreds of groups at once, and a transaction each was a visible share
of its CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from sentinel.clock import utc
from sentinel.store import Store

NS = "nflog"
RETENTION = timedelta(hours=120)
COALESCE_S = 0.002  # a flush of 1,000 groups: 40 transactions -> 16, half the store's CPU for them
_NONE: Mapping[str, Entry] = MappingProxyType({})


@dataclass(frozen=True)
class Entry:
    firing: frozenset[str]
    resolved: frozenset[str]
    timestamp: datetime

    def dump(self) -> dict[str, Any]:
        return {
            "firing": sorted(self.firing),
            "resolved": sorted(self.resolved),
            "timestamp": self.timestamp.isoformat(),
        }

    @classmethod
    def restore(cls, d: dict[str, Any]) -> Entry:
        return cls(frozenset(d["firing"]), frozenset(d["resolved"]), utc(datetime.fromisoformat(d["timestamp"])))


def entry_key(group_key: str, receiver: str, integration: str) -> str:
    return f"{receiver}\x1f{integration}\x1f{group_key}"


def split_key(key: str) -> tuple[str, str, str]:
    """entry key -> (receiver, integration, group_key)."""
    receiver, integration, group_key = key.split("\x1f", 2)
    return receiver, integration, group_key


class NotificationLog:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self.entries: dict[str, Entry] = {}
        # (group_key, receiver) -> integration -> entry: the dispatcher asks per group when it was last told.
        self._by_group: dict[tuple[str, str], dict[str, Entry]] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._next_write: asyncio.Future[None] | None = None  # resolved when the pending entries are on disk
        self._writer: asyncio.Task[None] | None = None

    def _index(self, key: str, entry: Entry) -> None:
        if key.count("\x1f") < 2:
            return  # not an entry_key (a caller's own key): nothing to index by group
        receiver, integration, group_key = split_key(key)
        self._by_group.setdefault((group_key, receiver), {})[integration] = entry

    def for_group(self, group_key: str, receiver: str) -> Mapping[str, Entry]:
        """integration -> entry, live: read it before awaiting anything."""
        return self._by_group.get((group_key, receiver), _NONE)

    async def load(self, now: datetime) -> None:
        if self.store is None:
            return
        stale = []
        for k, d in (await self.store.all(NS)).items():
            e = Entry.restore(d)
            if now - e.timestamp > RETENTION:
                stale.append(k)
            else:
                self.entries[k] = e
                self._index(k, e)
        await self.store.put_many(NS, {}, delete=stale)

    def query(self, key: str) -> Entry | None:
        return self.entries.get(key)

    async def log(self, key: str, firing: frozenset[str], resolved: frozenset[str], now: datetime) -> None:
        entry = Entry(firing, resolved, now)
        self.entries[key] = entry
        self._index(key, entry)
        if self.store is not None:
            await self._persist(key, entry.dump())

    async def drain(self) -> None:
        """Wait for entries still queued for disk (the daemon's stop, before the store closes)."""
        while self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    async def _persist(self, key: str, value: dict[str, Any]) -> None:
        self._pending[key] = value
        if self._next_write is None:
            self._next_write = asyncio.get_running_loop().create_future()
        done = self._next_write
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        # shield: a cancelled flush must not cancel the write the other flushes wait for
        await asyncio.shield(done)

    async def _write_pending(self) -> None:
        assert self.store is not None
        while self._pending:
            # Let the flushes running alongside log too: their entries share a namespace's few pages, which every
            # transaction rewrites whole, so one transaction for all of them costs little more than one each.
            await asyncio.sleep(COALESCE_S)
            batch, self._pending = self._pending, {}
            done, self._next_write = self._next_write, None
            assert done is not None
            try:
                await self.store.put_many(NS, batch)
            except asyncio.CancelledError:
                done.cancel()
                raise
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
                    done.exception()  # each waiting `log` re-raises it; no "never retrieved" warning
            else:
                if not done.done():
                    done.set_result(None)
