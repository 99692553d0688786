"""The generic change-feed scanner: windows split on overflow, tokens followed, offset fallback, budget."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from adapters.windows import Page, SeenSet, Window, feed_windows, fingerprint, scan, scan_feed

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    id: int
    at: datetime


class Feed:
    """An in-memory server: rows filtered by [lo, hi] on `at`, paged by offset or by keyset token."""

    def __init__(self, rows: list[Row], *, keyset: bool = False, page_cap: int = 100) -> None:
        self.rows = rows
        self.keyset = keyset
        self.page_cap = page_cap
        self.calls: list[tuple[Window, int, str | None]] = []
        self.on_call: list = []  # callables run before answering call i, to mutate rows mid-scan

    async def __call__(self, w: Window, offset: int, token: str | None) -> Page[Row]:
        if len(self.calls) < len(self.on_call) and self.on_call[len(self.calls)] is not None:
            self.on_call[len(self.calls)](self)
        self.calls.append((w, offset, token))
        match = sorted((r for r in self.rows if w.lo <= r.at <= w.hi), key=lambda r: (r.at, r.id))
        if self.keyset:
            after = int(token) if token else -1
            rest = [r for r in match if r.id > after] if token else match
            rest.sort(key=lambda r: r.id)
            page = rest[: self.page_cap]
            more = len(rest) > self.page_cap
            return Page(page, len(match), str(page[-1].id) if more else None, keyset=True)
        return Page(match[offset : offset + self.page_cap], len(match))


def rows_every(seconds: float, count: int, start: datetime = T0) -> list[Row]:
    return [Row(i, start + timedelta(seconds=seconds * i)) for i in range(count)]


def test_halves_cover_the_window_without_gap_or_overlap() -> None:
    w = Window(T0, T0 + timedelta(seconds=1, microseconds=1))
    left, right = w.halves()
    assert left.lo == w.lo and right.hi == w.hi
    assert right.lo - left.hi == timedelta(microseconds=1)
    tiny = Window(T0, T0 + timedelta(microseconds=1))
    assert not tiny.splittable(timedelta(0))


async def test_window_that_fits_one_page_costs_one_request() -> None:
    feed = Feed(rows_every(1, 40))
    res = await scan(feed, Window(T0, T0 + timedelta(minutes=5)), key=lambda r: r.id, page_size=100, budget=10)
    assert [r.id for r in res.items] == list(range(40))
    assert res.requests == 1 and res.completed_to == T0 + timedelta(minutes=5) and not res.exhausted


async def test_overflowing_window_is_split_until_each_half_fits_one_page() -> None:
    feed = Feed(rows_every(0.2, 250))  # 50 s of rows
    window = Window(T0, T0 + timedelta(seconds=60))
    res = await scan(feed, window, key=lambda r: r.id, page_size=100, budget=50)
    assert sorted(r.id for r in res.items) == list(range(250))
    assert len(res.items) == 250  # each row exactly once
    # Rows come oldest window first, so a row's states are reported in order.
    assert [r.at for r in res.items] == sorted(r.at for r in res.items)
    assert res.completed_to == window.hi
    # Only windows that held at most one page were taken; bigger ones cost one probe each, then split.
    assert all(offset == 0 for _, offset, _ in feed.calls)
    taken = {w for w in res.windows}
    assert all(sum(1 for r in feed.rows if w.lo <= r.at <= w.hi) <= 100 for w in taken)


async def test_unsplittable_window_falls_back_to_overlapping_offset_pages() -> None:
    same = [Row(i, T0) for i in range(230)]  # a bulk update: one timestamp for all rows
    feed = Feed(same)
    res = await scan(
        feed, Window(T0, T0 + timedelta(microseconds=500)), key=lambda r: r.id, page_size=100, budget=50,
        min_span=timedelta(milliseconds=1),
    )  # fmt: skip
    assert sorted(r.id for r in res.items) == list(range(230))
    offsets = [o for _, o, _ in feed.calls]
    assert offsets == [0, 90, 180]  # pages overlap by 10 rows


async def test_rows_leaving_the_window_mid_scan_do_not_open_a_gap() -> None:
    same = [Row(i, T0) for i in range(150)]
    feed = Feed(same)

    def three_rows_change(f: Feed) -> None:
        # Rows 0-2 get updated after the first page was read: they move out of the window, shifting the rest.
        for i in range(3):
            f.rows[i] = Row(i, T0 + timedelta(hours=1))

    feed.on_call = [None, three_rows_change]
    res = await scan(feed, Window(T0, T0), key=lambda r: r.id, page_size=100, budget=10)
    assert sorted(r.id for r in res.items) == list(range(150))


async def test_keyset_tokens_are_followed_when_the_budget_allows() -> None:
    feed = Feed(rows_every(0.1, 350), keyset=True)
    res = await scan(feed, Window(T0, T0 + timedelta(minutes=1)), key=lambda r: r.id, page_size=100, budget=10)
    assert sorted(r.id for r in res.items) == list(range(350))
    assert res.requests == 4  # no splitting: the token pages through
    assert [t for _, _, t in feed.calls] == [None, "99", "199", "299"]


async def test_keyset_window_too_big_for_the_budget_is_split_instead() -> None:
    feed = Feed(rows_every(0.1, 600), keyset=True)
    res = await scan(feed, Window(T0, T0 + timedelta(minutes=1)), key=lambda r: r.id, page_size=100, budget=4)
    assert res.exhausted
    assert res.completed_to is not None and res.completed_to < T0 + timedelta(minutes=1)
    # Everything up to completed_to was read; the rest waits for the next cycle.
    done = {r.id for r in feed.rows if r.at <= res.completed_to}
    assert done and done <= {r.id for r in res.items}


async def test_budget_exhaustion_reports_progress_contiguously_from_the_start() -> None:
    feed = Feed(rows_every(0.05, 2000))
    window = Window(T0, T0 + timedelta(seconds=100))
    res = await scan(feed, window, key=lambda r: r.id, page_size=100, budget=8)
    assert res.exhausted and res.completed_to is not None
    read = {r.id for r in res.items}
    assert {r.id for r in feed.rows if r.at <= res.completed_to} <= read
    # A second scan from there finishes the job.
    rest = await scan(feed, Window(res.completed_to, window.hi), key=lambda r: r.id, page_size=100, budget=1000)
    assert read | {r.id for r in rest.items} == set(range(2000))


def test_feed_windows_split_the_cycle_into_new_range_and_overlap() -> None:
    now = T0 + timedelta(minutes=10)
    tick = timedelta(microseconds=1)
    new, old = feed_windows(T0, now, timedelta(seconds=60), timedelta(hours=1))
    assert new == Window(T0, now) and old == Window(T0 - timedelta(seconds=60), T0 - tick)
    first_new, first_old = feed_windows(None, now, timedelta(seconds=60), timedelta(minutes=5))
    assert first_new == Window(now - timedelta(minutes=5), now) and first_old is None
    late_new, _ = feed_windows(now + timedelta(minutes=2), now, timedelta(seconds=60), timedelta(0))
    assert late_new is None


async def test_scan_feed_costs_one_request_when_the_cycle_fits_a_page() -> None:
    feed = Feed(rows_every(1, 50, start=T0 - timedelta(seconds=30)))
    res = await scan_feed(feed, T0, T0 + timedelta(seconds=15), overlap=timedelta(seconds=60),
                          first_lookback=timedelta(0), key=lambda r: r.id, page_size=100, budget=25)  # fmt: skip
    assert res.requests == 1 and len(res.items) == 46 and res.high_water == T0 + timedelta(seconds=15)


async def test_scan_feed_under_backlog_still_moves_the_high_water_mark_every_cycle() -> None:
    # Far more changes than a cycle's budget, inside the overlap and after it: every cycle must progress.
    feed = Feed(rows_every(0.05, 8_000, start=T0 - timedelta(seconds=60)))
    now = T0 + timedelta(seconds=340)
    hwm: datetime | None = T0
    got: set[int] = set()
    marks = []
    for _ in range(40):
        res = await scan_feed(feed, hwm, now, overlap=timedelta(seconds=60), first_lookback=timedelta(0),
                              key=lambda r: r.id, page_size=100, budget=25)  # fmt: skip
        assert res.requests <= 25 + 4 * 4 + 1
        got |= {r.id for r in res.items}
        marks.append(res.high_water)
        hwm = res.high_water
        if hwm == now:
            break
    assert all(b > a for a, b in itertools.pairwise(marks) if a != now)
    assert hwm == now
    assert {r.id for r in feed.rows if r.at >= T0} <= got


async def test_scan_feed_follows_keyset_tokens_over_the_whole_range() -> None:
    feed = Feed(rows_every(0.2, 300, start=T0 - timedelta(seconds=50)), keyset=True)
    res = await scan_feed(feed, T0, T0 + timedelta(seconds=15), overlap=timedelta(seconds=60),
                          first_lookback=timedelta(0), key=lambda r: r.id, page_size=100, budget=25)  # fmt: skip
    assert res.requests == 3 and len(res.items) == 300 and res.high_water == T0 + timedelta(seconds=15)


def test_seen_set_forgets_only_what_no_future_window_can_return() -> None:
    seen = SeenSet()
    assert seen.add("a", T0)
    assert not seen.add("a", T0)
    assert seen.add("b", T0 + timedelta(seconds=30))
    seen.add("a", T0 + timedelta(seconds=40))  # re-read later: kept as long as that later window
    seen.prune(T0 + timedelta(seconds=35))
    assert "a" in seen and "b" not in seen


def test_seen_set_round_trips_through_json_and_stays_bounded() -> None:
    seen = SeenSet(limit=3)
    for i in range(5):
        seen.add(f"t{i}", T0 + timedelta(seconds=i))
    seen.prune(T0)
    assert len(seen) == 3 and "t4" in seen and "t0" not in seen
    again = SeenSet.from_json(seen.to_json())
    assert len(again) == 3 and "t4" in again
    assert len(SeenSet.from_json({"not a time": ["x"], "2026-01-01T00:00:00+00:00": 7})) == 0


@pytest.mark.parametrize("parts", [("run", "a", 1), ("run", None, "")])
def test_fingerprint_is_stable_and_short(parts: tuple) -> None:
    assert fingerprint(*parts) == fingerprint(*parts)
    assert len(fingerprint(*parts)) == 12
    assert fingerprint("a", "b") != fingerprint("ab")
