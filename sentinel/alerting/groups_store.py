"""Aggregation groups on disk, so a restart flushes pending groups on their original schedule.

Only the dispatcher's own state is kept: alerts, timers, who was already notified and escalated. Routes
are looked up again by key in the (possibly reloaded) route tree when the groups are restored. A group is
a small row of timers plus its alerts in chunk rows: a save writes the group's new and changed alerts as one
new chunk, never its unchanged ones (a busy group is saved after every change, and rewriting all of its
alerts each time was most of the cost of saving), and one row per save, not per alert (a burst of 10,000
alerts into 1,000 groups is 1,000 rows, and half the CPU of a row per alert). A chunk whose alerts all
changed or left is deleted; once a group's chunks hold more superseded alerts than current ones, the group
is rewritten as one chunk, so the garbage stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from sentinel.alerting.alert import Alert
from sentinel.clock import utc

NS = "groups"
ALERTS_NS = "group_alerts"  # key: chunk_key(group, n); alert_key(group, fingerprint) in older state files


def _dt(v: str | datetime | None) -> datetime | None:
    if isinstance(v, datetime):  # a dump not yet through JSON
        return utc(v)
    return utc(datetime.fromisoformat(v)) if v else None


def dump_alert(a: Alert) -> dict[str, Any]:
    """An alert in a group row written whole (older versions; tests write them to prove they restore)."""
    return {
        # Tuples as they are: orjson writes them as the same JSON arrays, and copying every pair into a list
        # was most of the cost of saving large groups.
        "labels": a.labels,
        "annotations": a.annotations,
        # Datetimes as they are: orjson writes the same RFC 3339 text as isoformat(), in C.
        "starts_at": a.starts_at,
        "ends_at": a.ends_at,
        "generator_url": a.generator_url,
        "fingerprint": a.fingerprint,
    }


def encode_chunk(alerts: list[Alert]) -> bytes:
    # Positional, not keyed: a chunk is read only here. Tuples and datetimes go to orjson as they are.
    return orjson.dumps(
        [(a.labels, a.annotations, a.starts_at, a.ends_at, a.generator_url, a.fingerprint) for a in alerts]
    )


def alert_key(group_key: str, fp: str) -> str:
    """The row of one alert, as versions before chunks wrote them."""
    return f"{group_key}\x1f{fp}"


def chunk_key(group_key: str, n: int) -> str:
    return f"{group_key}\x1f#{n}"


def group_of(key: str) -> str:
    """alert or chunk row key -> its group's key (fingerprints are hex, so the last separator is the one)."""
    return key.rpartition("\x1f")[0]


def restore_alert(d: dict[str, Any] | list[Any]) -> Alert:
    if isinstance(d, list):
        labels, annotations, starts, ends, url, fp = d
        return Alert(
            tuple((k, v) for k, v in labels), tuple((k, v) for k, v in annotations), _dt(starts), _dt(ends), url, fp
        )
    return Alert(
        labels=tuple((k, v) for k, v in d["labels"]),
        annotations=tuple((k, v) for k, v in d["annotations"]),
        starts_at=_dt(d["starts_at"]),
        ends_at=_dt(d["ends_at"]),
        generator_url=d.get("generator_url"),
        fingerprint=d["fingerprint"],
    )


