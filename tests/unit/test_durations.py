from datetime import timedelta

import pytest

from sentinel.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("5m", 300), ("1h30m", 5400), ("1m30s", 90), ("2d", 172800), ("500ms", 0.5), ("0", 0), (7, 7)],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["30m1h", "5q", "", "1h 30m", "-5s", "s", "1.5.2m", True])
def test_invalid(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("td", [timedelta(hours=1, minutes=30), timedelta(seconds=90), timedelta(days=3, seconds=1)])
def test_round_trip(td: timedelta) -> None:
    assert parse_duration(format_duration(td)) == td
