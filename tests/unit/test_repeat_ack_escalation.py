"""Repeats on time, acknowledgements and escalation, on a frozen clock: what a paged person would see."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel.alerting.ack import Ack, AckBook
from sentinel.alerting.alert import Alert
from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.nflog import Entry, NotificationLog
from sentinel.alerting.notify_stages import RateLimiter, RateLimitStage, needs_update
from sentinel.alerting.pipeline import DeliveryOptions, build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.stage import FlushContext
from sentinel.alerting.stage import Sequence as Seq
from sentinel.clock import FrozenClock
from sentinel.config import RouteConfig, load_config
from sentinel.notify.base import DeliveryError
from sentinel.yamlfile import ConfigError

T0 = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)


class Recorder:
    kind = "webhook"

    def __init__(self, name: str = "rec", fail: int = 0) -> None:
        self.name = name
        self.send_resolved = True
        self.sent: list[tuple[datetime, list[tuple[str, str]]]] = []
        self.fail = fail

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        if self.fail:
            self.fail -= 1
            raise DeliveryError("down", retryable=False)
        self.sent.append((ctx.now, sorted((a.label("pipeline"), a.status(ctx.now)) for a in alerts)))


def alert(pipeline: str, at: datetime, ends_at: datetime | None = None) -> Alert:
    return Alert.of(
        {"alertname": "PipelineFailed", "source": "af", "pipeline": pipeline, "severity": "critical"},
        starts_at=at,
        ends_at=ends_at,
    )


class World:
    def __init__(self, route: dict[str, Any], receivers: Sequence[str] = ("r",)) -> None:
        self.clock = FrozenClock(T0)
        self.nflog = NotificationLog()
        self.acks = AckBook()
        self.rec = {name: Recorder(name) for name in receivers}
        pipelines = build_pipelines({n: [r] for n, r in self.rec.items()}, self.nflog, acks=self.acks)
        self.d = Dispatcher(
            Route.build(RouteConfig.model_validate(route)), pipelines, self.clock, nflog=self.nflog, acks=self.acks
        )

    async def at(self, delta: timedelta) -> int:
        """Move the clock to T0 + delta and run every flush due then."""
        self.clock.set(T0 + delta)
        return await self.d.flush_due()

    def times(self, receiver: str = "r") -> list[timedelta]:
        return [t - T0 for t, _ in self.rec[receiver].sent]


ROUTE = {
    "receiver": "r",
    "group_by": ["alertname"],
    "group_wait": "30s",
    "group_interval": "5m",
    "repeat_interval": "4h2m",
}
S, M, H = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)


async def test_repeat_is_sent_when_due_not_on_the_next_group_interval_tick() -> None:
    w = World(ROUTE)
    w.d.put([alert("a", T0)])
    await w.at(30 * S)
    assert w.times() == [30 * S]
    # Nothing changes: the group sleeps until its repeat instead of waking every group_interval.
    group = next(iter(w.d.groups.values()))
    assert group.next_flush == T0 + 30 * S + 4 * H + 2 * M
    await w.at(30 * S + 4 * H + 2 * M - S)
    assert w.times() == [30 * S] and group.flushes == 1
    await w.at(30 * S + 4 * H + 2 * M)
    # Alertmanager would send this at the 4h05m30s tick, three minutes late.
    assert w.times() == [30 * S, 30 * S + 4 * H + 2 * M]


async def test_decision_table_new_alert_waits_group_interval_resolution_is_told() -> None:
    w = World(ROUTE)
    w.d.put([alert("a", T0)])
    await w.at(30 * S)
    w.clock.set(T0 + 2 * M)
    w.d.put([alert("a", T0), alert("b", T0 + 2 * M)])  # a new firing alert joins the group
    assert await w.at(5 * M) == 0  # changes wait for group_interval after the last flush
    await w.at(5 * M + 30 * S)
    assert w.rec["r"].sent[-1] == (T0 + 5 * M + 30 * S, [("a", "firing"), ("b", "firing")])
    w.clock.set(T0 + 6 * M)
    w.d.put([alert("a", T0, ends_at=T0 + 6 * M), alert("b", T0 + 2 * M)])
    await w.at(10 * M + 30 * S)
    assert w.rec["r"].sent[-1] == (T0 + 10 * M + 30 * S, [("a", "resolved"), ("b", "firing")])
    # Re-offering unchanged alerts (as rules do on every evaluation) sends nothing new.
    w.d.put([alert("b", T0 + 2 * M)])
    await w.at(20 * M)
    assert len(w.rec["r"].sent) == 3


def test_a_group_of_only_resolved_alerts_never_repeats() -> None:
    f = frozenset
    told = Entry(f(), f({"a"}), T0)
    c = FlushContext(now=T0 + 5 * H, group_key="g", group_labels={}, receiver="r", repeat_interval=4 * H)
    assert not needs_update(told, f(), f({"a"}), c)
    assert needs_update(Entry(f({"a"}), f(), T0), f(), f({"a"}), c)  # the all-clear is still sent once


async def test_acknowledged_alert_is_not_repeated_and_its_resolution_clears_the_ack() -> None:
    w = World({**ROUTE, "repeat_interval": "1h"})
    w.d.put([alert("a", T0)])
    await w.at(30 * S)
    fp = alert("a", T0).fingerprint
    await w.acks.add(Ack(fp, "ana", "rerunning the load", T0 + M))
    for hours in (1, 2, 3):
        await w.at(30 * S + hours * H)
    assert w.times() == [30 * S]  # no repeats while acknowledged
    w.clock.set(T0 + 3 * H + M)
    w.d.put([alert("a", T0, ends_at=T0 + 3 * H + M)])
    await w.at(3 * H + 6 * M)
    assert w.rec["r"].sent[-1][1] == [("a", "resolved")]  # the person who acked hears it is over
    assert w.acks.get(fp, w.clock.now()) is None
    # The next failure is a new episode: it pages.
    w.clock.set(T0 + 5 * H)
    w.d.put([alert("a", T0 + 5 * H)])
    await w.at(5 * H + 30 * S)
    assert w.rec["r"].sent[-1] == (T0 + 5 * H + 30 * S, [("a", "firing")])


async def test_ack_with_expiry_pages_again_when_it_runs_out() -> None:
    w = World(ROUTE)
    w.d.put([alert("a", T0)])
    await w.at(30 * S)
    fp = alert("a", T0).fingerprint
    await w.acks.add(Ack(fp, "ana", "snooze", T0 + M, expires=T0 + 61 * M))
    await w.at(60 * M)
    assert len(w.rec["r"].sent) == 1
    await w.at(61 * M)
    assert w.rec["r"].sent[-1] == (T0 + 61 * M, [("a", "firing")])


ESCALATING = {**ROUTE, "escalate_after": "15m", "escalate_to": "boss"}


async def test_unacknowledged_alert_escalates_once_and_its_resolution_follows() -> None:
    w = World(ESCALATING, receivers=("r", "boss"))
    w.d.put([alert("a", T0)])
    await w.at(30 * S)
    await w.at(15 * M + 29 * S)
    assert w.rec["boss"].sent == []
    await w.at(15 * M + 30 * S)
    assert w.rec["boss"].sent == [(T0 + 15 * M + 30 * S, [("a", "firing")])]
    for hours in (1, 3, 5, 9):
        await w.at(hours * H)
    assert len(w.rec["boss"].sent) == 1  # once per firing episode, however long it fires
    assert w.times() == [30 * S, 5 * H]  # while the route's own receiver keeps its repeats
    w.clock.set(T0 + 10 * H)
    w.d.put([alert("a", T0, ends_at=T0 + 10 * H)])
    await w.at(10 * H + 5 * M)
    assert w.rec["boss"].sent[-1][1] == [("a", "resolved")]
    assert w.rec["r"].sent[-1][1] == [("a", "resolved")]
    assert not w.d.groups


async def test_acknowledged_alert_is_not_escalated() -> None:
    w = World(ESCALATING, receivers=("r", "boss"))
    w.d.put([alert("a", T0), alert("b", T0)])
    await w.at(30 * S)
    await w.acks.add(Ack(alert("a", T0).fingerprint, "ana", "on it", T0 + 5 * M))
    await w.at(15 * M + 30 * S)
    assert w.rec["boss"].sent == [(T0 + 15 * M + 30 * S, [("b", "firing")])]


async def test_failed_delivery_is_retried_on_the_next_group_interval_tick() -> None:
    w = World(ROUTE)
    w.rec["r"].fail = 1
    w.d.put([alert("a", T0)])
    await w.at(30 * S)
    assert w.rec["r"].sent == []
    await w.at(5 * M + 30 * S)
    assert w.times() == [5 * M + 30 * S]


def test_rate_limit_holds_the_excess_in_order() -> None:
    lim = RateLimiter(2)
    waits = [lim.reserve(t) for t in (0.0, 1.0, 2.0, 3.0, 70.0, 200.0)]
    # The third and fourth wait for the window (sent at 60 and 61); the fifth for the one after; none dropped.
    assert waits == [0.0, 0.0, 58.0, 58.0, 50.0, 0.0]


async def test_rate_limited_receiver_holds_the_third_notification_instead_of_dropping_it() -> None:
    clock = FrozenClock(T0)
    waited: list[float] = []

    async def sleep(seconds: float) -> None:  # the frozen clock moves instead of the test waiting
        waited.append(seconds)
        clock.advance(seconds)

    rec = Recorder("sms")
    stage = RateLimitStage(RateLimiter(2), monotonic=clock.monotonic, sleep=sleep)
    send = Seq(stage, _Deliver(rec))
    for p in ("a", "b", "c"):
        await send(FlushContext(now=clock.now(), group_key=p, group_labels={}, receiver="sms", repeat_interval=H),
                   [alert(p, T0)])  # fmt: skip
        clock.advance(1)
    assert [labels for _, labels in rec.sent] == [[("a", "firing")], [("b", "firing")], [("c", "firing")]]
    assert waited == [58.0]  # the third waited for the minute's window to pass


class _Deliver:
    def __init__(self, integration: Recorder) -> None:
        self.integration = integration

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        await self.integration.notify(ctx, alerts)
        return alerts


async def test_fallback_receiver_stops_at_the_first_integration_that_delivers() -> None:
    clock = FrozenClock(T0)
    nflog = NotificationLog()
    first, second = Recorder("sms", fail=1), Recorder("mail")
    pipelines = build_pipelines({"r": [first, second]}, nflog, options={"r": DeliveryOptions(fallback=True)})
    d = Dispatcher(Route.build(RouteConfig.model_validate(ROUTE)), pipelines, clock, nflog=nflog)
    d.put([alert("a", T0)])
    clock.set(T0 + 30 * S)
    await d.flush_due()
    assert first.sent == [] and second.sent == [(T0 + 30 * S, [("a", "firing")])]
    d.put([alert("b", T0)])
    clock.set(T0 + 5 * M + 30 * S)
    await d.flush_due()
    assert first.sent[-1][1] == [("a", "firing"), ("b", "firing")] and len(second.sent) == 1


def test_escalate_to_must_name_a_receiver(tmp_path: Path) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(
        "receivers: [{name: r, console: true}]\nroute:\n  receiver: r\n  escalate_after: 15m\n  escalate_to: boss\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert f"{cfg}:5:16: route.escalate_to: 'boss' is not defined under receivers (known: r)" in str(err.value)
    cfg.write_text("receivers: [{name: r, console: true}]\nroute: {receiver: r, escalate_after: 15m}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "route.escalate_after: escalate_after and escalate_to go together" in str(err.value)
