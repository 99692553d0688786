"""Per-day tallies kept for a bounded number of days: the input of every `window="Nd"` ratio."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sentinel.clock import utc

KEEP_DAYS = 31
WINDOWS: tuple[tuple[str, int], ...] = (("1d", 1), ("7d", 7), ("30d", 30))


def day_number(instant: datetime) -> int:
    """The UTC calendar day of an aware instant, as a proleptic ordinal."""
    return utc(instant).date().toordinal()


class DayTally:
    """Two counts per day — (good, bad) — for the last KEEP_DAYS days."""

    __slots__ = ("days",)

    def __init__(self, days: dict[int, list[int]] | None = None) -> None:
        self.days: dict[int, list[int]] = days if days is not None else {}

    def add(self, day: int, good: bool) -> None:
        counts = self.days.get(day)
        if counts is None:
            counts = self.days[day] = [0, 0]
            self.prune(max(self.days))
        counts[0 if good else 1] += 1

    def prune(self, today: int) -> None:
        for d in [d for d in self.days if d <= today - KEEP_DAYS]:
            del self.days[d]

    def window(self, today: int, days: int) -> tuple[int, int]:
        """(good, bad) over the `days` calendar days ending with `today` (today counts as one)."""
        good = bad = 0
        first = today - days + 1
        # Copy: a scrape reads this from the render thread while the loop may add a day.
        for d, (g, b) in list(self.days.items()):
            if first <= d <= today:
                good += g
                bad += b
        return good, bad

    def dump(self) -> dict[str, list[int]]:
        return {str(d): list(c) for d, c in self.days.items()}

    @classmethod
    def load(cls, data: Mapping[str, Any] | None) -> DayTally:
        return cls({int(d): [int(c[0]), int(c[1])] for d, c in (data or {}).items()})


def ratios(tally: DayTally, today: int) -> list[tuple[str, float]]:
    """good / (good + bad) per window; a window with nothing in it has no ratio (not 0, not 1)."""
    out = []
    for name, n in WINDOWS:
        good, bad = tally.window(today, n)
        if good + bad:
            out.append((name, good / (good + bad)))
    return out
