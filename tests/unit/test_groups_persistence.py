"""Aggregation groups and the notification log on disk: a restart sees exactly the alerts each group held,
in their order, whether the state file holds them in chunks (now), one row per alert or each group whole (older
versions); a save writes only what changed and leaves bounded garbage; a failed save loses nothing; every
notification logged by concurrent flushes survives."""

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
    # On disk: chunks of alerts. No chunk is left holding only alerts the group no longer has.
    rows = await store.all(groups_store.ALERTS_NS)
    chunks = [{labels[1][1] for labels, *_ in chunk} for chunk in rows.values()]
    assert set().union(*chunks) >= {"b", "c", "d", "x"}
    assert all(chunk & {"b", "c", "d", "x"} for chunk in chunks)
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


async def _old_group_row(
    store: Store, name: str, *, alerts: list[Alert] | None = None, order: list[str] | None = None
) -> str:
    """A group row as an older version wrote it: its alerts in it (`alerts`), or only their order."""
    route = Route.build(RouteConfig.model_validate(ROUTE))
    key = f"{route.key}:{name}"
    row = groups_store.dump_group(
        kind="route",
        route_key=route.key,
        receiver="r",
        labels={"alertname": "Down"},
        alerts=alerts,
        order=order,
        next_flush=T0 + 30 * S,
        last_flush=None,
        changed=True,
        notified_at={},
        escalated=set(),
    )
    await store.put(groups_store.NS, key, orjson.loads(orjson.dumps(row)))
    return key


