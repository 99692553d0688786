"""Trading calendars and deadline expressions.

A calendar says which local dates are sessions and when each session opens and closes. Built in:

- `XNYS` — NYSE: holidays and half days from the `holidays` package's NYSE financial calendar, regular
  session 09:30–16:00 America/New_York. The early-close time is read from the half-day's label
  ("… (markets close at 1:00pm)"), so historical 14:00/14:30 closes come out right; a label without a
  time falls back to 13:00.
- `XLON` — London Stock Exchange: holidays and half days (24 and 31 Dec, 12:30) from `holidays`' LSE
  calendar, session 08:00–16:30 Europe/London.
- `weekdays` — Monday to Friday, the whole day, UTC (extend it in sentinel.yaml for another timezone).

User calendars come from sentinel.yaml (`CalendarConfig`), optionally extending a built-in with `base:`.
Sessions are built from local wall-clock times with zoneinfo and returned as aware UTC datetimes, so DST
change days get the right instants (a 09:30 New York open is 14:30 UTC in winter and 13:30 in summer).

A deadline expression (`Deadline.parse`) is either `HH:MM` (wall clock on the session's date, in the
rule's timezone) or `open ± offset` / `close ± offset`, the offset in the one duration syntax
(`sentinel.durations`); `close + 45m` on an early close (13:00) is therefore 13:45.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_pkg
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from sentinel.durations import parse_duration

__all__ = [
    "BUILTIN",
    "Calendar",
    "CalendarConfig",
    "Calendars",
    "Deadline",
    "Session",
    "every_day",
    "known_calendars",
    "lookup",
    "parse_clock_time",
    "parse_timezone",
]

_DAY = timedelta(days=1)
# Holidays never close a real exchange for more than a few days in a row; a bounded search keeps a
# misconfigured calendar (no weekdays at all) from looping forever.
_MAX_SEARCH_DAYS = 370
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_LABEL_CLOSE = re.compile(r"close at (\d{1,2}):(\d{2})\s*([ap]m)", re.IGNORECASE)
# 24:00 as a close means "end of the day"; datetime.time cannot say it, so it is a sentinel value.
END_OF_DAY = time.max


def parse_clock_time(text: Any, *, allow_24: bool = False) -> time:
    """`HH:MM` (24-hour) to a time; `24:00` (end of day) only where a close is meant."""
    if isinstance(text, time):
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        # PyYAML (YAML 1.1) reads an unquoted 16:00 as the sexagesimal integer 960
        if allow_24 and text == 1440:
            return END_OF_DAY
        if 0 <= text < 1440:
            return time(text // 60, text % 60)
    m = _HHMM.match(str(text)) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"invalid time {text!r}: expected HH:MM (24-hour), e.g. 16:00")
    hh, mm = int(m.group(1)), int(m.group(2))
    if allow_24 and hh == 24 and mm == 0:
        return END_OF_DAY
    if hh > 23 or mm > 59:
        raise ValueError(f"invalid time {text!r}: hours must be 00–23 and minutes 00–59")
    return time(hh, mm)


def parse_timezone(name: Any) -> ZoneInfo:
    if isinstance(name, ZoneInfo):
        return name
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"invalid timezone {name!r}: expected an IANA name like America/New_York")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}: expected an IANA name like America/New_York or UTC") from exc


def _check_tz(v: Any) -> str:
    return parse_timezone(v).key


def _check_open(v: Any) -> time:
    return parse_clock_time(v)


def _check_close(v: Any) -> time:
    return parse_clock_time(v, allow_24=True)


TimezoneName = Annotated[str, BeforeValidator(_check_tz)]
OpenTime = Annotated[time, BeforeValidator(_check_open)]
CloseTime = Annotated[time, BeforeValidator(_check_close)]


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session, aware UTC. `day` is the local date the session belongs to."""

    open: datetime
    close: datetime
    day: date
    early_close: bool = False


