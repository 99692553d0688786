"""The Prefect adapter's cursor: how far the change windows have been read, and what was already said.

It is a plain JSON-able dict (Observe persists it so a restart resumes):

    {"v": 1,
     "since": "2026-11-26T15:17:41+00:00",          # the next change window starts here (server time)
     "runs": {"<flow run id>": "<state id>"},       # state last emitted per run still returned by a read
     "open": ["<flow run id>"],                     # runs last seen queued/running/retrying/paused
     "tasks": {"<open flow run id>": {"<task run id>": "<state id>"}},
     "backlog": {"<flow run id>": "<pipeline>"}}    # task reads deferred by the per-cycle budget

`since` is the end of what was read completely, but never later than `overlap` before the server time of
the read: rows can still appear with times in that last stretch (late commits, client clocks), so it is
read again; a catch-up still far behind the live edge moves on without re-reading.

Prefect gives every state transition a new state id, so "this run's state id is already in `runs`" is
exactly "this state change was already emitted". An entry is kept only while some read of the last cycle
still returned its run (windows only move forward, so a run that dropped out of every read comes back
only with a new state): the set stays as small as the overlap and the active set, and it is bounded
anyway. Overflowing a bound can at worst repeat an update, never lose one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentinel.model import UtcDatetime

VERSION = 1
MAX_RUNS = 20_000
MAX_OPEN = 5_000
MAX_TASK_RUNS = 50_000
MAX_BACKLOG = 2_000


class Cursor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: int = VERSION
    since: UtcDatetime | None = None
    runs: dict[str, str] = Field(default_factory=dict)
    open: list[str] = Field(default_factory=list)
    tasks: dict[str, dict[str, str]] = Field(default_factory=dict)
    backlog: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def load(cls, raw: dict[str, Any] | None, source: str) -> Cursor:
        if not raw:
            return cls()
        try:
            cursor = cls.model_validate(raw)
        except ValidationError as exc:
            logger.warning(
                "source {}: unreadable Prefect cursor ({} problems); starting afresh", source, exc.error_count()
            )
            return cls()
        if cursor.v != VERSION:
            logger.warning("source {}: Prefect cursor version {} is not {}; starting afresh", source, cursor.v, VERSION)
            return cls()
        return cursor

    def dump(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "since": self.since.isoformat() if self.since else None,
            "runs": _newest(self.runs, MAX_RUNS),
            "open": self.open[-MAX_OPEN:],
            "tasks": _cap_tasks(self.tasks, MAX_TASK_RUNS),
            "backlog": _newest(self.backlog, MAX_BACKLOG),
        }


def _newest(d: dict[str, str], limit: int) -> dict[str, str]:
    # Insertion order is observation order, so the tail is what was seen most recently.
    if len(d) <= limit:
        return dict(d)
    return dict(list(d.items())[-limit:])


def _cap_tasks(tasks: dict[str, dict[str, str]], limit: int) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    total = 0
    for run_id, entries in reversed(list(tasks.items())):
        if total + len(entries) > limit:
            break
        out[run_id] = dict(entries)
        total += len(entries)
    return dict(reversed(list(out.items())))


def later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
