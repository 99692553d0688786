"""Alertmanager's inhibition: a firing source alert mutes target alerts that share its `equal` labels.

Source alerts are indexed per rule by the values of their `equal` labels, so asking "is this alert
inhibited?" is one dict lookup per rule whose target side matches, not a scan over every firing alert.

Semantics follow Alertmanager's inhibit.go: a missing label equals the empty string; resolved alerts
inhibit nothing; and an alert that matches both sides of a rule is only inhibited by source alerts that
do not themselves match the target side, so two alerts matching both sides cannot silence each other
(and no alert ever inhibits itself).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sentinel.alerting.alert import Alert
from sentinel.alerting.matchers import Matcher, matches_all
from sentinel.alerting.muter import MuteReason
from sentinel.config import InhibitRuleConfig

EqualKey = tuple[str, ...]


@dataclass
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]
    # equal-label values -> fingerprint -> (alert, whether it also matches the target side)
    index: dict[EqualKey, dict[str, tuple[Alert, bool]]] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: InhibitRuleConfig) -> InhibitRule:
        return cls(tuple(cfg.source_matchers), tuple(cfg.target_matchers), tuple(sorted(set(cfg.equal))))

    def key(self, labels: Mapping[str, str]) -> EqualKey:
        return tuple(labels.get(n, "") for n in self.equal)

    def add(self, alert: Alert, labels: Mapping[str, str]) -> None:
        if matches_all(self.source, labels):
            self.index.setdefault(self.key(labels), {})[alert.fingerprint] = (alert, matches_all(self.target, labels))

    def remove(self, fp: str, labels: Mapping[str, str]) -> None:
        bucket = self.index.get(self.key(labels))
        if bucket is not None and bucket.pop(fp, None) is not None and not bucket:
            del self.index[self.key(labels)]

    def inhibitors(self, labels: Mapping[str, str], now: datetime) -> list[str]:
        """Fingerprints of the firing source alerts that inhibit `labels` under this rule."""
        # The lookup first: it is cheaper than the matchers, and usually finds no source at all.
        bucket = self.index.get(self.key(labels)) if self.index else None
        if not bucket or not matches_all(self.target, labels):
            return []
        two_sided = matches_all(self.source, labels)
        return [
            fp
            for fp, (alert, source_is_target) in bucket.items()
            if not alert.resolved_at(now) and not (two_sided and source_is_target)
        ]


class Inhibitor:
    """A Muter over the currently firing alerts. Feed it every alert handed to the dispatcher (`observe`)."""

    def __init__(self, rules: Sequence[InhibitRuleConfig] = ()) -> None:
        self.alerts: dict[str, Alert] = {}  # firing alerts that match some rule's source side
        self._all_firing: dict[str, Alert] = {}  # every firing alert, to re-index when rules change
        # (ends_at, fingerprint) of firing alerts that carry an end, soonest first: posted alerts resolve by
        # the clock, and finding them must not mean looking at every firing alert on every observe.
        self._ends: list[tuple[datetime, str]] = []
        self.rules: list[InhibitRule] = []
        self.set_rules(rules)

    def set_rules(self, rules: Sequence[InhibitRuleConfig]) -> None:
        self.rules = [InhibitRule.of(r) for r in rules]
        self.alerts = {}
        for a in self._all_firing.values():
            self._add(a)

    def observe(self, alerts: Iterable[Alert], now: datetime) -> None:
        ends = self._ends
        for a in alerts:
            if a.resolved_at(now):
                self._drop(a.fingerprint)
            else:
                self._all_firing[a.fingerprint] = a
                self._add(a)
                if a.ends_at is not None:
                    heapq.heappush(ends, (a.ends_at, a.fingerprint))
        # Alerts posted with an endsAt resolve by the clock, without being offered again.
        while ends and ends[0][0] <= now:
            fp = heapq.heappop(ends)[1]
            current = self._all_firing.get(fp)
            if current is not None and current.resolved_at(now):  # else re-posted with a later end since
                self._drop(fp)
        if len(ends) > 2 * len(self._all_firing) + 1024:  # superseded entries of re-posted alerts
            self._ends = [(a.ends_at, fp) for fp, a in self._all_firing.items() if a.ends_at is not None]
            heapq.heapify(self._ends)

    def _drop(self, fp: str) -> None:
        self._all_firing.pop(fp, None)
        old = self.alerts.pop(fp, None)
        if old is not None:
            labels = old.label_map
            for r in self.rules:
                r.remove(fp, labels)

    def _add(self, a: Alert) -> None:
        labels = a.label_map
        old = self.alerts.get(a.fingerprint)
        if old is not None and old.labels != a.labels:  # same fingerprint, other labels: never, but stay exact
            for r in self.rules:
                r.remove(a.fingerprint, old.label_map)
        hit = False
        for r in self.rules:
            if matches_all(r.source, labels):
                r.add(a, labels)
                hit = True
        if hit:
            self.alerts[a.fingerprint] = a

    def any_source(self) -> bool:
        """Whether any firing alert can inhibit: if not, nothing is inhibited."""
        return any(r.index for r in self.rules)

    def inhibited_by(self, labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
        found: set[str] = set()
        for r in self.rules:
            if r.index:
                found.update(r.inhibitors(labels, now))
        return tuple(sorted(found)) if found else ()

    def mutes(self, labels: Mapping[str, str], now: datetime) -> MuteReason | None:
        by = self.inhibited_by(labels, now)
        return MuteReason("inhibited", by) if by else None
