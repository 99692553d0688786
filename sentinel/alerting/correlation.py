"""Correlation: a burst of alerts with one root cause becomes one incident, not one page per pipeline.

Alerts are keyed by what they share — the values of the `by` labels (e.g. the same `source`), or the error
`signature` (the run/task message with numbers, ids and times blanked out). When alerts for `threshold`
different pipelines share a key within `window`, an incident opens: those alerts, and any later alert with
the same key while the incident lasts, are grouped together and notified as one. Alerts already notified
on their own before the incident opened stay where they are (the receiver knows them already).

It is a grouping override in the dispatcher rather than a stage: a stage sees one group at a time, and a
burst spans many groups (one per pipeline) that must become one notification before any of them is sent.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sentinel.alerting.alert import Alert
from sentinel.alerting.matchers import Matcher, matches_all

_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # uuids
    r"|\b[0-9a-f]{12,}\b"  # hashes, hex ids
    r"|\d+(?:[.:\-/T]\d+)*"  # numbers, times, dates
)
MAX_KEYS = 10_000


def signature(alert: Alert) -> str | None:
    """The error's shape: its message with the volatile parts blanked, so 'timeout after 31s on host-7' and
    'timeout after 30s on host-2' match."""
    text = alert.annotation("message") or alert.label("message") or alert.annotation("description")
    if not text.strip():
        return None
    return " ".join(_VOLATILE.sub("#", text.lower()).split())[:200]


@dataclass(frozen=True)
class CorrelationRule:
    threshold: int = 3
    window: timedelta = timedelta(minutes=5)
    by: tuple[str, ...] | str = ("source",)  # label names, or "signature"
    matchers: tuple[Matcher, ...] = ()


@dataclass
class _Key:
    seen: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # fingerprint -> (pipeline, first seen)
    open: bool = False


class Correlator:
    def __init__(self, rule: CorrelationRule) -> None:
        self.rule = rule
        self._keys: dict[str, _Key] = {}
        self.members: dict[str, str] = {}  # fingerprint -> incident key, for the alert's firing episode

    def key_of(self, alert: Alert) -> str | None:
        labels = alert.label_map
        if not matches_all(self.rule.matchers, labels):
            return None
        if self.rule.by == "signature":
            sig = signature(alert)
            return None if sig is None else "signature=" + hashlib.blake2b(sig.encode(), digest_size=6).hexdigest()
        values = [(name, labels.get(name, "")) for name in self.rule.by]
        if not all(v for _, v in values):
            return None
        return ",".join(f"{k}={v}" for k, v in values)

    def group_labels(self, key: str, alert: Alert) -> dict[str, str]:
        if self.rule.by == "signature":
            return {"alertname": "Incident", "signature": (signature(alert) or "")[:80]}
        return {"alertname": "Incident", **dict(part.split("=", 1) for part in key.split(","))}

    def observe(self, alert: Alert, now: datetime) -> tuple[str | None, list[str]]:
        """-> (incident key the alert belongs to or None, earlier alerts to pull in if the incident just opened)."""
        fp = alert.fingerprint
        if fp in self.members:
            return self.members[fp], []
        key = self.key_of(alert)
        if key is None:
            return None, []
        if alert.resolved_at(now):
            # Over before any incident took it: it no longer counts towards one.
            if (state := self._keys.get(key)) is not None:
                state.seen.pop(fp, None)
            return None, []
        state = self._keys.get(key)
        if state is None:
            if len(self._keys) >= MAX_KEYS:
                self._prune(now, force=True)
            state = self._keys[key] = _Key()
        cutoff = now - self.rule.window
        state.seen = {f: v for f, v in state.seen.items() if v[1] >= cutoff or f in self.members}
        state.seen.setdefault(fp, (alert.label("pipeline") or fp, now))
        if state.open:
            self.members[fp] = key
            return key, []
        pipelines = {p for p, _ in state.seen.values()}
        if len(pipelines) < self.rule.threshold:
            return None, []
        state.open = True
        self.members[fp] = key
        return key, [f for f in state.seen if f != fp]

    def join(self, fp: str, key: str) -> None:
        self.members[fp] = key

    def forget(self, fp: str) -> None:
        """The alert's episode ended (its resolution was sent); an incident with no members left closes."""
        key = self.members.pop(fp, None)
        if key is None:
            return
        state = self._keys.get(key)
        if state is not None:
            state.seen.pop(fp, None)
            if not any(k == key for k in self.members.values()):
                state.open = False

    def _prune(self, now: datetime, force: bool = False) -> None:
        cutoff = now - self.rule.window
        for key in list(self._keys):
            st = self._keys[key]
            if not st.open and (force or all(t < cutoff for _, t in st.seen.values())):
                del self._keys[key]
