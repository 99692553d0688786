"""The daemon's notification pipeline, stepped on a simulated clock.

`ReplayNotifier` is built the way the daemon builds its own: a real `Dispatcher` (route tree, aggregation
groups, escalations, correlation when configured), the real per-receiver stage chains from
`build_pipelines` with the real `Muting` (inhibition fed by every alert put, the config's time
intervals; no silences — a replay has none), dedup against a `NotificationLog`. Only the edge and the
timer loop differ: a `RecordingIntegration` per receiver, and `advance_to(t)`, which sets the clock to
each instant a group is due (its next flush or escalation) up to `t`, in time order, and lets the
dispatcher's own `flush_due` run exactly what its live loop would have run then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sentinel.alerting.alert import Alert, LabelSet, labelset
from sentinel.alerting.delivery import correlator_for
from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.inhibit import Inhibitor
from sentinel.alerting.muter import Muting
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.silences import Silences
from sentinel.alerting.time_intervals import TimeIntervals
from sentinel.clock import FrozenClock
from sentinel.config import Config, InhibitRuleConfig, NamedTimeIntervalConfig, ReceiverConfig, RouteConfig
from sentinel.notify.base import Integration
from sentinel.replay.record import Notification, RecordingIntegration


def send_resolved(receiver: ReceiverConfig) -> bool:
    # A receiver that is only a webhook follows the webhook's own switch, as its integration does.
    if receiver.webhook is not None and not receiver.urls and not receiver.console:
        return receiver.webhook.send_resolved and receiver.send_resolved
    return receiver.send_resolved


class ReplayNotifier:
    def __init__(
        self,
        route: RouteConfig,
        receivers: Sequence[ReceiverConfig],
        clock: FrozenClock,
        *,
        inhibit_rules: Sequence[InhibitRuleConfig] = (),
        time_intervals: Sequence[NamedTimeIntervalConfig] = (),
        config: Config | None = None,
    ) -> None:
        self.clock = clock
        self.sent: list[Notification] = []
        # (instant, receiver, group labels) of every group that drained: its alerts all resolved and told.
        self.closed: list[tuple[datetime, str, LabelSet]] = []
        integrations: dict[str, Sequence[Integration]] = {
            r.name: [RecordingIntegration(self.sent, send_resolved=send_resolved(r))] for r in receivers
        }
        self.nflog = NotificationLog(None)
        tree = Route.build(route)
        self.inhibitor = Inhibitor(list(inhibit_rules))
        muting = Muting(Silences(None), self.inhibitor, TimeIntervals.of(time_intervals), tree)
        pipelines = build_pipelines(integrations, self.nflog, muting=muting)
        correlator = correlator_for(config) if config is not None else None
        self.dispatcher = Dispatcher(tree, pipelines, clock, nflog=self.nflog, correlator=correlator)
        # next_due() as of the last put or flush: only those move a group's timers in a replay, and the
        # loop asks twice per instant while groups are usually far from due.
        self._due: tuple[datetime | None] | None = None

    @classmethod
    def of(cls, config: Config, clock: FrozenClock) -> ReplayNotifier:
        return cls(
            config.route,
            config.receivers,
            clock,
            inhibit_rules=config.inhibit_rules,
            time_intervals=config.time_intervals,
            config=config,
        )

    def put(self, alerts: list[Alert]) -> None:
        # As the daemon: every alert the dispatcher hears of may be an inhibition source.
        self.inhibitor.observe(alerts, self.clock.now())
        self.dispatcher.put(alerts)
        self._due = None

    def next_due(self, spent: datetime | None = None) -> datetime | None:
        """The next instant a group is due: a flush, or an escalation not already acted on at `spent`."""
        times = [g.next_flush for g in self.dispatcher.groups.values() if not g.flushing]
        times += [
            t
            for g in self.dispatcher.groups.values()
            if (t := getattr(g, "next_escalation", None)) is not None and (spent is None or t > spent)
        ]
        return min(times) if times else None

    async def advance_to(self, until: datetime) -> None:
        """Run every flush and escalation due up to `until` (inclusive), then leave the clock at `until`."""
        if self._due is None:
            self._due = (self.next_due(),)
        first = self._due[0]
        if first is None or first > until:  # next_due(spent) is never earlier than next_due()
            if until > self.clock.now():
                self.clock.set(until)
            return
        self._due = None
        spent: datetime | None = None
        while True:
            due = self.next_due(spent)
            if due is None or due > until:
                break
            self.clock.set(max(due, self.clock.now()))
            before: dict[str, tuple[str, LabelSet]] = {
                k: (g.receiver, labelset(g.labels)) for k, g in self.dispatcher.groups.items()
            }
            flushed = await self.dispatcher.flush_due()
            for key, (receiver, labels) in before.items():
                if key not in self.dispatcher.groups:
                    self.closed.append((self.clock.now(), receiver, labels))
            if not flushed and self.next_due(spent) == due:
                spent = due  # an escalation instant that changed nothing: never spin on it
        if until > self.clock.now():
            self.clock.set(until)
