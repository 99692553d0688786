"""Trading calendars and deadline expressions."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
import yaml
from pydantic import ValidationError

from sentinel.calendars import (
    BUILTIN,
    END_OF_DAY,
    CalendarConfig,
    Calendars,
    Deadline,
    Session,
    every_day,
    known_calendars,
    lookup,
)
from sentinel.config import Config


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture(scope="module")
def cals() -> Calendars:
    return Calendars()


def test_xnys_thanksgiving_closed_and_day_after_closes_at_13(cals: Calendars) -> None:
    x = cals.get("XNYS")
    assert not x.is_session(date(2026, 11, 26))
    assert x.session(date(2026, 11, 26)) is None
    s = x.session(date(2026, 11, 27))
    assert s == Session(utc(2026, 11, 27, 14, 30), utc(2026, 11, 27, 18, 0), date(2026, 11, 27), early_close=True)
    # an ordinary day: 09:30–16:00 New York, EST
    assert x.session(date(2026, 11, 25)) == Session(
        utc(2026, 11, 25, 14, 30), utc(2026, 11, 25, 21, 0), date(2026, 11, 25)
    )
    assert x.session(date(2026, 12, 24)).close == utc(2026, 12, 24, 18, 0)  # type: ignore[union-attr]


def test_xnys_good_friday_and_weekends(cals: Calendars) -> None:
    x = cals.get("XNYS")
    assert not x.is_session(date(2026, 4, 3))  # Good Friday
    assert not x.is_session(date(2026, 11, 28))  # Saturday
    assert x.previous_session(date(2026, 4, 6)).day == date(2026, 4, 2)  # type: ignore[union-attr]
    assert x.next_session(date(2026, 4, 2)).day == date(2026, 4, 6)  # type: ignore[union-attr]


def test_xnys_sessions_follow_dst(cals: Calendars) -> None:
    x = cals.get("XNYS")
    # 2026-03-08 (Sunday) New York springs forward: the open moves from 14:30 to 13:30 UTC
    assert x.session(date(2026, 3, 6)).open == utc(2026, 3, 6, 14, 30)  # type: ignore[union-attr]
    assert x.session(date(2026, 3, 9)).open == utc(2026, 3, 9, 13, 30)  # type: ignore[union-attr]
    # 2026-11-01 (Sunday) falls back
    assert x.session(date(2026, 10, 30)).close == utc(2026, 10, 30, 20, 0)  # type: ignore[union-attr]
    assert x.session(date(2026, 11, 2)).close == utc(2026, 11, 2, 21, 0)  # type: ignore[union-attr]
    # the DST days themselves are 23 and 25 hours long in local time
    assert x.start_of(date(2026, 3, 9)) - x.start_of(date(2026, 3, 8)) == timedelta(hours=23)
    assert x.start_of(date(2026, 11, 2)) - x.start_of(date(2026, 11, 1)) == timedelta(hours=25)


def test_sessions_between_skips_holidays(cals: Calendars) -> None:
    days = [s.day for s in cals.get("XNYS").sessions_between(date(2026, 11, 23), date(2026, 11, 30))]
    assert days == [date(2026, 11, d) for d in (23, 24, 25, 27, 30)]


def test_xlon_boxing_day_good_friday_and_half_days(cals: Calendars) -> None:
    x = cals.get("XLON")
    assert not x.is_session(date(2025, 12, 26))  # Boxing Day
    assert not x.is_session(date(2026, 12, 28))  # Boxing Day (observed; the 26th is a Saturday)
    assert not x.is_session(date(2026, 4, 3))  # Good Friday
    assert not x.is_session(date(2026, 4, 6))  # Easter Monday
    assert x.session(date(2026, 12, 24)) == Session(
        utc(2026, 12, 24, 8, 0), utc(2026, 12, 24, 12, 30), date(2026, 12, 24), early_close=True
    )
    assert x.session(date(2026, 12, 31)).close == utc(2026, 12, 31, 12, 30)  # type: ignore[union-attr]
    # British Summer Time: 08:00 London is 07:00 UTC
    assert x.session(date(2026, 6, 1)) == Session(utc(2026, 6, 1, 7, 0), utc(2026, 6, 1, 15, 30), date(2026, 6, 1))


def test_weekdays_is_whole_utc_weekdays(cals: Calendars) -> None:
    w = cals.get("weekdays")
    assert w.session(date(2026, 11, 26)) == Session(utc(2026, 11, 26), utc(2026, 11, 27), date(2026, 11, 26))
    assert not w.is_session(date(2026, 11, 28))


def test_user_calendar_extending_a_builtin() -> None:
    cfg = CalendarConfig.model_validate(
        {
            "base": "XNYS",
            "holidays": [date(2026, 11, 25)],
            "early_closes": {date(2026, 11, 24): "14:00"},
        }
    )
    cals = Calendars({"desk": cfg})
    c = cals.get("desk")
    assert c.tz.key == "America/New_York"
    assert not c.is_session(date(2026, 11, 25))  # the desk's own holiday
    assert not c.is_session(date(2026, 11, 26))  # inherited Thanksgiving
    assert c.session(date(2026, 11, 24)).close == utc(2026, 11, 24, 19, 0)  # type: ignore[union-attr]
    assert c.session(date(2026, 11, 27)).close == utc(2026, 11, 27, 18, 0)  # type: ignore[union-attr]
    assert known_calendars({"desk": cfg}) == set(BUILTIN) | {"desk"}
    assert "desk" in cals and "nope" not in cals
    assert lookup({"calendars": cals}, "desk") is c


def test_user_calendar_from_scratch_and_in_config() -> None:
    cfg = Config.model_validate(
        {
            "receivers": [{"name": "r", "console": True}],
            "route": {"receiver": "r"},
            "calendars": {
                "tokyo": {
                    "timezone": "Asia/Tokyo",
                    "open": "09:00",
                    "close": "15:30",
                    "weekdays": ["mon", "tue", "wed", "thu", "friday"],
                    "holidays": ["2026-11-23"],
                }
            },
        }
    )
    c = Calendars(cfg.calendars).get("tokyo")
    assert not c.is_session(date(2026, 11, 23))
    assert c.session(date(2026, 11, 24)) == Session(
        utc(2026, 11, 24, 0, 0), utc(2026, 11, 24, 6, 30), date(2026, 11, 24)
    )
    assert not c.is_session(date(2026, 11, 28))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"open": "9h30"}, "invalid time '9h30'"),
        ({"open": "16:00", "close": "09:30"}, "close (09:30) must be after open (16:00)"),
        ({"weekdays": ["mon", "funday"]}, "invalid weekday 'funday'"),
        ({"base": "XTKS"}, "unknown built-in calendar 'XTKS'"),
        ({"holidays": ["2026-13-01"]}, "holidays.0"),
        ({"sessions": []}, "Extra inputs are not permitted"),
    ],
)
def test_user_calendar_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        CalendarConfig.model_validate(data)
    assert message in str(err.value)


def test_unknown_calendar_names_the_known_ones(cals: Calendars) -> None:
    with pytest.raises(KeyError, match="unknown calendar 'XTKS'; known: XLON, XNYS, weekdays"):
        cals.get("XTKS")


def test_calendar_time_counting(cals: Calendars) -> None:
    x = cals.get("XNYS")
    wed_close = utc(2026, 11, 25, 21, 50)  # 16:50 New York
    fri = utc(2026, 11, 27, 21, 50)
    # Thanksgiving does not count: exactly one trading day
    assert x.trading_time_between(wed_close, fri) == timedelta(days=1)
    # session time: Friday's early session only (09:30–13:00)
    assert x.session_time_between(wed_close, fri) == timedelta(hours=3, minutes=30)
    assert every_day(x.tz).trading_time_between(wed_close, fri) == timedelta(days=2)


@pytest.mark.parametrize(
    ("text", "anchor", "at", "offset"),
    [
        ("18:00", "time", time(18, 0), timedelta(0)),
        ("7:05", "time", time(7, 5), timedelta(0)),
        ("close + 45m", "close", None, timedelta(minutes=45)),
        ("close+90m", "close", None, timedelta(minutes=90)),
        ("open - 30m", "open", None, timedelta(minutes=-30)),
        ("close", "close", None, timedelta(0)),
    ],
)
def test_deadline_parse(text: str, anchor: str, at: time | None, offset: timedelta) -> None:
    d = Deadline.parse(text)
    assert (d.anchor, d.at, d.offset, str(d)) == (anchor, at, offset, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("close + 45x", "invalid deadline 'close + 45x': offset '45x' is not a duration"),
        ("close +", "missing offset after '+'"),
        ("24:30", "hours must be 00–23"),
        ("noon", "expected HH:MM (e.g. 18:00), or open/close ± offset"),
        ("close * 2", "expected HH:MM"),
        ("", "invalid deadline ''"),
    ],
)
def test_deadline_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="invalid") as err:
        Deadline.parse(text)
    assert message in str(err.value)


def test_deadline_resolves_on_early_close(cals: Calendars) -> None:
    x = cals.get("XNYS")
    fri = x.session(date(2026, 11, 27))
    assert fri is not None
    assert Deadline.parse("close + 45m").resolve(fri, x.tz) == utc(2026, 11, 27, 18, 45)  # 13:45 New York
    assert Deadline.parse("18:00").resolve(fri, x.tz) == utc(2026, 11, 27, 23, 0)


def test_user_calendar_from_yaml_with_unquoted_times() -> None:
    """PyYAML reads unquoted 16:00 as the sexagesimal integer 960 and 2026-12-24 as a date."""
    data = yaml.safe_load("base: XLON\nclose: 16:35\nearly_closes: {2026-12-23: 12:30}\nholidays: [2026-12-22]\n")
    c = CalendarConfig.model_validate(data).build("lse-auction")
    assert c.session(date(2026, 12, 21)).close == utc(2026, 12, 21, 16, 35)  # type: ignore[union-attr]
    assert c.session(date(2026, 12, 23)).close == utc(2026, 12, 23, 12, 30)  # type: ignore[union-attr]
    assert not c.is_session(date(2026, 12, 22))
    assert CalendarConfig.model_validate(yaml.safe_load("close: 24:00")).build("x").close == END_OF_DAY
    with pytest.raises(ValidationError, match="2026-12-23 closes at 07:00, not after the open"):
        CalendarConfig.model_validate({"base": "XLON", "early_closes": {"2026-12-23": "07:00"}})
    assert Deadline.parse(yaml.safe_load("18:00")).at == time(18, 0)
