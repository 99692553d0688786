"""Aggregation groups and the notification log on disk: a restart sees exactly the alerts each group held,
in their order, whether the state file was written incrementally (one row per alert) or by an older version
(each group whole), and every notification logged by concurrent flushes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from sentinel.alerting import groups_store
from sentinel.alerting.alert import Alert
from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.stage import FlushContext
from sentinel.clock import FrozenClock
from sentinel.config import RouteConfig
from sentinel.store import Store

T0 = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
S = timedelta(seconds=1)
ROUTE = {"receiver": "r", "group_by": ["alertname"], "group_wait": "30s", "group_interval": "5m"}


class Recorder:
    kind, send_resolved = "webhook", True

    def __init__(self, name: str = "hook") -> None:
        self.name = name
        self.sent: list[list[tuple[str, str]]] = []

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        self.sent.append([(a.label("instance"), a.status(ctx.now)) for a in alerts])


def alert(instance: str, name: str = "Down", **kw: datetime) -> Alert:
    return Alert.of({"alertname": name, "instance": instance}, starts_at=T0, **kw)


async def life(path: Path, clock: FrozenClock, rec: Recorder) -> tuple[Store, Dispatcher]:
    store = await Store(path).open()
    nflog = NotificationLog(store)
    await nflog.load(clock.now())
    pipelines = build_pipelines({"r": [rec]}, nflog)  # type: ignore[list-item]
    d = Dispatcher(Route.build(RouteConfig.model_validate(ROUTE)), pipelines, clock, nflog=nflog, store=store)
    await d.restore()
    return store, d


async def test_restart_restores_each_groups_current_alerts_in_order(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    store, d = await life(tmp_path / "s.db", clock, Recorder())
    d.put([alert("c"), alert("a"), alert("b"), alert("x", name="Other")])
    await d.save()
    d.put([alert("d")])
    d.put([alert("a", ends_at=T0 + 40 * S)])  # changes one alert of a group already on disk
    await d.save()
    await store.close()

    rec = Recorder()
    store, d = await life(tmp_path / "s.db", clock, rec)
    clock.set(T0 + 30 * S)
    assert await d.flush_due() == 2
    assert sorted(rec.sent) == [
        [("c", "firing"), ("a", "firing"), ("b", "firing"), ("d", "firing")],
        [("x", "firing")],
    ]
    # "a" resolves and is told; the group on disk no longer holds it, nor does the state file.
    clock.set(T0 + 30 * S + 5 * 60 * S)
    await d.flush_due()
    assert rec.sent[-1] == [("c", "firing"), ("a", "resolved"), ("b", "firing"), ("d", "firing")]
    await store.close()

    rec3 = Recorder()
    store, d = await life(tmp_path / "s.db", clock, rec3)
    rows = await store.all(groups_store.ALERTS_NS)
    assert sorted(x["labels"][1][1] for x in rows.values()) == ["b", "c", "d", "x"]
    assert [a.label("instance") for g in d.groups.values() for a in g.alerts.values()] in (
        ["c", "b", "d", "x"],
        ["x", "c", "b", "d"],
    )
    await store.close()


async def test_a_group_that_ends_leaves_nothing_on_disk(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    store, d = await life(tmp_path / "s.db", clock, Recorder())
    d.put([alert("a", ends_at=T0 + 10 * S), alert("b", ends_at=T0 + 10 * S)])
    await d.save()
    clock.set(T0 + 30 * S)
    await d.flush_due()  # both resolved before anyone was told: the group is done
    assert d.groups == {}
    assert await store.all(groups_store.NS) == {}
    assert await store.all(groups_store.ALERTS_NS) == {}
    await store.close()


async def test_state_file_of_an_older_version_still_restores(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    store = await Store(tmp_path / "s.db").open()
    a, b = alert("a"), alert("b")
    route = Route.build(RouteConfig.model_validate(ROUTE))
    key = f"{route.key}:legacy"
    row = groups_store.dump_group(
        kind="route",
        route_key=route.key,
        receiver="r",
        labels={"alertname": "Down"},
        alerts=[a, b],
        next_flush=T0 + 30 * S,
        last_flush=None,
        changed=True,
        notified_at={},
        escalated=set(),
    )
    await store.put(groups_store.NS, key, orjson.loads(orjson.dumps(row)))
    await store.close()

    rec = Recorder()
    store, d = await life(tmp_path / "s.db", clock, rec)
    clock.set(T0 + 30 * S)
    await d.flush_due()
    assert rec.sent == [[("a", "firing"), ("b", "firing")]]
    # Rewritten in the new layout at that save; a third life reads it from there.
    assert "alerts" not in (await store.get(groups_store.NS, key))
    await store.close()
    store, d = await life(tmp_path / "s.db", clock, Recorder())
    assert [x.label("instance") for x in d.groups[key].alerts.values()] == ["a", "b"]
    await store.close()


async def test_notifications_logged_by_concurrent_flushes_all_survive_a_restart(tmp_path: Path) -> None:
    store = await Store(tmp_path / "s.db").open()
    log = NotificationLog(store)
    await asyncio.gather(*(log.log(f"k{i}", frozenset({f"f{i}"}), frozenset(), T0) for i in range(200)))
    await store.close()
    store = await Store(tmp_path / "s.db").open()
    again = NotificationLog(store)
    await again.load(T0)
    assert {k: sorted(e.firing) for k, e in again.entries.items()} == {f"k{i}": [f"f{i}"] for i in range(200)}
    await store.close()
