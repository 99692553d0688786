"""Routes alerts into aggregation groups and flushes each group on its own timer.

A group's first flush waits `group_wait` (to batch a burst); a change (a new alert, a resolution) is flushed
`group_interval` after the previous flush; whether a flush actually notifies is the dedup stage's decision,
as in Alertmanager. Unlike Alertmanager, a group with nothing new sleeps until its repeat is due
(last notification + `repeat_interval`) instead of waking every `group_interval` to find out, so a 4h
repeat is sent at 4h, not up to one group_interval late.

Two overrides of plain grouping live here too, because both move alerts between groups: escalation (an
alert still firing and unacknowledged `escalate_after` its first notification is copied into a group for
the `escalate_to` receiver) and correlation (see correlation.py). Nothing is flushed until `ready` is set
(every source polled once), so a restart cannot leak an alert that a fuller picture would have suppressed.
Groups are persisted, so after a restart pending ones flush on their original schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from sentinel.alerting import groups_store
from sentinel.alerting.ack import Ack, AckBook
from sentinel.alerting.alert import Alert, fingerprint, labelset
from sentinel.alerting.correlation import Correlator
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.route import Route
from sentinel.alerting.stage import FlushContext, Stage
from sentinel.clock import Clock
from sentinel.store import Store

MAX_FLUSHES_IN_FLIGHT = 64
SAVE_EVERY_S = 0.5
# A group's row after a successful flush differs from disk only in its timers, and a restart from the older
# row is harmless: the group flushes at once and the notification log (written before the flush returns)
# stops anything already sent. So those rows wait this long, and a busy day writes each group once a
# minute at most, not after every flush.
TIMERS_SAVE_S = 60.0
# "Never again in this episode": the escalation receiver is told once, and of the resolution.
NEVER = timedelta(days=3650)

ROUTE, ESCALATION, INCIDENT = "route", "escalation", "incident"


@dataclass
class AggregationGroup:
    key: str
    route: Route
    labels: dict[str, str]
    next_flush: datetime
    alerts: dict[str, Alert] = field(default_factory=dict)
    flushing: bool = False
    flushes: int = 0
    kind: str = ROUTE
    last_flush: datetime | None = None
    changed: bool = True  # something to tell since the last flush
    notified_at: dict[str, datetime] = field(default_factory=dict)  # fingerprint -> first notified (this episode)
    escalated: set[str] = field(default_factory=set)
    next_escalation: datetime | None = None
    disk: groups_store.OnDisk = field(default_factory=groups_store.OnDisk, repr=False)  # its alerts on disk

    @property
    def receiver(self) -> str:
        return self.route.opts.receiver

    def dump(self) -> dict[str, Any]:
        return groups_store.dump_group(
            kind=self.kind,
            route_key=self.route.key,
            receiver=self.receiver,
            labels=self.labels,
            alerts=None,
            order=list(self.alerts),
            next_flush=self.next_flush,
            last_flush=self.last_flush,
            changed=self.changed,
            notified_at=self.notified_at,
            escalated=self.escalated,
        )


def escalation_route(route: Route) -> Route:
    opts = route.opts
    assert opts.escalate_to is not None
    esc = replace(
        opts,
        receiver=opts.escalate_to,
        group_wait=timedelta(0),
        repeat_interval=NEVER,
        escalate_after=None,
        escalate_to=None,
    )
    return Route(route.key, esc, route.matchers, route.continue_)


class Dispatcher:
    def __init__(
        self,
        route: Route,
        pipelines: Mapping[str, Stage],
        clock: Clock,
        *,
        nflog: NotificationLog | None = None,
        acks: AckBook | None = None,
        store: Store | None = None,
        correlator: Correlator | None = None,
        on_incident: Callable[[], None] | None = None,
    ) -> None:
        self.route = route
        self.pipelines = dict(pipelines)
        self.clock = clock
        self.nflog = nflog
        self.acks = acks
        self.store = store
        self.correlator = correlator
        self.on_incident = on_incident
        self.groups: dict[str, AggregationGroup] = {}
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        # Due groups wait here for one of at most MAX_FLUSHES_IN_FLIGHT workers: a task per group queued on a
        # semaphore cost more than many of the flushes it ran.
        self._due: deque[AggregationGroup] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty: set[str] = set()
        self._gone: set[str] = set()
        self._timers_only: set[str] = set()  # groups whose rows are behind only in their timers (TIMERS_SAVE_S)
        self._group_keys: dict[tuple[str, tuple[Any, ...]], str] = {}
        self._escalating = False  # whether an escalation group was ever made (else none to look up per alert)
        self._gone_alerts: set[str] = set()  # alert rows (groups_store.chunk_key) to delete at the next save
        # What `run` is asleep for: a finished flush wakes it only when it has something sooner to do (each
        # wake scans every group, and a flush of 1,000 groups used to wake it once per group).
        self._planned: datetime | None = None
        self._save_planned = False  # within SAVE_EVERY_S
        self._saving: asyncio.Task[None] | None = None
        self._not_before = 0.0
        self._any_save_planned = False  # within TIMERS_SAVE_S at least
        # fingerprint -> ends_at of resolutions already flushed; rules keep re-offering resolved alerts
        # for a while, and a flushed resolution must not start a new group.
        self._resolved_done: dict[str, datetime] = {}
        if acks is not None:
            acks.listeners.append(self._acknowledged)

    # -- intake ------------------------------------------------------------------------------------
    def put(self, alerts: list[Alert]) -> None:
        now = self.clock.now()
        for a in alerts:
            if a.ends_at is not None and self._resolved_done.get(a.fingerprint) == a.ends_at:
                continue
            incident, backlog = self.correlator.observe(a, now) if self.correlator else (None, [])
            labels = a.label_map
            for route in self.route.match(labels):
                if incident is not None:
                    assert self.correlator is not None
                    group = self._group(
                        f"{INCIDENT}:{route.key}:{incident}", route, self.correlator.group_labels(incident, a), a, now
                    )
                    group.kind = INCIDENT
                    self._pull_in(group, backlog, incident, now)
                else:
                    group = self._group_of(route, labels, a, now)
                self._add(group, a, now)
                if self._escalating and (esc := self.groups.get(f"{ESCALATION}:{group.key}")) is not None:
                    if a.fingerprint in esc.alerts:
                        self._add(esc, a, now)
            if backlog and self.on_incident is not None:
                self.on_incident()
        self._wake.set()

    def _group_of(self, route: Route, labels: dict[str, str], a: Alert, now: datetime) -> AggregationGroup:
        # Many alerts share a group: its key (a hash of its labels) is found by the alert's values of the
        # route's group_by, not worked out again per alert (that was a visible share of intake).
        opts = route.opts
        values = a.labels if opts.group_by_all else tuple(map(labels.get, opts.group_by))
        key = self._group_keys.get((route.key, values))
        if key is None:
            if len(self._group_keys) >= 100_000:  # bounded: a label with unbounded values must not grow it
                self._group_keys.clear()
            glabels = route.group_labels(labels)
            key = self._group_keys[(route.key, values)] = f"{route.key}:{fingerprint(labelset(glabels))}"
        group = self.groups.get(key)
        return group if group is not None else self._group(key, route, route.group_labels(labels), a, now)

    def _group(self, key: str, route: Route, labels: dict[str, str], a: Alert, now: datetime) -> AggregationGroup:
        group = self.groups.get(key)
        if group is None:
            wait = route.opts.group_wait
            # Alertmanager flushes at once when the alert's own group_wait is already over.
            first = now if a.starts_at is not None and a.starts_at + wait < now else now + wait
            group = self.groups[key] = AggregationGroup(key, route, labels, first)
            self._dirty.add(key)
        return group

    def _add(self, group: AggregationGroup, a: Alert, now: datetime) -> None:
        old = group.alerts.get(a.fingerprint)
        group.alerts[a.fingerprint] = a
        if old is not None and old == a:
            return
        self._dirty.add(group.key)
        if old is None or old.resolved_at(now) != a.resolved_at(now):
            group.changed = True
            if group.last_flush is not None:
                group.next_flush = min(group.next_flush, group.last_flush + group.route.opts.group_interval)

    def _pull_in(self, incident: AggregationGroup, backlog: list[str], key: str, now: datetime) -> None:
        """An incident just opened: move its earlier alerts out of their own (not yet notified) groups."""
        assert self.correlator is not None
        for fp in backlog:
            for group in [g for g in self.groups.values() if g.kind == ROUTE and g.route.key == incident.route.key]:
                a = group.alerts.get(fp)
                if a is None or fp in group.notified_at or group.flushing:
                    continue
                del group.alerts[fp]
                self._dirty.add(group.key)
                if not group.alerts:
                    self._drop(group)
                self._add(incident, a, now)
                # The incident was born now; its first flush waits group_wait from the first alert's group.
                incident.next_flush = min(incident.next_flush, group.next_flush)
                self.correlator.join(fp, key)

    def _acknowledged(self, ack: Ack) -> None:
        """An ack with an expiry must wake its groups when it runs out; escalation plans change at once."""
        now = self.clock.now()
        for group in self.groups.values():
            if ack.fingerprint not in group.alerts or group.flushing:
                continue
            if ack.expires is not None:
                after_tick = ack.expires
                if group.last_flush is not None:
                    after_tick = max(after_tick, group.last_flush + group.route.opts.group_interval)
                group.next_flush = min(group.next_flush, after_tick)
                self._dirty.add(group.key)
            group.next_escalation = self._next_escalation(group, now)
        self._wake.set()

    def set_routes(self, route: Route, pipelines: Mapping[str, Stage]) -> None:
        """A reload: new alerts follow the new tree; a live group whose route still exists (same key and
        receiver) takes the new timers and escalation at once, others finish under the old ones."""
        self.route = route
        self.pipelines = dict(pipelines)
        routes = {r.key: r for r in route.walk()}
        now = self.clock.now()
        for group in self.groups.values():
            new = routes.get(group.route.key)
            if new is None:
                continue
            if group.kind == ESCALATION:
                if new.opts.escalate_to == group.receiver:
                    group.route = escalation_route(new)
            elif new.opts.receiver == group.receiver:
                group.route = new
                group.next_escalation = self._next_escalation(group, now)
        self._wake.set()

    # -- scheduling --------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.ready.wait()
        loop = asyncio.get_running_loop()
        save_at: float | None = None
        while True:
            self._wake.clear()
            upcoming = self._start_due()
            if (self._dirty or self._gone or self._timers_only) and self._saving is None:
                # What was put in is on disk SAVE_EVERY_S later at most, with everything that changed meanwhile:
                # a burst of requests or flushes is one transaction, not one per request.
                wait = SAVE_EVERY_S if self._dirty or self._gone else TIMERS_SAVE_S
                at = max(loop.time() + wait, self._not_before)
                save_at = at if save_at is None else min(save_at, at)
                if loop.time() >= save_at:
                    # In the background: saving a big burst takes a while under load, and no group's flush may
                    # wait for it (it did: a 100,000-alert burst held group_wait = 1 s flushes back a second).
                    self._saving = asyncio.create_task(self._save_in_background())
                    save_at = None
            now = self.clock.now()
            timeout = None if upcoming is None else max(0.01, (upcoming - now).total_seconds())
            self._planned = upcoming
            # A save under way wakes this loop when it ends, and the next one then takes what changed meanwhile.
            self._save_planned = self._saving is not None or bool(self._dirty or self._gone)
            self._any_save_planned = self._saving is not None or save_at is not None
            if save_at is not None:
                left = max(0.01, save_at - loop.time())
                timeout = left if timeout is None else min(timeout, left)
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that arrives just as the
            # event is set, and the daemon's stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _save_in_background(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self.save()
        except Exception as exc:  # a full disk must not stop delivery
            logger.opt(exception=exc).error("could not save aggregation groups")
        finally:
            self._not_before = loop.time() + 9 * (loop.time() - started)  # saving: a tenth of the time at most
            self._saving = None
            self._wake.set()

    def _start_due(self) -> datetime | None:
        now = self.clock.now()
        self._escalate(now)
        upcoming: datetime | None = None
        for group in list(self.groups.values()):
            if group.flushing:
                continue
            if group.next_flush <= now:
                group.flushing = True
                self._due.append(group)
                continue
            for t in (group.next_flush, group.next_escalation):
                if t is not None and (upcoming is None or t < upcoming):
                    upcoming = t
        for _ in range(min(len(self._due), MAX_FLUSHES_IN_FLIGHT - len(self._tasks))):
            task = asyncio.create_task(self._flush_queued(self._due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return upcoming

    async def _flush_queued(self, queue: deque[AggregationGroup]) -> None:
        while queue:
            await self._flush(queue.popleft())

    async def flush_due(self) -> int:
        """Flush every group that is due now and wait for them: what `run` does on a tick, for a frozen
        clock (tests, backtests). Returns how many groups were flushed."""
        now = self.clock.now()
        self._escalate(now)
        due = [g for g in self.groups.values() if not g.flushing and g.next_flush <= now]
        for g in due:
            g.flushing = True
        queue = deque(due)
        await asyncio.gather(*(self._flush_queued(queue) for _ in range(min(len(due), MAX_FLUSHES_IN_FLIGHT))))
        await self.save()
        return len(due)

    def _acked(self, fp: str, now: datetime) -> bool:
        return self.acks is not None and self.acks.is_acked(fp, now)

    def _escalate(self, now: datetime) -> None:
        for group in list(self.groups.values()):
            if group.next_escalation is None or group.next_escalation > now:
                continue
            after = group.route.opts.escalate_after
            assert after is not None
            for fp, first in list(group.notified_at.items()):
                a = group.alerts.get(fp)
                if fp in group.escalated or first + after > now or a is None or a.resolved_at(now):
                    continue
                if self._acked(fp, now):
                    continue
                key = f"{ESCALATION}:{group.key}"
                esc = self.groups.get(key)
                if esc is None:
                    self._escalating = True
                    esc = self.groups[key] = AggregationGroup(
                        key, escalation_route(group.route), dict(group.labels), now, kind=ESCALATION
                    )
                self._add(esc, a, now)
                group.escalated.add(fp)
                self._dirty.add(group.key)
                logger.info("escalating {} to {} (unacknowledged for {})", a.name or fp, esc.receiver, after)
            group.next_escalation = self._next_escalation(group, now)

    def _next_escalation(self, group: AggregationGroup, now: datetime) -> datetime | None:
        after = group.route.opts.escalate_after
        if after is None or group.kind == ESCALATION or group.route.opts.escalate_to is None:
            return None
        times = [
            first + after
            for fp, first in group.notified_at.items()
            if fp not in group.escalated
            and (a := group.alerts.get(fp)) is not None
            and not a.resolved_at(now)
            and not self._acked(fp, now)
        ]
        return min(times, default=None)

    # -- flushing ----------------------------------------------------------------------------------
    async def _flush(self, group: AggregationGroup) -> None:
        now = self.clock.now()
        alerts = list(group.alerts.values())
        opts = group.route.opts
        group.changed = False
        ctx = FlushContext(
            now=now,
            group_key=group.key,
            group_labels=group.labels,
            receiver=opts.receiver,
            repeat_interval=opts.repeat_interval,
            deadline=now + max(opts.group_interval, timedelta(seconds=1)),
            extra={"kind": group.kind, "route_key": group.route.key},
        )
        ok = False
        try:
            pipeline = self.pipelines.get(opts.receiver)
            if pipeline is None:
                logger.error("no pipeline for receiver {}", opts.receiver)
            else:
                await pipeline(ctx, alerts)
                ok = True
        except Exception as exc:  # one group's failure must not stop the others
            logger.opt(exception=exc).debug("flush of group {} failed", group.key)
        finally:
            self._after_flush(group, alerts, now, ok)  # wakes `run`, which saves the group

    def _after_flush(self, group: AggregationGroup, sent: list[Alert], now: datetime, ok: bool) -> None:
        group.flushes += 1
        group.last_flush = now
        if not ok:
            group.changed = True  # try again on the next group_interval tick
        alerts, notified = group.alerts, group.notified_at
        for e in self.nflog.for_group(group.key, group.receiver).values() if self.nflog is not None else ():
            for fp in e.firing.difference(notified):
                a = alerts.get(fp)
                if a is not None and (a.ends_at is None or a.ends_at > now):
                    notified[fp] = e.timestamp
        # Only timers moved, unless this flush failed, let resolved alerts go, or may start an escalation clock.
        timers_only = ok and group.route.opts.escalate_after is None
        if ok:
            if self.acks is not None and self.acks.lapsed:
                self.acks.lapsed.difference_update(a.fingerprint for a in sent)
            for a in sent:
                if a.ends_at is not None and a.ends_at <= now and alerts.get(a.fingerprint) is a:
                    del alerts[a.fingerprint]
                    self._resolved_done[a.fingerprint] = a.ends_at
                    self._end_episode(group, a.fingerprint)
                    timers_only = False
        if len(self._resolved_done) > 10_000:
            cutoff = now - timedelta(hours=1)
            self._resolved_done = {k: v for k, v in self._resolved_done.items() if v > cutoff}
        self._schedule(group, now, ok)
        group.flushing = False
        if timers_only and group.key not in self._dirty:
            self._timers_only.add(group.key)
            save_planned = self._any_save_planned
        else:
            self._dirty.add(group.key)
            save_planned = self._save_planned
        if not group.alerts:
            self._drop(group)
        sooner = self._planned is None or group.next_flush < self._planned
        if group.next_escalation is not None:
            sooner = sooner or group.next_escalation < self._planned  # type: ignore[operator]
        if sooner or not save_planned:
            self._wake.set()

    def _end_episode(self, group: AggregationGroup, fp: str) -> None:
        group.notified_at.pop(fp, None)
        group.escalated.discard(fp)
        if self.acks is not None:
            self.acks.clear(fp)
        if self.correlator is not None and group.kind != ESCALATION:
            self.correlator.forget(fp)

    def _schedule(self, group: AggregationGroup, now: datetime, ok: bool) -> None:
        """Next flush: a group_interval tick while something is untold, else the repeat; sooner if an alert
        is due to resolve by itself or an acknowledgement runs out."""
        opts = group.route.opts
        tick = now + opts.group_interval
        firing: set[str] = set()
        soonest_end: datetime | None = None  # of the firing alerts that resolve by themselves
        for fp, a in group.alerts.items():
            end = a.ends_at
            if end is None:
                firing.add(fp)
            elif end > now:
                firing.add(fp)
                if soonest_end is None or end < soonest_end:
                    soonest_end = end
        expected = {fp for fp in firing if not self._acked(fp, now)} if self.acks else firing
        settled = False
        nxt = tick
        if ok and not group.changed and self.nflog is not None:
            entries = self.nflog.for_group(group.key, group.receiver)
            if not expected:
                settled, nxt = True, now + NEVER  # every firing alert is acknowledged: nothing to repeat
            elif entries and all(e.firing == expected for e in entries.values()):
                settled = True
                nxt = min(e.timestamp for e in entries.values()) + opts.repeat_interval
        if not settled:
            nxt = tick
        if soonest_end is not None:
            nxt = min(nxt, max(soonest_end, tick))
        if self.acks and (expiry := self.acks.next_expiry(firing, now)) is not None:
            nxt = min(nxt, max(expiry, tick))
        group.next_flush = nxt
        group.next_escalation = self._next_escalation(group, now)

    def _drop(self, group: AggregationGroup) -> None:
        if self.groups.get(group.key) is group:
            del self.groups[group.key]
            self._gone.add(group.key)
            self._dirty.discard(group.key)
            self._timers_only.discard(group.key)
            self._gone_alerts.update(group.disk.keys(group.key))
            group.disk = groups_store.OnDisk()

    # -- persistence -------------------------------------------------------------------------------
    async def save(self) -> None:
        """Write what changed since the last save, in one transaction: each changed group's row (timers, who
        was told) and a chunk of its alerts that are new or changed (see groups_store). Alerts are immutable,
        so an alert object already on disk is not written again."""
        if self.store is None or not (self._dirty or self._gone or self._timers_only):
            return
        dirty, gone, gone_alerts = self._dirty | self._timers_only, self._gone, self._gone_alerts
        self._dirty, self._gone, self._gone_alerts, self._timers_only = set(), set(), set(), set()
        items: dict[str, Any] = {}
        alert_rows: dict[str, bytes] = {}
        alert_dels = set(gone_alerts)
        planned: list[tuple[AggregationGroup, groups_store.OnDisk]] = []
        for k in dirty:
            group = self.groups.get(k)
            if group is None:
                continue
            items[k] = group.dump()
            disk, puts, dels = group.disk.plan(k, group.alerts)
            if disk is not group.disk:
                planned.append((group, disk))
                alert_rows.update(puts)
                alert_dels.update(dels)
        try:
            await self.store.write_many(
                {groups_store.NS: items, groups_store.ALERTS_NS: alert_rows},
                {groups_store.NS: gone - items.keys(), groups_store.ALERTS_NS: alert_dels},
            )
        except BaseException:
            # Not on disk after all: each group's record still says what is there, and the next save retries.
            self._dirty |= dirty
            self._gone |= gone - self.groups.keys()
            self._gone_alerts |= alert_dels
            raise
        for group, disk in planned:
            if self.groups.get(group.key) is group:
                group.disk = disk
            else:  # dropped while the save ran: its rows, the new chunk too, go at the next save
                self._gone_alerts.update(disk.keys(group.key))
        if self.acks is not None:
            await self.acks.save()

    async def restore(self) -> int:
        """Bring back the groups of the previous run, on their original timers. Alerts whose route is gone
        (the configuration changed) are routed again as if new."""
        if self.store is None:
            return 0
        routes = {r.key: r for r in self.route.walk()}
        now = self.clock.now()
        orphans: list[Alert] = []
        stale: list[str] = []
        rows = await self.store.all(groups_store.NS)
        by_group: dict[str, list[tuple[str, Any]]] = {}
        for akey, x in (await self.store.all(groups_store.ALERTS_NS)).items():
            by_group.setdefault(groups_store.group_of(akey), []).append((akey, x))
        stale_alerts = [akey for k, xs in by_group.items() if k not in rows for akey, _ in xs]
        for key, d in rows.items():
            disk, one_alert_rows = groups_store.OnDisk(), []
            if "alerts" in d:  # written whole by an older version: into a chunk at the next save
                alerts = [groups_store.restore_alert(x) for x in d["alerts"]]
            else:  # in the group's own order (the order its notifications list them)
                alerts, disk, one_alert_rows, dead = groups_store.OnDisk.restore(
                    key, by_group.get(key, []), d.get("order", [])
                )
                stale_alerts.extend(dead)
            if not alerts:
                stale.append(key)
                stale_alerts.extend(akey for akey, _ in by_group.get(key, []))
                continue
            route = routes.get(d["route_key"])
            kind = d["kind"]
            if route is not None and kind == ESCALATION:
                self._escalating = True
                route = escalation_route(route) if route.opts.escalate_to == d["receiver"] else None
            elif route is not None and route.opts.receiver != d["receiver"]:
                route = None
            if kind == INCIDENT and self.correlator is None:
                route = None
            if route is None:
                stale.append(key)
                stale_alerts.extend(akey for akey, _ in by_group.get(key, []))
                if kind != ESCALATION:
                    orphans.extend(alerts)
                continue
            next_flush, last_flush, notified_at = groups_store.restore_times(d)
            group = AggregationGroup(
                key,
                route,
                dict(d["labels"]),
                next_flush,
                {a.fingerprint: a for a in alerts},
                kind=kind,
                last_flush=last_flush,
                changed=bool(d["changed"]),
                notified_at=notified_at,
                escalated=set(d["escalated"]),
            )
            group.next_escalation = self._next_escalation(group, now)
            group.disk = disk
            if len(disk.alerts) < len(group.alerts):  # some not in a chunk yet: moved there by the next save
                self._dirty.add(key)
                self._gone_alerts.update(one_alert_rows)
            self.groups[key] = group
            if kind == INCIDENT and self.correlator is not None:
                incident_key = key.split(":", 2)[2]
                for fp in group.alerts:
                    self.correlator.join(fp, incident_key)
        if stale or stale_alerts:
            await self.store.write_many({}, {groups_store.NS: stale, groups_store.ALERTS_NS: stale_alerts})
        if orphans:
            self.put(orphans)
        if self.groups:
            logger.info("restored {} pending aggregation group(s)", len(self.groups))
        return len(self.groups)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._saving is not None:  # let it finish: the save below builds on what it wrote
            await asyncio.gather(self._saving, return_exceptions=True)
        await self.save()