class Calendar:
    """Sessions of one market. Pure and cheap to query: per-date answers are cached."""

    def __init__(
        self,
        name: str,
        tz: ZoneInfo,
        open: time = time(0, 0),
        close: time = END_OF_DAY,
        weekdays: frozenset[int] = frozenset(range(5)),
        holidays: frozenset[date] = frozenset(),
        early_closes: Mapping[date, time] | None = None,
        source: holidays_pkg.HolidayBase | None = None,
        source_half_days: holidays_pkg.HolidayBase | None = None,
        half_day_close: time | None = None,
    ) -> None:
        self.name = name
        self.tz = tz
        self.open = open
        self.close = close
        self.weekdays = weekdays
        self.holidays = holidays
        self.early_closes = dict(early_closes or {})
        self._source = source
        self._source_half_days = source_half_days
        self._half_day_close = half_day_close
        self._cache: dict[date, Session | None] = {}

    def __repr__(self) -> str:
        return f"Calendar({self.name!r}, {self.tz.key})"

    # -- dates ---------------------------------------------------------------------------------------
    def date_of(self, instant: datetime) -> date:
        """The local date of an instant in this calendar's timezone (the period a run is for)."""
        return instant.astimezone(self.tz).date()

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays or (self._source is not None and day in self._source)

    def is_session(self, day: date) -> bool:
        return self.session(day) is not None

    def session(self, day: date) -> Session | None:
        if day in self._cache:
            return self._cache[day]
        out = self._session(day)
        if len(self._cache) > 4096:
            self._cache.clear()  # bounded: callers mostly look at the last few days
        self._cache[day] = out
        return out

    def _session(self, day: date) -> Session | None:
        if day.weekday() not in self.weekdays or self.is_holiday(day):
            return None
        early = self.early_closes.get(day)
        if early is None and self._source_half_days is not None and day in self._source_half_days:
            early = _label_close(self._source_half_days.get(day) or "") or self._half_day_close
        if early is not None and early > self.open and (self.close == END_OF_DAY or early < self.close):
            return Session(self._at(day, self.open), self._at(day, early), day, early_close=True)
        return Session(self._at(day, self.open), self._at(day, self.close), day)

    def _at(self, day: date, t: time) -> datetime:
        if t == END_OF_DAY:
            return self.start_of(day + _DAY)
        # fold=0 and zoneinfo's gap handling give a defined instant even for a wall time DST skips
        return datetime.combine(day, t, tzinfo=self.tz).astimezone(UTC)

    def start_of(self, day: date) -> datetime:
        """Local midnight of `day` as aware UTC (23 or 25 hours apart on DST change days)."""
        return datetime.combine(day, time(0, 0), tzinfo=self.tz).astimezone(UTC)

    # -- navigation ----------------------------------------------------------------------------------
    def previous_session(self, day: date) -> Session | None:
        """The last session strictly before `day`."""
        return next(self.sessions_back(day - _DAY), None)

    def sessions_back(self, day: date) -> Iterator[Session]:
        """Sessions on or before `day`, newest first (bounded, so a calendar with no sessions ends)."""
        for d in _days_back(day):
            s = self.session(d)
            if s is not None:
                yield s

    def next_session(self, day: date) -> Session | None:
        """The first session strictly after `day`."""
        d = day
        for _ in range(_MAX_SEARCH_DAYS):
            d += _DAY
            s = self.session(d)
            if s is not None:
                return s
        return None

    def sessions_between(self, first: date, last: date) -> list[Session]:
        """Sessions with first <= day <= last."""
        out = []
        d = first
        while d <= last:
            s = self.session(d)
            if s is not None:
                out.append(s)
            d += _DAY
        return out

    # -- elapsed time that only counts on the calendar ---------------------------------------------------
    def session_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Time between two instants that falls inside sessions (open to close)."""
        total = timedelta(0)
        for s in self.sessions_between(self.date_of(start) - _DAY, self.date_of(end)):
            total += _overlap(start, end, s.open, s.close)
        return total

    def trading_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Time between two instants that falls on session *dates* (whole local days, any hour)."""
        total = timedelta(0)
        for s in self.sessions_between(self.date_of(start), self.date_of(end)):
            total += _overlap(start, end, self.start_of(s.day), self.start_of(s.day + _DAY))
        return total


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> timedelta:
    lo, hi = max(a0, b0), min(a1, b1)
    return hi - lo if hi > lo else timedelta(0)


def _days_back(start: date) -> Iterator[date]:
    d = start
    for _ in range(_MAX_SEARCH_DAYS):
        yield d
        d -= _DAY


