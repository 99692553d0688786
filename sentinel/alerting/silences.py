"""Alertmanager's silences: matchers over labels, muting matching alerts between startsAt and endsAt.

A silence is pending before it starts, active until it ends, then expired; expiring one sets its end to
now. Silences live in the store (so they survive a restart) and expired ones are kept for 120 hours, as
Alertmanager's default retention, then dropped. Validation follows Alertmanager: at least one matcher,
and not only matchers that match the empty string (such a silence would mute every alert); the end
after the start and in the future.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sentinel.alerting.matchers import Matcher, MatchType, matches_all, parse_matcher
from sentinel.alerting.muter import MuteReason
from sentinel.clock import utc
from sentinel.store import Store

NS = "silences"
RETENTION = timedelta(hours=120)
MAX_SILENCES = 10_000  # pending and active; bounded memory, and a runaway script gets an error, not an OOM
MAX_MATCHERS = 64
MAX_TEXT = 4096
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

State = Literal["pending", "active", "expired"]


class SilenceError(ValueError):
    """A silence the user must correct; `field` names the offending field (API name)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


def matcher_to_api(m: Matcher) -> dict[str, Any]:
    return {
        "name": m.name,
        "value": m.value,
        "isRegex": m.op in (MatchType.REGEX, MatchType.NOT_REGEX),
        "isEqual": m.op in (MatchType.EQUAL, MatchType.REGEX),
    }


def matcher_from_api(obj: Mapping[str, Any] | str) -> Matcher:
    """Alertmanager's `{name, value, isRegex, isEqual}` or the text form `name="value"`."""
    if isinstance(obj, str):
        return parse_matcher(obj)
    name = obj.get("name")
    value = obj.get("value")
    if not isinstance(name, str) or not _LABEL.match(name):
        raise ValueError(f"invalid label name {name!r}")
    if not isinstance(value, str):
        raise ValueError(f"matcher {name}: value must be a string")
    regex, equal = bool(obj.get("isRegex", False)), bool(obj.get("isEqual", True))
    op = {
        (False, True): MatchType.EQUAL,
        (False, False): MatchType.NOT_EQUAL,
        (True, True): MatchType.REGEX,
        (True, False): MatchType.NOT_REGEX,
    }[(regex, equal)]
    return Matcher.make(name, op, value)


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    updated_at: datetime

    def state(self, now: datetime) -> State:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    def dump(self, now: datetime | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "matchers": [matcher_to_api(m) for m in self.matchers],
            "startsAt": self.starts_at.isoformat(),
            "endsAt": self.ends_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
            "createdBy": self.created_by,
            "comment": self.comment,
        }
        if now is not None:
            d["status"] = {"state": self.state(now)}
        return d

    @classmethod
    def restore(cls, d: Mapping[str, Any]) -> Silence:
        return cls(
            id=d["id"],
            matchers=tuple(matcher_from_api(m) for m in d["matchers"]),
            starts_at=utc(datetime.fromisoformat(d["startsAt"])),
            ends_at=utc(datetime.fromisoformat(d["endsAt"])),
            created_by=d.get("createdBy", ""),
            comment=d.get("comment", ""),
            updated_at=utc(datetime.fromisoformat(d["updatedAt"])),
        )


def validate(
    matchers: tuple[Matcher, ...], starts_at: datetime, ends_at: datetime, created_by: str, comment: str
) -> None:
    if not matchers:
        raise SilenceError("matchers", "at least one matcher is required")
    if len(matchers) > MAX_MATCHERS:
        raise SilenceError("matchers", f"at most {MAX_MATCHERS} matchers")
    if all(m.matches({}) for m in matchers):
        raise SilenceError(
            "matchers",
            "at least one matcher must not match the empty string (this silence would mute every alert)",
        )
    if ends_at <= starts_at:
        raise SilenceError("endsAt", "must be after startsAt")
    if not created_by.strip():
        raise SilenceError("createdBy", "say who creates the silence")
    if not comment.strip():
        raise SilenceError("comment", "say why (a ticket, a maintenance window)")
    if len(created_by) > MAX_TEXT or len(comment) > MAX_TEXT:
        raise SilenceError("comment" if len(comment) > MAX_TEXT else "createdBy", f"at most {MAX_TEXT} characters")


def _can_update(old: Silence, new: Silence, now: datetime) -> bool:
    """Alertmanager's rule: same matchers, and the change does not rewrite what already happened."""
    if old.matchers != new.matchers:
        return False
    match old.state(now):
        case "active":
            return new.starts_at == old.starts_at and new.ends_at > now
        case "pending":
            return new.starts_at >= now
        case _:
            return False


