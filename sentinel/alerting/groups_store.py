"""Aggregation groups on disk, so a restart flushes pending groups on their original schedule.

Only the dispatcher's own state is kept: alerts, timers, who was already notified and escalated. Routes
are looked up again by key in the (possibly reloaded) route tree when the groups are restored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sentinel.alerting.alert import Alert
from sentinel.clock import utc

NS = "groups"


def _t(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


def _dt(v: str | None) -> datetime | None:
    return utc(datetime.fromisoformat(v)) if v else None


def dump_alert(a: Alert) -> dict[str, Any]:
    return {
        # Tuples as they are: orjson writes them as the same JSON arrays, and copying every pair into a list
        # was most of the cost of saving large groups.
        "labels": a.labels,
        "annotations": a.annotations,
        "starts_at": _t(a.starts_at),
        "ends_at": _t(a.ends_at),
        "generator_url": a.generator_url,
        "fingerprint": a.fingerprint,
    }


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
    alerts: list[Alert],
    next_flush: datetime,
    last_flush: datetime | None,
    changed: bool,
    notified_at: dict[str, datetime],
    escalated: set[str],
) -> dict[str, Any]:
    return {
        "kind": kind,
        "route_key": route_key,
        "receiver": receiver,
        "labels": labels,
        "alerts": [dump_alert(a) for a in alerts],
        "next_flush": next_flush.isoformat(),
        "last_flush": _t(last_flush),
        "changed": changed,
        "notified_at": {fp: t.isoformat() for fp, t in notified_at.items()},
        "escalated": sorted(escalated),
    }


def restore_times(d: dict[str, Any]) -> tuple[datetime, datetime | None, dict[str, datetime]]:
    next_flush = _dt(d["next_flush"])
    assert next_flush is not None
    return (
        next_flush,
        _dt(d.get("last_flush")),
        {fp: utc(datetime.fromisoformat(t)) for fp, t in d["notified_at"].items()},
    )
