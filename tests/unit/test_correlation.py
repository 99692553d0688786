"""Correlation: a burst of failures with one root cause is one incident notification, not a page per pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sentinel.alerting.alert import Alert
from sentinel.alerting.correlation import CorrelationRule, Correlator, signature
from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.stage import FlushContext
from sentinel.clock import FrozenClock
from sentinel.config import RouteConfig

T0 = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
S, M = timedelta(seconds=1), timedelta(minutes=1)


class Recorder:
    kind = "webhook"
    name = "rec"
    send_resolved = True

    def __init__(self) -> None:
        self.sent: list[tuple[timedelta, dict[str, str], list[tuple[str, str]]]] = []

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        pairs = sorted((a.label("pipeline"), a.status(ctx.now)) for a in alerts)
        self.sent.append((ctx.now - T0, dict(ctx.group_labels), pairs))


def failed(
    pipeline: str, at: datetime, source: str = "af", message: str = "", ends_at: datetime | None = None
) -> Alert:
    return Alert.of(
        {"alertname": "PipelineFailed", "source": source, "pipeline": pipeline},
        {"message": message} if message else {},
        starts_at=at,
        ends_at=ends_at,
    )


ROUTE = {
    "receiver": "r",
    "group_by": ["alertname", "source", "pipeline"],
    "group_wait": "30s",
    "group_interval": "5m",
    "repeat_interval": "4h",
}


class World:
    def __init__(self, rule: CorrelationRule) -> None:
        self.clock = FrozenClock(T0)
        self.rec = Recorder()
        self.incidents = 0
        nflog = NotificationLog()
        self.d = Dispatcher(
            Route.build(RouteConfig.model_validate(ROUTE)),
            build_pipelines({"r": [self.rec]}, nflog),
            self.clock,
            nflog=nflog,
            correlator=Correlator(rule),
            on_incident=self._count,
        )

    def _count(self) -> None:
        self.incidents += 1

    def put(self, delta: timedelta, *alerts: Alert) -> None:
        self.clock.set(T0 + delta)
        self.d.put(list(alerts))

    async def at(self, delta: timedelta) -> None:
        self.clock.set(T0 + delta)
        await self.d.flush_due()


async def test_three_pipelines_failing_on_one_source_page_once_listing_them() -> None:
    w = World(CorrelationRule(threshold=3, window=5 * M, by=("source",)))
    w.put(0 * S, failed("market_data", T0))
    w.put(10 * S, failed("risk", T0 + 10 * S))
    w.put(20 * S, failed("eod_report", T0 + 20 * S))
    await w.at(30 * S)
    assert w.rec.sent == [
        (
            30 * S,
            {"alertname": "Incident", "source": "af"},
            [("eod_report", "firing"), ("market_data", "firing"), ("risk", "firing")],
        )
    ]
    assert w.incidents == 1
    # A fourth failure on the same source while the incident lasts joins it: one more update, not a new page.
    w.put(2 * M, failed("pricing", T0 + 2 * M))
    await w.at(5 * M + 30 * S)
    assert len(w.rec.sent) == 2 and ("pricing", "firing") in w.rec.sent[1][2]
    assert w.incidents == 1
    # Resolutions go to the incident too; when all are over, the incident closes.
    end = T0 + 6 * M
    w.put(
        6 * M,
        *(failed(p, T0, ends_at=end) for p in ("market_data", "risk", "eod_report", "pricing")),
    )
    await w.at(10 * M + 30 * S)
    assert {s for _, s in w.rec.sent[-1][2]} == {"resolved"}
    assert not w.d.groups
    # A lone failure later is its own page again.
    w.put(20 * M, failed("market_data", T0 + 20 * M))
    await w.at(20 * M + 30 * S)
    assert w.rec.sent[-1][1] == {"alertname": "PipelineFailed", "source": "af", "pipeline": "market_data"}


async def test_below_threshold_or_outside_the_window_pages_per_pipeline() -> None:
    w = World(CorrelationRule(threshold=3, window=5 * M, by=("source",)))
    w.put(0 * S, failed("a", T0))
    w.put(10 * M, failed("b", T0 + 10 * M))  # the first is outside the window by now
    w.put(20 * M, failed("c", T0 + 20 * M))
    await w.at(25 * M)
    assert [labels["pipeline"] for _, labels, _ in w.rec.sent] == ["a", "b", "c"]
    assert w.incidents == 0


async def test_same_error_signature_across_sources_is_one_incident() -> None:
    w = World(CorrelationRule(threshold=3, window=5 * M, by="signature"))
    w.put(0 * S, failed("a", T0, "af", "Connection to warehouse db-7 timed out after 31s"))
    w.put(5 * S, failed("b", T0, "pf", "connection to warehouse db-2 timed out after 30s"))
    w.put(9 * S, failed("c", T0, "af2", "Connection to warehouse db-9 timed out after 29s"))
    w.put(9 * S, failed("d", T0, "af", "disk full"))
    await w.at(39 * S)
    incident = [s for s in w.rec.sent if s[1]["alertname"] == "Incident"]
    assert len(incident) == 1 and [p for p, _ in incident[0][2]] == ["a", "b", "c"]
    assert incident[0][1]["signature"] == "connection to warehouse db-# timed out after #s"
    assert [s[1].get("pipeline") for s in w.rec.sent if s[1]["alertname"] != "Incident"] == ["d"]


async def test_alerts_already_paged_alone_stay_in_their_groups() -> None:
    w = World(CorrelationRule(threshold=2, window=10 * M, by=("source",)))
    w.put(0 * S, failed("a", T0))
    await w.at(30 * S)  # a is paged on its own
    w.put(M, failed("b", T0 + M))  # threshold reached: the incident takes b, a stays where it was told
    await w.at(M + 30 * S)
    assert [(labels.get("pipeline", "incident"), [p for p, _ in pairs]) for _, labels, pairs in w.rec.sent] == [
        ("a", ["a"]),
        ("incident", ["b"]),
    ]


def test_signature_blanks_volatile_parts() -> None:
    a = failed("x", T0, message="Task 12 failed at 2026-11-25T21:00:03 (run 3f2a9c1d0e4b5a6f)")
    b = failed("y", T0, message="Task 7 failed at 2026-11-24T09:11:00 (run 0000aaaa1111bbbb)")
    assert signature(a) == signature(b)
    assert signature(failed("z", T0)) is None
