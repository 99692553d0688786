"""One muting interface for inhibition, silences and time intervals, and the stage that applies them.

Each muter answers `mutes(labels, now) -> MuteReason | None`. The MuteStage drops muted alerts from a
flush and records why (silenced by ids, inhibited by fingerprints, muted by interval names) in a marker.

Resolution contract (stricter than Alertmanager, whose #226 leaves it open): a receiver that was told an
alert fired is told when it resolves, even if the alert was muted meanwhile. The notification log knows
what each integration was last told per group; an alert muted while firing would drop out of that record
at the group's next notification, so the stage remembers it as "owed a resolution" (persisted) until the
log shows the resolution was sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sentinel.alerting.alert import Alert
from sentinel.alerting.stage import FlushContext
from sentinel.clock import utc

if TYPE_CHECKING:
    from sentinel.alerting.inhibit import Inhibitor
    from sentinel.alerting.nflog import NotificationLog
    from sentinel.alerting.route import Route, RouteOpts
    from sentinel.alerting.silences import Silences
    from sentinel.alerting.time_intervals import TimeIntervals
    from sentinel.store import Store

Reason = Literal["inhibited", "time_interval", "silenced"]
REASONS: tuple[Reason, ...] = ("inhibited", "time_interval", "silenced")
OWED_NS = "mute_owed"
OWED_RETENTION = timedelta(hours=120)  # the notification log's retention: after that nobody remembers either
MAX_MARKED = 100_000


@dataclass(frozen=True)
class MuteReason:
    kind: Reason
    by: tuple[str, ...]  # inhibiting fingerprints, silence ids or time interval names


class Muter(Protocol):
    def mutes(self, labels: Mapping[str, str], now: datetime) -> MuteReason | None: ...


@dataclass(frozen=True)
class AlertStatus:
    """Alertmanager's alert status: suppressed when anything holds it back."""

    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    muted_by: tuple[str, ...] = ()
    suppressed: bool = False

    @classmethod
    def of(cls, reasons: Iterable[MuteReason], suppressed: bool | None = None) -> AlertStatus:
        by: dict[str, set[str]] = {k: set() for k in REASONS}
        for r in reasons:
            by[r.kind].update(r.by)
        any_ = any(by.values())
        return cls(
            silenced_by=tuple(sorted(by["silenced"])),
            inhibited_by=tuple(sorted(by["inhibited"])),
            muted_by=tuple(sorted(by["time_interval"])),
            suppressed=any_ if suppressed is None else suppressed,
        )

    @property
    def state(self) -> str:
        return "suppressed" if self.suppressed else "active"

    @property
    def kinds(self) -> set[Reason]:
        out: set[Reason] = set()
        if self.inhibited_by:
            out.add("inhibited")
        if self.muted_by:
            out.add("time_interval")
        if self.silenced_by:
            out.add("silenced")
        return out

    def dump(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "silencedBy": list(self.silenced_by),
            "inhibitedBy": list(self.inhibited_by),
            "mutedBy": list(self.muted_by),
        }


ACTIVE = AlertStatus()


class TimeIntervalMuter:
    """A route's `mute_time_intervals` (muted while any is active) and `active_time_intervals` (muted while
    none is). Labels do not matter: Alertmanager mutes the route's whole group."""

    def __init__(self, opts: RouteOpts, intervals: TimeIntervals) -> None:
        self.mute, self.active, self.intervals = opts.mute_time_intervals, opts.active_time_intervals, intervals

    def mutes(self, labels: Mapping[str, str], now: datetime) -> MuteReason | None:
        muted = tuple(n for n in self.mute if self.intervals.active(n, now))
        if muted:
            return MuteReason("time_interval", muted)
        if self.active and not any(self.intervals.active(n, now) for n in self.active):
            return MuteReason("time_interval", self.active)
        return None


