"""Alertmanager's named time intervals, for a route's `mute_time_intervals` and `active_time_intervals`.

Same syntax and meaning as Alertmanager's `timeinterval` package: every field given must match (AND),
any entry of a field may match (OR); times are `[start, end)` minutes of the local day in `location`
(wall-clock time, so an interval follows daylight saving changes); days of the month may count back from
the month's end (`-1` is the last day); ranges are `a:b` inclusive. The parsers raise ValueError with the
message a user sees after `file:line:col:`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = {
    name: i for i, name in enumerate(("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"))
}
MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_TIME = re.compile(r"^(?:([01][0-9]|2[0-3]):([0-5][0-9])|(24):(00))$")


@dataclass(frozen=True, slots=True)
class Span:
    """An inclusive range of integers (weekdays 0=Sunday, days of month, months, years) or, for times,
    minutes of the day with `end` exclusive."""

    begin: int
    end: int


def _sexagesimal(value: int) -> str:
    # YAML 1.1 reads an unquoted 17:30 as the base-60 number 1050; give the user back what they wrote.
    return f"{value // 60}:{value % 60:02d}"


def parse_time(value: str | int) -> int:
    """`HH:MM` (00:00 to 24:00) -> minutes since midnight."""
    text = _sexagesimal(value) if isinstance(value, int) and not isinstance(value, bool) else str(value).strip()
    if len(text) == 4 and text[1] == ":":
        text = "0" + text
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"invalid time {text!r}: expected HH:MM between 00:00 and 24:00")
    hours, minutes = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return int(hours) * 60 + int(minutes)


def parse_times(start: str | int, end: str | int) -> Span:
    s, e = parse_time(start), parse_time(end)
    if s >= e:
        raise ValueError("start_time must be before end_time (an interval crossing midnight is two intervals)")
    return Span(s, e)


def _split(value: str | int) -> tuple[str, str]:
    text = str(value).strip().lower()
    if text.count(":") > 1:
        raise ValueError(f"invalid range {text!r}: expected one value or start:end")
    a, sep, b = text.partition(":")
    return (a.strip(), b.strip()) if sep else (a.strip(), a.strip())


def parse_weekdays(value: str | int) -> Span:
    a, b = _split(value)
    for x in (a, b):
        if x not in WEEKDAYS:
            raise ValueError(f"{x!r} is not a weekday: use sunday … saturday, or a range like monday:friday")
    span = Span(WEEKDAYS[a], WEEKDAYS[b])
    if span.begin > span.end:
        raise ValueError(f"{value!r}: the week starts on sunday, so {a} comes after {b}; list two ranges instead")
    return span


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid {what}") from None


def parse_days_of_month(value: str | int) -> Span:
    if isinstance(value, int) and not isinstance(value, bool) and value > 31:
        value = _sexagesimal(value)  # an unquoted 1:5 reaches us as 65; no single day is above 31
    a, b = _split(value)
    span = Span(_int(a, "day of the month"), _int(b, "day of the month"))
    for day in (span.begin, span.end):
        if day == 0 or not -31 <= day <= 31:
            raise ValueError(f"{day} is not a day of the month: use 1 to 31, or -1 (last day) to -31")
    if span.begin < 0 < span.end:
        raise ValueError(f"{value!r}: the end day must be negative when the start day is")
    # Negative days depend on the month's length; compare as in the shortest month, as Alertmanager does.
    lo = 28 + span.begin if span.begin < 0 else span.begin
    hi = 28 + span.end if span.end < 0 else span.end
    if lo > hi:
        raise ValueError(f"{value!r}: the end day is always before the start day")
    return span


def parse_months(value: str | int) -> Span:
    if isinstance(value, int) and not isinstance(value, bool) and value > 12:
        value = _sexagesimal(value)
    a, b = _split(value)
    span = Span(*(MONTHS[x] if x in MONTHS else _int(x, "month") for x in (a, b)))
    for month in (span.begin, span.end):
        if not 1 <= month <= 12:
            raise ValueError(f"{month} is not a month: use 1 to 12 or a name like january")
    if span.begin > span.end:
        raise ValueError(f"{value!r}: the end month is before the start month")
    return span


def parse_years(value: str | int) -> Span:
    a, b = _split(value)
    span = Span(_int(a, "year"), _int(b, "year"))
    if span.begin < 1 or span.end > 9999:
        raise ValueError(f"{value!r}: years must be between 1 and 9999")
    if span.begin > span.end:
        raise ValueError(f"{value!r}: the end year is before the start year")
    return span


def parse_location(name: str) -> tzinfo:
    """An IANA zone name, `UTC`, or `Local` (the host's zone, looked up at each use; UTC stands in here)."""
    if name == "Local":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name like America/New_York, UTC or Local") from None


def _in(value: int, spans: Iterable[Span]) -> bool:
    return any(s.begin <= value <= s.end for s in spans)


def _days_in_month(t: datetime) -> int:
    return calendar.monthrange(t.year, t.month)[1]


@dataclass(frozen=True)
class TimeInterval:
    """One entry of a named interval. An empty field matches everything."""

    times: tuple[Span, ...] = ()
    weekdays: tuple[Span, ...] = ()
    days_of_month: tuple[Span, ...] = ()
    months: tuple[Span, ...] = ()
    years: tuple[Span, ...] = ()
    location: tzinfo = UTC
    local: bool = False  # `location: Local`: the host's zone

    def contains(self, when: datetime) -> bool:
        t = when.astimezone() if self.local else when.astimezone(self.location)
        if self.times:
            minute = t.hour * 60 + t.minute
            if not any(s.begin <= minute < s.end for s in self.times):
                return False
        if self.days_of_month and not self._day_matches(t):
            return False
        if self.months and not _in(t.month, self.months):
            return False
        # Python counts Monday as 0; Alertmanager (and Go) count Sunday as 0.
        if self.weekdays and not _in((t.weekday() + 1) % 7, self.weekdays):
            return False
        return not self.years or _in(t.year, self.years)

    def _day_matches(self, t: datetime) -> bool:
        length = _days_in_month(t)
        for s in self.days_of_month:
            begin = length + s.begin + 1 if s.begin < 0 else s.begin
            end = length + s.end + 1 if s.end < 0 else s.end
            if begin > length:
                continue  # e.g. 30:31 in February: the range is not in this month at all
            begin, end = max(begin, 1), min(end, length)
            if begin <= t.day <= end:
                return True
        return False


class TimeIntervals:
    """Named intervals from config. A name is active when any of its entries contains the instant."""

    def __init__(self, named: Mapping[str, Iterable[TimeInterval]] | None = None) -> None:
        self.named = {k: tuple(v) for k, v in (named or {}).items()}

    def active(self, name: str, when: datetime) -> bool:
        # An undefined name never matches; `sentinel check` and config loading reject one before we get here.
        return any(i.contains(when) for i in self.named.get(name, ()))

    def __contains__(self, name: object) -> bool:
        return name in self.named

    @classmethod
    def of(cls, named: Iterable[Any]) -> TimeIntervals:
        """From config's `time_intervals` (NamedTimeIntervalConfig: name, time_intervals[].compile())."""
        return cls({n.name: [t.compile() for t in n.time_intervals] for n in named})
