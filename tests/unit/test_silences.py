"""Silences: Alertmanager's validation, pending/active/expired, expiry, retention, persistence across a store
reopen; and the resolution contract: a receiver told that an alert fired is told when it resolves, even
if the alert was silenced or inhibited meanwhile (and never told of what it never saw fire)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel.alerting.alert import Alert
from sentinel.alerting.inhibit import Inhibitor
from sentinel.alerting.matchers import parse_matchers
from sentinel.alerting.muter import Muting
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.silences import RETENTION, SilenceError, Silences
from sentinel.alerting.stage import FlushContext, Stage
from sentinel.alerting.time_intervals import TimeIntervals
from sentinel.clock import FrozenClock
from sentinel.config import InhibitRuleConfig, RouteConfig
from sentinel.store import Store
from tests.unit.test_alerting import Recorder

T0 = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
H = timedelta(hours=1)


async def add(s: Silences, matchers: str, now: datetime, ends: datetime, **kw: object) -> str:
    return await s.set(
        parse_matchers(matchers),
        ends,
        now,
        created_by=str(kw.pop("created_by", "ana")),
        comment=str(kw.pop("comment", "maintenance CHG-1")),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("matchers", "field", "message"),
    [
        ("", "matchers", "at least one matcher is required"),
        ('team=""', "matchers", "must not match the empty string"),
        ('team=~".*", env!="prod"', "matchers", "must not match the empty string"),
    ],
)
async def test_a_silence_must_not_match_everything(matchers: str, field: str, message: str) -> None:
    with pytest.raises(SilenceError) as err:
        await add(Silences(), matchers, T0, T0 + H)
    assert err.value.field == field and message in err.value.message


async def test_times_author_and_comment_are_checked() -> None:
    s = Silences()
    with pytest.raises(SilenceError, match="endsAt: must be after startsAt"):
        await add(s, 'alertname="X"', T0, T0 + H, starts_at=T0 + 2 * H)
    with pytest.raises(SilenceError, match="endsAt: is in the past"):
        await add(s, 'alertname="X"', T0, T0 - H, starts_at=T0 - 2 * H)
    with pytest.raises(SilenceError, match="createdBy"):
        await add(s, 'alertname="X"', T0, T0 + H, created_by=" ")
    with pytest.raises(SilenceError, match="comment"):
        await add(s, 'alertname="X"', T0, T0 + H, comment="")
    assert await add(s, 'team!=""', T0, T0 + H)  # "team is set" does not match everything: fine


async def test_pending_active_expired_and_what_is_muted() -> None:
    s = Silences()
    sid = await add(s, 'alertname="PipelineFailed", pipeline=~"market_.*"', T0, T0 + 3 * H, starts_at=T0 + H)
    hit = {"alertname": "PipelineFailed", "pipeline": "market_data_ingest"}
    assert s.get(sid).state(T0) == "pending" and s.mutes(hit, T0) is None  # type: ignore[union-attr]
    reason = s.mutes(hit, T0 + H)
    assert reason is not None and reason.kind == "silenced" and reason.by == (sid,)
    assert s.mutes({"alertname": "PipelineFailed", "pipeline": "eod_reporting"}, T0 + H) is None
    assert s.get(sid).state(T0 + 3 * H) == "expired" and s.mutes(hit, T0 + 3 * H) is None  # type: ignore[union-attr]


async def test_expire_ends_now_and_retention_drops_it_later() -> None:
    s = Silences()
    active = await add(s, 'alertname="X"', T0, T0 + 4 * H)
    pending = await add(s, 'alertname="Y"', T0, T0 + 4 * H, starts_at=T0 + 2 * H)
    now = T0 + H
    expired = await s.expire(active, now)
    assert expired.ends_at == now and expired.state(now) == "expired"
    assert s.mutes({"alertname": "X"}, now) is None
    p = await s.expire(pending, now)
    assert p.state(now) == "expired" and p.starts_at == p.ends_at == now  # never started: nothing was muted
    assert (await s.expire(active, now + H)).ends_at == now  # expiring twice changes nothing
    with pytest.raises(SilenceError) as err:
        await s.expire("nope", now)
    assert err.value.status == 404
    assert [x.id for x in s.list(now, ["expired"])] and await s.gc(now + RETENTION) == 0
    assert await s.gc(now + RETENTION + timedelta(seconds=1)) == 2 and s.list(now) == []


async def test_updates_keep_the_id_unless_they_rewrite_history() -> None:
    s = Silences()
    sid = await add(s, 'alertname="X"', T0, T0 + 2 * H)
    # Extending an active silence: same id.
    assert await add(s, 'alertname="X"', T0 + H, T0 + 5 * H, starts_at=T0, silence_id=sid) == sid
    assert s.get(sid).ends_at == T0 + 5 * H  # type: ignore[union-attr]
    # Other matchers: Alertmanager expires the old silence and creates a new one.
    new = await add(s, 'alertname="Y"', T0 + H, T0 + 5 * H, silence_id=sid)
    assert new != sid and s.get(sid).state(T0 + H) == "expired"  # type: ignore[union-attr]
    with pytest.raises(SilenceError) as err:
        await add(s, 'alertname="X"', T0, T0 + H, silence_id="unknown")
    assert err.value.field == "id" and err.value.status == 404


async def test_silences_survive_a_store_reopen(tmp_path: Path) -> None:
    store = await Store(tmp_path / "state.db").open()
    s = Silences(store)
    sid = await add(s, 'alertname="X", source=~"air.*"', T0, T0 + 2 * H, comment="upgrade")
    old = await add(s, 'alertname="Old"', T0 - 200 * H, T0 - 130 * H, starts_at=T0 - 200 * H)
    await store.close()

    store = await Store(tmp_path / "state.db").open()
    s2 = Silences(store)
    await s2.load(T0)
    assert s2.get(old) is None  # expired more than 120 h ago: garbage-collected on load
    again = s2.get(sid)
    assert (
        again is not None
        and again.comment == "upgrade"
        and again.matchers == parse_matchers('alertname="X", source=~"air.*"')
    )
    assert s2.mutes({"alertname": "X", "source": "airflow-prod"}, T0 + H) is not None
    await store.close()
    store = await Store(tmp_path / "state.db").open()
    assert set(await store.all("silences")) == {sid}
    await store.close()


# -- the resolution contract -----------------------------------------------------------------------


class World:
    """One receiver's pipeline over a real store, rebuilt on `restart` from what the store kept."""

    def __init__(self, path: Path, clock: FrozenClock) -> None:
        self.path, self.clock = path, clock
        self.rec = Recorder("ops")

    async def start(self) -> None:
        self.store = await Store(self.path).open()
        self.nflog = NotificationLog(self.store)
        await self.nflog.load(self.clock.now())
        self.silences = Silences(self.store)
        rule = InhibitRuleConfig.model_validate(
            {"source_matchers": ['alertname="SourceDown"'], "target_matchers": ['alertname!="SourceDown"']}
        )
        self.inhibitor = Inhibitor([rule])
        self.muting = Muting(
            self.silences, self.inhibitor, TimeIntervals(), Route.build(RouteConfig(receiver="ops")), store=self.store
        )
        await self.muting.load(self.clock.now())
        self.pipeline: Stage = build_pipelines({"ops": [self.rec]}, self.nflog, muting=self.muting)["ops"]

    async def restart(self) -> None:
        await self.store.close()
        await self.start()

    async def flush(self, *alerts: Alert) -> list[list[tuple[str, str]]]:
        before = len(self.rec.sent)
        ctx = FlushContext(
            now=self.clock.now(), group_key="0:g", group_labels={}, receiver="ops", repeat_interval=4 * H
        )
        await self.pipeline(ctx, list(alerts))
        return self.rec.sent[before:]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path / "state.db", FrozenClock(T0))
    await w.start()
    yield w
    await w.store.close()


