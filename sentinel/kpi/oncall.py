"""On-call noise: firing alerts that resolved before anyone could act on them.

An alert that fires and resolves within its route's group_wait was never worth a page (with Alertmanager's
defaults it was not even sent). `sentinel_alerts_resolved_unacked_fast_total` over
`sentinel_alerts_resolved_total` is the share of such alerts: a rule with a high share wants a longer `for:`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sentinel.alerting.route import Route
from sentinel.metrics import Metrics
from sentinel.rules.lifecycle import Instance


class OnCallKpis:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # fingerprint -> resolved_at already counted; only instances that still exist are kept.
        self._counted: dict[str, datetime] = {}

    def seed(self, instances: Iterable[Instance]) -> None:
        """Resolutions restored from the store were counted by the previous process."""
        for inst in instances:
            if inst.state == "resolved" and inst.resolved_at is not None:
                self._counted[inst.fingerprint] = inst.resolved_at

    def observe(self, instances: Iterable[Instance], route: Route) -> None:
        live: dict[str, datetime] = {}
        for inst in instances:
            if inst.state != "resolved" or inst.resolved_at is None or inst.fired_at is None:
                continue
            live[inst.fingerprint] = inst.resolved_at
            if self._counted.get(inst.fingerprint) == inst.resolved_at:
                continue
            self.metrics.alerts_resolved.inc()
            wait = _group_wait(route, dict(inst.labels))
            if inst.resolved_at - inst.fired_at <= wait and inst.fingerprint not in self.metrics.acked:
                self.metrics.alerts_resolved_unacked_fast.inc()
        self._counted = live


def _group_wait(route: Route, labels: dict[str, str]) -> timedelta:
    # An alert routed to several receivers (continue: true) pages first where the wait is shortest.
    return min(r.opts.group_wait for r in route.match(labels))