def _label_close(label: str) -> time | None:
    m = _LABEL_CLOSE.search(label)
    if m is None:
        return None
    hh, mm = int(m.group(1)) % 12, int(m.group(2))
    if m.group(3).lower() == "pm":
        hh += 12
    return time(hh, mm)


# -- built-ins --------------------------------------------------------------------------------------


def _xnys() -> Calendar:
    return Calendar(
        "XNYS",
        ZoneInfo("America/New_York"),
        time(9, 30),
        time(16, 0),
        source=holidays_pkg.financial_holidays("NYSE", language="en_US"),
        source_half_days=holidays_pkg.financial_holidays("NYSE", categories=("half_day",), language="en_US"),
        half_day_close=time(13, 0),
    )


def _xlon() -> Calendar:
    return Calendar(
        "XLON",
        ZoneInfo("Europe/London"),
        time(8, 0),
        time(16, 30),
        source=holidays_pkg.financial_holidays("XLON", language="en_GB"),
        source_half_days=holidays_pkg.financial_holidays("XLON", categories=("half_day",), language="en_GB"),
        half_day_close=time(12, 30),
    )


def _weekdays() -> Calendar:
    return Calendar("weekdays", ZoneInfo("UTC"))


BUILTIN = {"XNYS": _xnys, "XLON": _xlon, "weekdays": _weekdays}


_EVERY_DAY: dict[str, Calendar] = {}


def every_day(tz: ZoneInfo) -> Calendar:
    """Every date is a period, the whole day: what a rule without a calendar means."""
    cal = _EVERY_DAY.get(tz.key)
    if cal is None:
        cal = _EVERY_DAY[tz.key] = Calendar(f"every day ({tz.key})", tz, weekdays=frozenset(range(7)))
    return cal


# -- user calendars (sentinel.yaml `calendars:`) -------------------------------------------------------


def _weekday_list(v: Any) -> Any:
    if v is None:
        return v
    if not isinstance(v, list):
        raise ValueError("weekdays must be a list like [mon, tue, wed, thu, fri]")
    out = []
    for item in v:
        word = str(item).strip().lower()
        key = word[:3]
        if key not in _WEEKDAYS or word not in (key, _FULL_NAMES[_WEEKDAYS[key]]):
            raise ValueError(f"invalid weekday {item!r}: expected mon, tue, wed, thu, fri, sat or sun")
        out.append(key)
    return out


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class CalendarConfig(BaseModel):
    """One entry under sentinel.yaml `calendars:`. Unset fields come from `base` (a built-in), else
    UTC, Monday–Friday, the whole day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str | None = None
    timezone: TimezoneName | None = None
    open: OpenTime | None = None
    close: CloseTime | None = None
    weekdays: Annotated[
        list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None, BeforeValidator(_weekday_list)
    ] = None
    holidays: list[date] = Field(default_factory=list)
    early_closes: dict[date, CloseTime] = Field(default_factory=dict)

    @field_validator("base")
    @classmethod
    def _known_base(cls, v: str | None) -> str | None:
        if v is not None and v not in BUILTIN:
            raise ValueError(f"base: unknown built-in calendar {v!r}; built in: {', '.join(sorted(BUILTIN))}")
        return v

    @model_validator(mode="after")
    def _open_before_close(self) -> CalendarConfig:
        open_ = self.open if self.open is not None else (BUILTIN[self.base]().open if self.base else time(0, 0))
        if self.close is not None and self.close != END_OF_DAY and self.close <= open_:
            raise ValueError(f"close ({self.close:%H:%M}) must be after open ({open_:%H:%M})")
        for day, at in sorted(self.early_closes.items()):
            if at != END_OF_DAY and at <= open_:
                raise ValueError(f"early_closes: {day} closes at {at:%H:%M}, not after the open ({open_:%H:%M})")
        return self

    def build(self, name: str) -> Calendar:
        base = BUILTIN[self.base]() if self.base else None
        tz = ZoneInfo(self.timezone) if self.timezone else (base.tz if base else ZoneInfo("UTC"))
        early = dict(base.early_closes) if base else {}
        early.update(self.early_closes)
        return Calendar(
            name,
            tz,
            self.open if self.open is not None else (base.open if base else time(0, 0)),
            self.close if self.close is not None else (base.close if base else END_OF_DAY),
            frozenset(_WEEKDAYS[d] for d in self.weekdays) if self.weekdays is not None else
            (base.weekdays if base else frozenset(range(5))),
            frozenset(self.holidays) | (base.holidays if base else frozenset()),
            early,
            source=base._source if base else None,
            source_half_days=base._source_half_days if base else None,
            half_day_close=base._half_day_close if base else None,
        )  # fmt: skip


def known_calendars(config_calendars: Mapping[str, CalendarConfig] | None = None) -> set[str]:
    """Names a rule group's or rule's `calendar:` may use."""
    return set(BUILTIN) | set(config_calendars or {})


class Calendars:
    """The registry conditions read from `scope.extras["calendars"]`. Built once; calendars are shared."""

    def __init__(self, config_calendars: Mapping[str, CalendarConfig] | None = None) -> None:
        self._configs = dict(config_calendars or {})
        self._built: dict[str, Calendar] = {}

    def names(self) -> set[str]:
        return known_calendars(self._configs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> Calendar:
        cal = self._built.get(name)
        if cal is not None:
            return cal
        if name in self._configs:
            cal = self._configs[name].build(name)
        elif name in BUILTIN:
            cal = BUILTIN[name]()
        else:
            raise KeyError(f"unknown calendar {name!r}; known: {', '.join(sorted(self.names()))}")
        self._built[name] = cal
        return cal


_DEFAULT: Calendars | None = None


def default_calendars() -> Calendars:
    """The built-ins only, shared, for conditions evaluated without a configured registry."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Calendars()
    return _DEFAULT