def alert(pipeline: str, **kw: object) -> Alert:
    return Alert.of({"alertname": "PipelineFailed", "pipeline": pipeline}, starts_at=T0, **kw)


async def test_a_silenced_alert_that_was_told_firing_is_told_resolved(world: World) -> None:
    x, y = alert("market_data_ingest"), alert("portfolio_risk")
    assert await world.flush(x, y) == [[("market_data_ingest", "firing"), ("portfolio_risk", "firing")]]
    world.clock.advance(H)
    await add(world.silences, 'pipeline="market_data_ingest"', world.clock.now(), world.clock.now() + 24 * H)
    # The repeat interval passes: the reminder leaves the silenced alert out...
    world.clock.advance(5 * H)
    assert await world.flush(x, y) == [[("portfolio_risk", "firing")]]
    # ...and a restart in between forgets nothing.
    await world.restart()
    world.clock.advance(H)
    resolved = x.resolve(world.clock.now())
    assert await world.flush(resolved, y) == [[("market_data_ingest", "resolved"), ("portfolio_risk", "firing")]]
    world.clock.advance(H)
    assert await world.flush(y) == []  # told once; the debt is settled
    assert world.muting.owed.get("0:g", "ops") == frozenset()


async def test_an_alert_silenced_before_it_was_ever_sent_stays_quiet_when_it_resolves(world: World) -> None:
    await add(world.silences, 'pipeline="eod_reporting"', T0, T0 + 24 * H)
    x = alert("eod_reporting")
    assert await world.flush(x) == []
    world.clock.advance(H)
    assert await world.flush(x.resolve(world.clock.now())) == []


