"""Aggregation groups on disk, so a restart flushes pending groups on their original schedule.

Only the dispatcher's own state is kept: alerts, timers, who was already notified and escalated. Routes
are looked up again by key in the (possibly reloaded) route tree when the groups are restored. A group is
a small row of timers plus one row per alert: alerts are immutable and a busy group is saved after every
change and flush, so rewriting its unchanged alerts each time was most of the cost of saving.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import orjson

from sentinel.alerting.alert import Alert
from sentinel.clock import utc

NS = "groups"
ALERTS_NS = "group_alerts"  # key: alert_key(group, fingerprint); rows written by older versions hold "alerts"


@functools.lru_cache(maxsize=4096)
def _iso(v: datetime) -> str:
    # A burst stamps thousands of alerts with the same receipt time; formatting it once per burst, not per
    # alert per save, was a visible share of saving.
    return v.isoformat()


def _t(v: datetime | None) -> str | None:
    return _iso(v) if v is not None else None


def _dt(v: str | datetime | None) -> datetime | None:
    if isinstance(v, datetime):  # a dump not yet through JSON
        return utc(v)
    return utc(datetime.fromisoformat(v)) if v else None


def dump_alert(a: Alert) -> dict[str, Any]:
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


def encode_alert(a: Alert) -> bytes:
    return orjson.dumps(dump_alert(a))


def alert_key(group_key: str, fp: str) -> str:
    return f"{group_key}\x1f{fp}"


def group_of(key: str) -> str:
    """alert row key -> its group's key (a fingerprint is hex, so the last separator is the one)."""
    return key.rpartition("\x1f")[0]


def restore_alert(d: dict[str, Any]) -> Alert:
    return Alert(
        labels=tuple((k, v) for k, v in d["labels"]),
        annotations=tuple((k, v) for k, v in d["annotations"]),
        starts_at=_dt(d["starts_at"]),
        ends_at=_dt(d["ends_at"]),
        generator_url=d.get("generator_url"),
        fingerprint=d["fingerprint"],
    )


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
    """A group's row; `alerts=None` leaves them out, for the dispatcher, which keeps one row per alert in
    ALERTS_NS (a save then writes only the alerts that changed, not every group whole)."""
    d: dict[str, Any] = {
        "kind": kind,
        "route_key": route_key,
        "receiver": receiver,
        "labels": labels,
        "next_flush": _iso(next_flush),
        "last_flush": _t(last_flush),
        "changed": changed,
        "notified_at": {fp: _iso(t) for fp, t in notified_at.items()},
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