def lookup(extras: Mapping[str, Any], name: str | None, tz: ZoneInfo | None = None) -> Calendar:
    """The calendar a condition uses: `name` from the registry in `extras["calendars"]` (the built-ins
    when the engine was given none), or every day in `tz` (else UTC) when no calendar is named.
    Raises KeyError for an unknown name (`sentinel check` reports those before they get here)."""
    if name is None:
        return every_day(tz or ZoneInfo("UTC"))
    registry = extras.get("calendars")
    if not isinstance(registry, Calendars):
        registry = default_calendars()
    return registry.get(name)


# -- deadline expressions ----------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(open|close)\s*(?:([+-])\s*(.*?))?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Deadline:
    """`HH:MM` (anchor "time") or `open|close ± offset` (anchor "open"/"close")."""

    text: str
    anchor: Literal["time", "open", "close"]
    at: time | None = None
    offset: timedelta = timedelta(0)

    @classmethod
    def parse(cls, text: Any) -> Deadline:
        if isinstance(text, Deadline):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(f"{text // 60:02d}:{text % 60:02d}", "time", parse_clock_time(text))
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"invalid deadline {text!r}: expected HH:MM, or open/close ± offset like close + 45m")
        s = text.strip()
        if ":" in s and _HHMM.match(s):
            try:
                return cls(s, "time", parse_clock_time(s))
            except ValueError as exc:
                raise ValueError(f"invalid deadline {s!r}: {exc}") from None
        m = _RELATIVE.match(s)
        if m is None:
            raise ValueError(
                f"invalid deadline {s!r}: expected HH:MM (e.g. 18:00), or open/close ± offset (e.g. close + 45m)"
            )
        anchor = m.group(1).lower()
        sign, raw = m.group(2), m.group(3)
        if sign is None:
            return cls(s, anchor, None)  # type: ignore[arg-type]
        if not raw:
            raise ValueError(f"invalid deadline {s!r}: missing offset after {sign!r} (e.g. {anchor} {sign} 45m)")
        try:
            offset = parse_duration(raw)
        except ValueError:
            raise ValueError(
                f"invalid deadline {s!r}: offset {raw!r} is not a duration (use e.g. 45m, 90m, 2h)"
            ) from None
        return cls(s, anchor, None, -offset if sign == "-" else offset)  # type: ignore[arg-type]

    def resolve(self, session: Session, tz: ZoneInfo) -> datetime:
        """The deadline instant (aware UTC) for a session; `tz` is where an HH:MM deadline is read."""
        if self.anchor == "open":
            return session.open + self.offset
        if self.anchor == "close":
            return session.close + self.offset
        assert self.at is not None
        return datetime.combine(session.day, self.at, tzinfo=tz).astimezone(UTC)

    def __str__(self) -> str:
        return self.text