class Silences:
    """The silence store and a Muter: `mutes` answers with the ids of active silences matching."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self.by_id: dict[str, Silence] = {}
        self._index: _Index | None = None  # rebuilt after any change, and when an indexed silence ends

    async def load(self, now: datetime) -> None:
        if self.store is None:
            return
        for d in (await self.store.all(NS)).values():
            s = Silence.restore(d)
            self.by_id[s.id] = s
        self._index = None
        await self.gc(now)

    def get(self, silence_id: str) -> Silence | None:
        return self.by_id.get(silence_id)

    def list(self, now: datetime, states: Iterable[State] | None = None) -> list[Silence]:
        wanted = set(states) if states is not None else None
        out = [s for s in self.by_id.values() if wanted is None or s.state(now) in wanted]
        order = {"active": 0, "pending": 1, "expired": 2}
        return sorted(out, key=lambda s: (order[s.state(now)], s.ends_at, s.id))

    async def set(
        self,
        matchers: tuple[Matcher, ...],
        ends_at: datetime,
        now: datetime,
        *,
        starts_at: datetime | None = None,
        created_by: str,
        comment: str,
        silence_id: str | None = None,
    ) -> str:
        """Create a silence, or update `silence_id`; returns the id in force afterwards (an update that
        would rewrite history expires the old silence and creates a new one, as Alertmanager does)."""
        old = self.by_id.get(silence_id) if silence_id else None
        if silence_id and old is None:
            raise SilenceError("id", f"no silence {silence_id!r}", status=404)
        # An update that does not say when it starts keeps the start it had (e.g. extending an active one).
        start = utc(starts_at) if starts_at is not None else (old.starts_at if old is not None else now)
        end = utc(ends_at)
        validate(matchers, start, end, created_by, comment)
        if end <= now:
            raise SilenceError("endsAt", "is in the past; a silence must end in the future")
        if old is None or not _can_update(old, replace(old, matchers=matchers, starts_at=start, ends_at=end), now):
            start = max(start, now)  # a silence cannot start in the past: what happened was not muted
            if start >= end:
                raise SilenceError("endsAt", "must be after startsAt")
            if sum(1 for s in self.by_id.values() if s.state(now) != "expired") >= MAX_SILENCES:
                raise SilenceError("matchers", f"too many silences (limit {MAX_SILENCES}); expire some first")
            if old is not None and old.state(now) != "expired":
                await self._expire(old, now)
            new = Silence(str(uuid.uuid4()), matchers, start, end, created_by, comment, now)
        else:
            new = replace(old, starts_at=start, ends_at=end, created_by=created_by, comment=comment, updated_at=now)
        await self._save(new)
        await self.gc(now)
        return new.id

    async def expire(self, silence_id: str, now: datetime) -> Silence:
        """End a silence now. Expiring an expired silence changes nothing."""
        s = self.by_id.get(silence_id)
        if s is None:
            raise SilenceError("id", f"no silence {silence_id!r}", status=404)
        if s.state(now) == "expired":
            return s
        return await self._expire(s, now)

    async def _expire(self, s: Silence, now: datetime) -> Silence:
        # A pending silence never started: it ends where it would have begun, as in Alertmanager.
        new = replace(s, starts_at=min(s.starts_at, now), ends_at=now, updated_at=now)
        await self._save(new)
        return new

    async def _save(self, s: Silence) -> None:
        self.by_id[s.id] = s
        self._index = None
        if self.store is not None:
            await self.store.put(NS, s.id, s.dump())

    async def gc(self, now: datetime) -> int:
        gone = [k for k, s in self.by_id.items() if now - s.ends_at > RETENTION]
        for k in gone:
            del self.by_id[k]
        if gone:
            self._index = None
        if gone and self.store is not None:
            await self.store.put_many(NS, {}, delete=gone)
        return len(gone)

    def _live(self, now: datetime) -> _Index:
        index = self._index
        if index is None or now >= index.stale_at or now < index.built_at:
            index = self._index = _Index(self.by_id.values(), now)
        return index

    def any_live(self, now: datetime) -> bool:
        """Whether any silence has not ended (pending ones included): if not, nothing is silenced."""
        if not self.by_id:
            return False
        index = self._live(now)
        return bool(index.by_label or index.unindexed)

    def silenced_by(self, labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
        if not self.by_id:
            return ()
        index = self._live(now)
        hits = [s.id for s in index.candidates(labels) if s.starts_at <= now < s.ends_at and s.matches(labels)]
        return tuple(sorted(hits)) if len(hits) > 1 else tuple(hits)

    def mutes(self, labels: Mapping[str, str], now: datetime) -> MuteReason | None:
        ids = self.silenced_by(labels, now)
        return MuteReason("silenced", ids) if ids else None


class _Index:
    """Silences not yet ended, by one of their `name="value"` matchers: a label set only meets the silences
    filed under its own values (plus the few without an equality matcher), not every silence there is."""

    def __init__(self, silences: Iterable[Silence], now: datetime) -> None:
        self.built_at = now
        self.by_label: dict[str, dict[str, list[Silence]]] = {}
        self.unindexed: list[Silence] = []
        live = [s for s in silences if s.ends_at > now]
        self.stale_at = min((s.ends_at for s in live), default=datetime.max.replace(tzinfo=now.tzinfo))
        for s in live:
            eq = next((m for m in s.matchers if m.op is MatchType.EQUAL), None)
            if eq is None:
                self.unindexed.append(s)
            else:
                self.by_label.setdefault(eq.name, {}).setdefault(eq.value, []).append(s)

    def candidates(self, labels: Mapping[str, str]) -> list[Silence]:
        out = list(self.unindexed)
        for name, by_value in self.by_label.items():
            out += by_value.get(labels.get(name, ""), ())
        return out
