"""The Airflow cursor: per change feed, a high-water mark on the server's clock and what was reported.

    {"v": 1,
     "runs":  {"hwm": "2026-11-26T15:16:52+00:00", "seen": {"<until ISO>": "<digest> <digest> ..."}},
     "tasks": {"hwm": ..., "seen": {...}}}

`hwm` is the end of the last window read completely; the next cycle reads from hwm - overlap. `seen` holds
12-hex-digit digests of (row identity, reported content) for changes read inside the overlap, grouped by
the end of the window they were read in, and pruned once no future window can return them again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel

from adapters.windows import SeenSet, fingerprint
from sentinel.clock import utc

VERSION = 1


class Feed:
    def __init__(self, hwm: datetime | None = None, seen: SeenSet | None = None) -> None:
        self.hwm = hwm
        self.seen = seen if seen is not None else SeenSet()

    def mark(self, until: datetime, *identity_and_content: Any) -> bool:
        """Record a change given by its parts; True if it was not seen before."""
        return self.seen.add(fingerprint(*identity_and_content), until)

    def fresh(self, kind: str, updates: list[Any], until: datetime) -> list[Any]:
        """The updates not reported before (same row, same content), recording them as seen until `until`."""
        out = []
        for u in updates:
            if self.seen.add(_digest(kind, u), until):
                out.append(u)
        return out


def _digest(kind: str, update: BaseModel) -> str:
    # updated_at is a stand-in derived from other fields (Airflow does not return it): leave it out.
    content = orjson.dumps(update.model_dump(mode="json", exclude={"updated_at"}), option=orjson.OPT_SORT_KEYS)
    return fingerprint(kind, content)


class CursorState:
    def __init__(self, overlap: timedelta, runs: Feed | None = None, tasks: Feed | None = None) -> None:
        self.overlap = overlap
        self.runs = runs or Feed()
        self.tasks = tasks or Feed()

    @classmethod
    def load(cls, cursor: dict[str, Any], overlap: timedelta) -> CursorState:
        if not isinstance(cursor, dict) or cursor.get("v") != VERSION:
            return cls(overlap)  # empty or from an older format: start afresh (first-poll lookback)
        return cls(overlap, _load_feed(cursor.get("runs")), _load_feed(cursor.get("tasks")))

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": VERSION}
        for name, feed in (("runs", self.runs), ("tasks", self.tasks)):
            if feed.hwm is not None:
                feed.seen.prune(feed.hwm - self.overlap)
            out[name] = {"hwm": feed.hwm.isoformat() if feed.hwm else None, "seen": feed.seen.to_json()}
        return out


def _load_feed(raw: Any) -> Feed:
    if not isinstance(raw, dict):
        return Feed()
    hwm = None
    if isinstance(raw.get("hwm"), str):
        try:
            hwm = utc(datetime.fromisoformat(raw["hwm"]))
        except ValueError:
            hwm = None
    return Feed(hwm, SeenSet.from_json(raw.get("seen")))