async def test_an_inhibited_alert_that_was_told_firing_is_told_resolved(world: World) -> None:
    x = alert("market_data_ingest")
    assert await world.flush(x) == [[("market_data_ingest", "firing")]]
    world.clock.advance(H)
    down = Alert.of({"alertname": "SourceDown"}, starts_at=world.clock.now())
    world.inhibitor.observe([down], world.clock.now())
    assert await world.flush(x) == []  # inhibited now: no reminder, no "resolved" either
    world.clock.advance(H)
    assert await world.flush(x.resolve(world.clock.now())) == [[("market_data_ingest", "resolved")]]


async def test_an_update_without_a_start_keeps_the_old_start() -> None:
    s = Silences()
    sid = await add(s, 'alertname="X"', T0, T0 + H)
    assert await add(s, 'alertname="X"', T0 + H / 2, T0 + 3 * H, silence_id=sid) == sid
    updated = s.get(sid)
    assert updated is not None and updated.starts_at == T0 and updated.ends_at == T0 + 3 * H


async def test_many_silences_each_mute_exactly_their_alerts() -> None:
    s = Silences()
    by_pipeline = {i: await add(s, f'pipeline="p{i}", severity="critical"', T0, T0 + (i + 1) * H) for i in range(50)}
    regex_only = await add(s, 'source=~"prefect-.*"', T0, T0 + 100 * H)
    other_label = await add(s, 'team="risk"', T0, T0 + 100 * H)
    now = T0 + H / 2
    assert s.silenced_by({"pipeline": "p7", "severity": "critical"}, now) == (by_pipeline[7],)
    assert s.silenced_by({"pipeline": "p7", "severity": "warning"}, now) == ()
    both = {"pipeline": "p3", "severity": "critical", "source": "prefect-prod", "team": "risk"}
    assert set(s.silenced_by(both, now)) == {by_pipeline[3], regex_only, other_label}
    # p3's silence ends at T0 + 4h: from then on it mutes nothing, the others still do.
    later = T0 + 4 * H
    assert set(s.silenced_by(both, later)) == {regex_only, other_label}
    assert s.silenced_by({"pipeline": "p40", "severity": "critical"}, later) == (by_pipeline[40],)