async def test_state_file_of_an_older_version_still_restores(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    store = await Store(tmp_path / "s.db").open()
    a, b = alert("a"), alert("b")
    key = await _old_group_row(store, "legacy", alerts=[a, b])
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


# -- alerts in chunks ---------------------------------------------------------------------------------------
def _rows(puts: dict[str, bytes], disk: dict[str, bytes], dels: list[str]) -> dict[str, bytes]:
    """Apply one save to a dict standing for the table (deletes first, as Store.write_many does)."""
    out = {k: v for k, v in disk.items() if k not in dels}
    out.update(puts)
    return out


def _restored(table: dict[str, bytes], order: list[str]) -> list[Alert]:
    rows = [(k, orjson.loads(v)) for k, v in table.items()]
    alerts, _, legacy, dead = groups_store.OnDisk.restore("g", rows, order)
    assert not legacy and not dead
    return alerts


def test_a_save_writes_one_chunk_of_what_changed_and_never_an_unchanged_alert() -> None:
    a, b, c = alert("a"), alert("b"), alert("c")
    disk, puts, dels = groups_store.OnDisk().plan("g", {x.fingerprint: x for x in (a, b, c)})
    assert list(puts) == [groups_store.chunk_key("g", 0)] and dels == []
    table = _rows(puts, {}, dels)
    same, puts, dels = disk.plan("g", {x.fingerprint: x for x in (a, b, c)})
    assert same is disk and puts == {} and dels == []

    b2 = alert("b", ends_at=T0 + 60 * S)  # re-posted with an end: a new object
    disk, puts, dels = disk.plan("g", {x.fingerprint: x for x in (a, b2, c)})
    assert len(orjson.loads(puts[groups_store.chunk_key("g", 1)])) == 1 and dels == []
    table = _rows(puts, table, dels)
    assert [
        (x.label("instance"), x.ends_at) for x in _restored(table, [a.fingerprint, b.fingerprint, c.fingerprint])
    ] == [
        ("a", None),
        ("b", T0 + 60 * S),
        ("c", None),
    ]


def test_a_chunk_goes_when_nothing_in_it_is_current_and_garbage_never_outgrows_the_group() -> None:
    first = [alert(f"i{i}") for i in range(10)]
    disk, puts, dels = groups_store.OnDisk().plan("g", {x.fingerprint: x for x in first})
    table = _rows(puts, {}, dels)
    current = {x.fingerprint: x for x in first}
    for i in range(10):  # each save replaces one more alert of the first chunk
        new = alert(f"i{i}", ends_at=T0 + (i + 1) * S)
        current[new.fingerprint] = new
        disk, puts, dels = disk.plan("g", current)
        table = _rows(puts, table, dels)
        held = sum(len(orjson.loads(v)) for v in table.values())
        assert held - len(current) <= len(current)  # superseded copies on disk never outnumber the alerts
        assert [x.ends_at for x in _restored(table, list(current))] == [x.ends_at for x in current.values()]
    # The group empties: every chunk row goes.
    disk, puts, dels = disk.plan("g", {})
    assert puts == {} and _rows(puts, table, dels) == {}


async def test_a_state_file_with_one_row_per_alert_restores_and_moves_into_a_chunk(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    store = await Store(tmp_path / "s.db").open()
    a, b = alert("a"), alert("b")
    key = await _old_group_row(store, "previous", order=[b.fingerprint, a.fingerprint])
    for x in (a, b):  # as the version before chunks wrote them
        await store.put(groups_store.ALERTS_NS, groups_store.alert_key(key, x.fingerprint), groups_store.dump_alert(x))
    await store.close()

    store, d = await life(tmp_path / "s.db", clock, Recorder())
    assert [x.label("instance") for x in d.groups[key].alerts.values()] == ["b", "a"]
    await d.save()
    assert list(await store.all(groups_store.ALERTS_NS)) == [groups_store.chunk_key(key, 0)]
    await store.close()
    rec = Recorder()
    store, d = await life(tmp_path / "s.db", clock, rec)
    clock.set(T0 + 30 * S)
    await d.flush_due()
    assert rec.sent == [[("b", "firing"), ("a", "firing")]]
    await store.close()


async def test_a_save_that_fails_is_retried_whole_by_the_next(tmp_path: Path) -> None:
    clock = FrozenClock(T0)
    store, d = await life(tmp_path / "s.db", clock, Recorder())
    d.put([alert("a"), alert("b")])
    await d.save()
    real = store.write_many
    calls = 0

    async def failing(*args: object, **kw: object) -> None:
        nonlocal calls
        calls += 1
        raise OSError("disk full")

    store.write_many = failing  # type: ignore[method-assign]
    d.put([alert("c"), alert("a", ends_at=T0 + 90 * S)])
    try:
        await d.save()
    except OSError:
        pass
    assert calls == 1
    store.write_many = real  # type: ignore[method-assign]
    await d.save()
    await store.close()

    rec = Recorder()
    store, d = await life(tmp_path / "s.db", clock, rec)
    clock.set(T0 + 30 * S)
    await d.flush_due()
    assert rec.sent == [[("a", "firing"), ("b", "firing"), ("c", "firing")]]
    assert [x.ends_at for x in next(iter(d.groups.values())).alerts.values()] == [T0 + 90 * S, None, None]
    await store.close()


async def test_a_crash_before_a_groups_timers_reach_disk_sends_nothing_twice(tmp_path: Path) -> None:
    """After a flush only a group's timers change, and they reach disk later (TIMERS_SAVE_S). A crash in
    between leaves the row of before the flush: the group flushes again at once, and the log stops the send."""
    clock = FrozenClock(T0)
    rec = Recorder()
    store, d = await life(tmp_path / "s.db", clock, rec)
    d.put([alert("a"), alert("b")])
    await d.save()
    before_flush = await store.all(groups_store.NS)
    clock.set(T0 + 30 * S)
    await d.flush_due()
    assert rec.sent == [[("a", "firing"), ("b", "firing")]]
    await store.put_many(groups_store.NS, before_flush)  # the crash: timers of the flush never written
    await store.close()

    again = Recorder()
    store, d = await life(tmp_path / "s.db", clock, again)
    clock.set(T0 + 31 * S)
    assert await d.flush_due() == 1
    assert again.sent == []
    (group,) = d.groups.values()
    assert group.next_flush == T0 + 30 * S + timedelta(hours=4)  # back on its repeat, as if never interrupted
    await store.close()
