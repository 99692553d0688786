"""Scheduler-agnostic change-feed scanning: time windows, paging, overlap and de-duplication.

A change feed is "rows whose last change falls in [lo, hi]", read a page at a time. Two paging styles exist
in the wild: keyset (the server hands back a continuation token) and offset (limit/offset plus a total
count). Offset paging is unsafe while rows move: a row that changes during the scan leaves the window and
shifts every later row one place back, so a row can be skipped. Hence the strategy:

- a window whose rows fit one page is read with one request, which is exact;
- a bigger window is followed through its continuation tokens when the server offers them and the request
  budget allows, and otherwise split in halves until each half fits one page;
- a window that cannot be split any further (a bulk update stamping hundreds of rows with one timestamp)
  falls back to paging, offset pages overlapping a little so a few rows leaving cannot open a gap.

Windows are read oldest first, and `completed_to` is the end of the last window read completely, so a
caller that ran out of budget resumes from there next time instead of losing or rereading everything.

`SeenSet` is the other half: the next scan re-reads `overlap` before the last high-water mark (commits land
late), and the seen set stops those re-read rows from being reported twice.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sentinel.clock import utc

T = TypeVar("T")

_TICK = timedelta(microseconds=1)  # finest timestamp resolution schedulers store (Postgres, SQLite ISO)


@dataclass(frozen=True)
class Window:
    """Both ends inclusive, as `*_gte` / `*_lte` filters are."""

    lo: datetime
    hi: datetime

    @property
    def span(self) -> timedelta:
        return self.hi - self.lo

    def splittable(self, min_span: timedelta) -> bool:
        return self.span >= max(min_span, 2 * _TICK)

    def halves(self) -> tuple[Window, Window]:
        # Whole microseconds, so the two halves neither overlap nor leave a gap between them.
        mid = self.lo + timedelta(microseconds=(self.span // _TICK) // 2)
        return Window(self.lo, mid), Window(mid + _TICK, self.hi)


@dataclass
class Page(Generic[T]):
    items: list[T]
    total: int | None = None  # rows the server says match the window (may be capped), if it says
    next_token: str | None = None  # keyset continuation; None when there is no further page
    keyset: bool = False  # the server pages by token for this feed


# fetch(window, offset, token): token None asks for the first page. Offset is used only when keyset is False.
PageFetcher = Callable[[Window, int, str | None], Awaitable[Page[T]]]


@dataclass
class ScanResult(Generic[T]):
    items: list[T] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)  # window each item was read in, parallel to items
    completed_to: datetime | None = None  # hi of the last window read completely, in order
    requests: int = 0
    exhausted: bool = False  # the budget ran out before the whole range was read


async def scan(
    fetch: PageFetcher[T],
    window: Window,
    *,
    key: Callable[[T], Hashable],
    page_size: int,
    budget: int,
    min_span: timedelta = timedelta(seconds=1),
    page_overlap: int = 10,
    hard_limit: int | None = None,
) -> ScanResult[T]:
    """Read every row of `window`, splitting, following tokens or offset-paging as described above.

    `budget` is checked before each new window, and only once some window has been completed, so every
    scan makes progress (descending to the first window that fits, or paging one that cannot be split)
    within `hard_limit` requests in all.

    `min_span` stops the halving: below it, a window that still overflows is paged instead. Halving a
    minute down to a millisecond costs ~16 probes, which a scheduler inserting a few hundred rows in one
    transaction (one timestamp: a big DAG's task instances when its run is created) would pay every time.
    """
    hard = hard_limit if hard_limit is not None else budget * 4
    result: ScanResult[T] = ScanResult()
    pending: deque[Window] = deque([window])
    while pending:
        if (result.requests >= budget and result.completed_to is not None) or result.requests >= hard:
            result.exhausted = True
            return result
        current = pending[0]
        first = await fetch(current, 0, None)
        result.requests += 1
        if not _has_more(first, 0, page_size):
            _take(result, current, first.items)
            result.completed_to = current.hi
            pending.popleft()
            continue
        pages_needed = _pages_needed(first, page_size)
        keyset_fits = first.keyset and pages_needed is not None and pages_needed <= budget - result.requests
        if not keyset_fits and current.splittable(min_span):
            # The first page is dropped: it may hold rows of either half, and reporting them now would put
            # a row's state out of order relative to rows the first half reports next.
            pending.popleft()
            left, right = current.halves()
            pending.appendleft(right)
            pending.appendleft(left)
            continue
        done = await _page_through(fetch, current, first, result, key, page_size, page_overlap, hard)
        if not done:
            result.exhausted = True
            return result
        result.completed_to = current.hi
        pending.popleft()
    return result


def _has_more(page: Page[Any], offset: int, page_size: int) -> bool:
    if page.keyset:
        return page.next_token is not None
    if page.total is not None:
        return page.total > offset + len(page.items)
    return len(page.items) >= page_size


def _pages_needed(page: Page[Any], page_size: int) -> int | None:
    if page.total is None:
        return None
    return max(0, math.ceil((page.total - len(page.items)) / page_size))


def _take(result: ScanResult[T], window: Window, items: Iterable[T]) -> None:
    for item in items:
        result.items.append(item)
        result.windows.append(window)


async def _page_through(
    fetch: PageFetcher[T],
    window: Window,
    first: Page[T],
    result: ScanResult[T],
    key: Callable[[T], Hashable],
    page_size: int,
    page_overlap: int,
    hard_limit: int,
) -> bool:
    """Read the rest of one window; True when it was read to its end."""
    seen: set[Hashable] = set()

    def take(items: list[T]) -> None:
        fresh = []
        for item in items:
            k = key(item)
            if k not in seen:
                seen.add(k)
                fresh.append(item)
        _take(result, window, fresh)

    take(first.items)
    page, offset = first, 0
    # Offset pages overlap so that up to `page_overlap` rows leaving the window mid-scan cannot open a gap.
    step = max(1, page_size - page_overlap)
    while _has_more(page, offset, page_size):
        if result.requests >= hard_limit:
            return False
        if page.keyset:
            page = await fetch(window, 0, page.next_token)
        else:
            offset += step
            page = await fetch(window, offset, None)
        result.requests += 1
        if not page.items:
            break
        take(page.items)
    return True


def feed_windows(
    high_water: datetime | None, server_now: datetime, overlap: timedelta, first_lookback: timedelta
) -> tuple[Window | None, Window | None]:
    """This cycle's (new, overlap) ranges: [high_water, now] and [high_water - overlap, high_water).

    They are two scans, the new range first: only it moves the high-water mark, so when a backlog exceeds
    the request budget the next cycle goes on from there instead of spending its budget re-reading (and
    re-splitting) the overlap it already read. A first cycle reads `first_lookback` back and has no overlap.
    """
    if high_water is None:
        lo = server_now - first_lookback
        return (Window(lo, server_now) if server_now > lo else None), None
    new = Window(high_water, server_now) if server_now > high_water else None
    old = Window(high_water - overlap, high_water - _TICK) if overlap > _TICK else None
    return new, old


def fingerprint(*parts: Any) -> str:
    """A short stable digest of what was reported; equal digests mean "this change was already seen"."""
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    # 48 bits: at the SeenSet's 20,000-entry cap a collision (one change not reported) is a 1e-6 event.
    return hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()


class SeenSet:
    """Changes reported recently, each kept until the window that could return it again has passed.

    An entry is a digest of (row identity, row content). It stays while a later scan could still return that
    row unchanged, i.e. while the high end of the window it was last read in is at or after the next scan's
    low end. `limit` bounds the size; when full the oldest go first (a duplicate is reported, nothing lost).
    """

    def __init__(self, entries: dict[str, datetime] | None = None, limit: int = 20_000) -> None:
        self._until: dict[str, datetime] = dict(entries or {})
        self._limit = limit

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, token: str) -> bool:
        return token in self._until

    def add(self, token: str, until: datetime) -> bool:
        """Record `token` as seen up to `until`; True if it was new."""
        known = self._until.get(token)
        self._until[token] = until if known is None or until > known else known
        return known is None

    def prune(self, before: datetime) -> None:
        self._until = {t: u for t, u in self._until.items() if u >= before}
        if len(self._until) > self._limit:
            keep = sorted(self._until.items(), key=lambda kv: kv[1])[-self._limit :]
            self._until = dict(keep)

    def to_json(self) -> dict[str, str]:
        """{until ISO: "token token ..."}: compact, since a busy source keeps thousands of entries."""
        grouped: dict[str, list[str]] = {}
        for token, until in self._until.items():
            grouped.setdefault(until.isoformat(), []).append(token)
        return {until: " ".join(tokens) for until, tokens in grouped.items()}

    @classmethod
    def from_json(cls, data: Any, limit: int = 20_000) -> SeenSet:
        entries: dict[str, datetime] = {}
        if isinstance(data, dict):
            for until, tokens in data.items():
                try:
                    when = utc(datetime.fromisoformat(until))
                except (TypeError, ValueError):
                    continue
                if isinstance(tokens, str):
                    tokens = tokens.split()
                if isinstance(tokens, list):
                    entries.update((str(t), when) for t in tokens)
        return cls(entries, limit)


@dataclass
class FeedScan(Generic[T]):
    items: list[T] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)  # window each item was read in, parallel to items
    high_water: datetime | None = None  # where the next cycle's new range starts
    requests: int = 0
    exhausted: bool = False


async def scan_feed(
    fetch: PageFetcher[T],
    high_water: datetime | None,
    server_now: datetime,
    *,
    overlap: timedelta,
    first_lookback: timedelta,
    key: Callable[[T], Hashable],
    page_size: int,
    budget: int,
    overlap_budget: int = 4,
    min_span: timedelta = timedelta(seconds=1),
) -> FeedScan[T]:
    """One cycle of a change feed: everything changed in [high_water - overlap, server_now].

    Usually that is one request: the whole range fits a page (or a few keyset pages). When it does not,
    the new range is scanned first with `budget`, then the overlap with what is left (at least
    `overlap_budget`), so a backlog always moves the high-water mark forward.
    """
    out: FeedScan[T] = FeedScan(high_water=high_water)
    new, old = feed_windows(high_water, server_now, overlap, first_lookback)
    if new is not None and old is not None:
        whole = Window(old.lo, new.hi)
        probe = await fetch(whole, 0, None)
        out.requests += 1
        pages = _pages_needed(probe, page_size)
        if not _has_more(probe, 0, page_size) or (probe.keyset and pages is not None and pages < budget):
            res: ScanResult[T] = ScanResult(requests=out.requests)
            done = await _page_through(fetch, whole, probe, res, key, page_size, 0, budget)
            _extend(out, res)
            out.requests = res.requests
            if done:
                out.high_water = new.hi
                return out
    if new is not None:
        res = await scan(fetch, new, key=key, page_size=page_size, budget=budget, min_span=min_span)
        _extend(out, res)
        out.requests += res.requests
        out.exhausted = res.exhausted
        if res.completed_to is not None:
            out.high_water = res.completed_to if high_water is None else max(high_water, res.completed_to)
        elif high_water is None:
            out.high_water = new.lo  # a first cycle that finished nothing still pins where it began
    if old is not None:
        # Only late commits can be new here; most of it was read last cycle.
        left = max(overlap_budget, budget - out.requests)
        res = await scan(fetch, old, key=key, page_size=page_size, budget=left, min_span=min_span)
        _extend(out, res)
        out.requests += res.requests
    return out


def _extend(out: FeedScan[T], res: ScanResult[T]) -> None:
    out.items += res.items
    out.windows += res.windows
