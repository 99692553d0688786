"""Prometheus' alert lifecycle, as a pure state machine over a frozen `now`.

inactive → pending (held for `for`) → firing → resolved (after `keep_firing_for` without the condition).
Resolved instances are kept for `RESOLVED_RETENTION` so the notification pipeline sees the resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sentinel.alerting.alert import Alert, LabelSet
from sentinel.clock import utc

RESOLVED_RETENTION = timedelta(minutes=15)


@dataclass
class Instance:
    fingerprint: str
    rule: str  # "<group>/<alert>", to scope updates to the rule that owns the instance
    labels: LabelSet
    annotations: LabelSet
    state: str  # pending | firing | resolved
    active_at: datetime
    last_active: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    # Fingerprints of the upstream root-cause alerts holding this one back (`depends_on`). Non-empty means
    # the dispatcher has not been told about this firing episode; see sentinel/rules/dependencies.py.
    inhibited_by: tuple[str, ...] = ()

    def to_alert(self) -> Alert:
        return Alert(
            labels=self.labels,
            annotations=self.annotations,
            starts_at=self.active_at,
            ends_at=self.resolved_at,
            fingerprint=self.fingerprint,
        )

    def dump(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(map(list, self.labels))
        d["annotations"] = list(map(list, self.annotations))
        d["inhibited_by"] = list(self.inhibited_by)
        for k in ("active_at", "last_active", "fired_at", "resolved_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d

    @classmethod
    def restore(cls, d: dict[str, Any]) -> Instance:
        def t(v: str | None) -> datetime | None:
            return utc(datetime.fromisoformat(v)) if v else None

        return cls(
            fingerprint=d["fingerprint"],
            rule=d["rule"],
            labels=tuple((k, v) for k, v in d["labels"]),
            annotations=tuple((k, v) for k, v in d["annotations"]),
            state=d["state"],
            active_at=t(d["active_at"]),  # type: ignore[arg-type]
            last_active=t(d["last_active"]),  # type: ignore[arg-type]
            fired_at=t(d["fired_at"]),
            resolved_at=t(d["resolved_at"]),
            inhibited_by=tuple(d.get("inhibited_by", ())),  # absent in state saved before depends_on
        )


def step(
    inst: Instance | None,
    active: bool,
    now: datetime,
    hold: timedelta,
    keep_firing_for: timedelta,
) -> Instance | None:
    """One evaluation of one instance. Returns the new instance state, or None to forget it.

    `inst` must already carry this evaluation's labels/annotations when active (the caller builds it).
    """
    if inst is None:
        return None
    if active:
        if inst.state == "resolved":
            inst.state, inst.active_at, inst.fired_at, inst.resolved_at = "pending", now, None, None
        inst.last_active = now
        if inst.state == "pending" and now - inst.active_at >= hold:
            inst.state, inst.fired_at = "firing", now
        return inst
    if inst.state == "pending":
        return None
    if inst.state == "firing":
        if keep_firing_for and now - inst.last_active < keep_firing_for:
            return inst
        inst.state, inst.resolved_at = "resolved", now
        return inst
    if inst.state == "resolved" and inst.resolved_at is not None and now - inst.resolved_at > RESOLVED_RETENTION:
        return None
    return inst