@dataclass(frozen=True)
class OnDisk:
    """Which alert objects of a group are on disk, and in which chunk. Replaced whole by each save that
    succeeds, so a failed one leaves the record of what is really there."""

    alerts: dict[str, tuple[Alert, int]] = field(default_factory=dict)  # fingerprint -> (alert written, chunk)
    live: dict[int, int] = field(default_factory=dict)  # chunk -> how many of its alerts are current
    size: dict[int, int] = field(default_factory=dict)  # chunk -> how many it holds
    next: int = 0

    def keys(self, group_key: str) -> list[str]:
        return [chunk_key(group_key, n) for n in self.live]

    def plan(self, group_key: str, current: dict[str, Alert]) -> tuple[OnDisk, dict[str, bytes], list[str]]:
        """What to write so disk holds `current`: (the record after the save, rows to put, rows to delete)."""
        fresh = [a for fp, a in current.items() if (w := self.alerts.get(fp)) is None or w[0] is not a]
        stale = [a.fingerprint for a in fresh if a.fingerprint in self.alerts]
        if len(self.alerts) - len(stale) > len(current) - len(fresh):  # some left the group
            stale += [fp for fp in self.alerts if fp not in current]
        if not fresh and not stale:
            return self, {}, []
        alerts, live, size = dict(self.alerts), dict(self.live), dict(self.size)
        for fp in stale:
            live[alerts.pop(fp)[1]] -= 1
        if sum(size.values()) - len(alerts) > len(alerts):  # more superseded alerts than current: rewrite
            fresh, dels = list(current.values()), list(live)
            alerts, live, size = {}, {}, {}
        else:
            dels = [n for n, c in live.items() if c == 0]
            for n in dels:
                del live[n], size[n]
        puts: dict[str, bytes] = {}
        n = self.next
        if fresh:
            puts[chunk_key(group_key, n)] = encode_chunk(fresh)
            live[n] = size[n] = len(fresh)
            alerts.update((a.fingerprint, (a, n)) for a in fresh)
            n += 1
        return OnDisk(alerts, live, size, n), puts, [chunk_key(group_key, d) for d in dels]

    @classmethod
    def restore(
        cls, group_key: str, rows: list[tuple[str, Any]], order: list[str]
    ) -> tuple[list[Alert], OnDisk, list[str], list[str]]:
        """A group's rows -> (its alerts in `order`, the record of them, rows of one alert each, chunk rows that
        hold nothing current). One-alert rows are what older versions wrote: their alerts count as not on
        disk, so the next save moves them into a chunk (and should delete those rows in the same transaction)."""
        chunks: list[tuple[int, list[Any]]] = []
        latest: dict[str, tuple[Alert, int]] = {}
        legacy: list[str] = []
        for key, value in rows:
            suffix = key.rpartition("\x1f")[2]
            if suffix.startswith("#") and isinstance(value, list):
                chunks.append((int(suffix[1:]), value))
            else:
                legacy.append(key)
                a = restore_alert(value)
                latest[a.fingerprint] = (a, -1)
        chunks.sort(key=lambda c: c[0])
        for n, values in chunks:
            for v in values:
                a = restore_alert(v)
                latest[a.fingerprint] = (a, n)
        wanted = {fp: i for i, fp in enumerate(order)}
        kept = sorted((x for fp, x in latest.items() if fp in wanted), key=lambda x: wanted[x[0].fingerprint])
        on_disk = {a.fingerprint: (a, n) for a, n in kept if n >= 0}
        live: dict[int, int] = {}
        for _, n in on_disk.values():
            live[n] = live.get(n, 0) + 1
        size = {n: len(values) for n, values in chunks if n in live}
        dead = [chunk_key(group_key, n) for n, _ in chunks if n not in live]
        nxt = chunks[-1][0] + 1 if chunks else 0
        return [a for a, _ in kept], cls(on_disk, live, size, nxt), legacy, dead


def dump_group(
    *,
    kind: str,
    route_key: str,
    receiver: str,
    labels: dict[str, str],
    alerts: list[Alert] | None,
    next_flush: datetime,
    last_flush: datetime | None,
    changed: bool,
    notified_at: dict[str, datetime],
    escalated: set[str],
    order: list[str] | None = None,
) -> dict[str, Any]:
    """A group's row; `alerts=None` leaves them out, for the dispatcher, which keeps them in chunk rows in
    ALERTS_NS (a save then writes only the alerts that changed, not every group whole)."""
    d: dict[str, Any] = {
        "kind": kind,
        "route_key": route_key,
        "receiver": receiver,
        "labels": labels,
        # Datetimes as they are: orjson writes the same RFC 3339 text as isoformat(), in C.
        "next_flush": next_flush,
        "last_flush": last_flush,
        "changed": changed,
        "notified_at": notified_at,
        "escalated": sorted(escalated),
    }
    if alerts is not None:
        d["alerts"] = [dump_alert(a) for a in alerts]
    if order is not None:
        d["order"] = order
    return d


def restore_times(d: dict[str, Any]) -> tuple[datetime, datetime | None, dict[str, datetime]]:
    next_flush = _dt(d["next_flush"])
    assert next_flush is not None
    return (
        next_flush,
        _dt(d.get("last_flush")),
        {fp: utc(datetime.fromisoformat(t)) for fp, t in d["notified_at"].items()},
    )