class OwedResolutions:
    """(group, receiver) -> fingerprints a receiver was told fired and that were muted before resolving."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self.owed: dict[str, tuple[frozenset[str], datetime]] = {}

    @staticmethod
    def key(group_key: str, receiver: str) -> str:
        return f"{receiver}\x1f{group_key}"

    async def load(self, now: datetime) -> None:
        if self.store is None:
            return
        stale = []
        for k, d in (await self.store.all(OWED_NS)).items():
            since = utc(datetime.fromisoformat(d["since"]))
            if now - since > OWED_RETENTION:
                stale.append(k)
            else:
                self.owed[k] = (frozenset(d["fps"]), since)
        await self.store.put_many(OWED_NS, {}, delete=stale)

    def get(self, group_key: str, receiver: str) -> frozenset[str]:
        hit = self.owed.get(self.key(group_key, receiver))
        return hit[0] if hit else frozenset()

    async def update(self, group_key: str, receiver: str, add: set[str], remove: set[str], now: datetime) -> None:
        k = self.key(group_key, receiver)
        old = self.get(group_key, receiver)
        new = (old | add) - remove
        if new == old:
            return
        puts: dict[str, Any] = {}
        dels: list[str] = []
        if new:
            self.owed[k] = (new, now)
            puts[k] = {"fps": sorted(new), "since": now.isoformat()}
        else:
            self.owed.pop(k, None)
            dels.append(k)
        # A group that went away while owing (its resolution was sent; no flush came to settle it) ages out.
        for sk in [sk for sk, (_, since) in self.owed.items() if now - since > OWED_RETENTION]:
            del self.owed[sk]
            dels.append(sk)
        if self.store is not None:
            await self.store.put_many(OWED_NS, puts, delete=dels)


class Muting:
    """The muters of one configuration, the marker of why each alert was held back, and the owed ledger.

    The daemon keeps one across reloads: `configure` swaps routes, intervals and inhibition rules while
    silences, the marker and the ledger stay.
    """

    def __init__(
        self,
        silences: Silences,
        inhibitor: Inhibitor,
        intervals: TimeIntervals,
        route: Route,
        *,
        store: Store | None = None,
        on_suppressed: Callable[[Reason], None] | None = None,
    ) -> None:
        self.silences = silences
        self.inhibitor = inhibitor
        self.owed = OwedResolutions(store)
        self.on_suppressed = on_suppressed
        self.marker: dict[tuple[str, str], AlertStatus] = {}  # (group key, fingerprint) -> last verdict
        self.configure(route, intervals)

    def configure(self, route: Route, intervals: TimeIntervals) -> None:
        self.route, self.intervals = route, intervals
        self._time_muters: dict[str, TimeIntervalMuter] = {
            r.key: TimeIntervalMuter(r.opts, intervals)
            for r in route.walk()
            if r.opts.mute_time_intervals or r.opts.active_time_intervals
        }

    async def load(self, now: datetime) -> None:
        await self.silences.load(now)
        await self.owed.load(now)

    def muters_for(self, route_key: str) -> list[Muter]:
        """In Alertmanager's order: inhibition, time intervals, silences."""
        out: list[Muter] = [self.inhibitor]
        tm = self._time_muters.get(route_key)
        if tm is not None:
            out.append(tm)
        out.append(self.silences)
        return out

    def idle(self, route_key: str, group_key: str, receiver: str, now: datetime) -> bool:
        """Nothing can be held back in this flush and nothing was before: no inhibiting source, no live
        silence, no time interval on the route, no alert marked muted, no resolution owed to the receiver."""
        return (
            not self.marker
            and route_key not in self._time_muters
            and not self.inhibitor.any_source()
            and not self.silences.any_live(now)
            and not self.owed.get(group_key, receiver)
        )

    def status(self, labels: Mapping[str, str], now: datetime) -> AlertStatus:
        """Why an alert is held back right now, for the API. Time intervals apply per route: an alert routed
        to several receivers is suppressed only if every one of its routes is muted."""
        held = [r for m in (self.inhibitor, self.silences) if (r := m.mutes(labels, now)) is not None]
        routes = self.route.match(labels)
        timed = [r for route in routes if (tm := self._time_muters.get(route.key)) and (r := tm.mutes(labels, now))]
        all_muted = bool(routes) and len(timed) == len(routes)
        return AlertStatus.of(held + timed, suppressed=bool(held) or all_muted)

    def mark(self, group_key: str, alert: Alert, status: AlertStatus, now: datetime) -> None:
        key = (group_key, alert.fingerprint)
        previous = self.marker.pop(key, None)
        if previous is None and not status.suppressed:
            return  # the common case: never held back
        if alert.resolved_at(now):
            return  # it leaves the group with this flush: nothing to remember
        if self.on_suppressed is not None:
            for kind in status.kinds - (previous.kinds if previous else set()):
                self.on_suppressed(kind)
        if status.suppressed:
            self.marker[key] = status
            while len(self.marker) > MAX_MARKED:  # oldest verdicts first (dicts keep insertion order)
                del self.marker[next(iter(self.marker))]


_ROUTE_KEY = re.compile(r"^\d+(?:\.\d+)*$")


def route_key_of(ctx: FlushContext) -> str:
    """The route a flushed group belongs to: `extra["route_key"]` if the dispatcher says, else the first part of
    the group key shaped like a route key ("0.1"); group keys are "[kind:]…<route key>:<label hash>"."""
    given = ctx.extra.get("route_key")
    if isinstance(given, str):
        return given
    return next((p for p in ctx.group_key.split(":") if _ROUTE_KEY.match(p)), "")


class MuteStage:
    """Drops muted alerts from a flush, except resolutions the receiver is owed."""

    def __init__(self, muting: Muting, nflog: NotificationLog) -> None:
        self.muting = muting
        self.nflog = nflog

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        route_key = route_key_of(ctx)
        if self.muting.idle(route_key, ctx.group_key, ctx.receiver, ctx.now):
            return alerts  # what the loop below would conclude, alert by alert
        muters = self.muting.muters_for(route_key)
        told = self.nflog.for_group(ctx.group_key, ctx.receiver).values()
        owed = self.muting.owed.get(ctx.group_key, ctx.receiver)
        settled = {fp for fp in owed if any(fp in e.resolved for e in told)}
        owed = owed - settled
        kept: list[Alert] = []
        newly_owed: set[str] = set()
        for a in alerts:
            labels = a.label_map
            reasons = [r for m in muters if (r := m.mutes(labels, ctx.now)) is not None]
            self.muting.mark(ctx.group_key, a, AlertStatus.of(reasons) if reasons else ACTIVE, ctx.now)
            if not reasons:
                kept.append(a)
                continue
            fp = a.fingerprint
            if fp not in owed and not any(fp in e.firing for e in told):
                continue  # never told it fired: nothing to take back
            if a.resolved_at(ctx.now):
                kept.append(a)
            else:
                newly_owed.add(fp)
        await self.muting.owed.update(ctx.group_key, ctx.receiver, newly_owed, settled, ctx.now)
        return kept
