"""The flow-run and task-run reads of one poll cycle, each bounded by a request budget.

Prefect has no "updated since" filter, so "what changed" is assembled from filters it does have (all
verified on a real 3.9.1 server):

* window: runs whose start *or* end time lies in [since, now] (since trails the last read by the
  overlap) — one request thanks to the filter's `operator: or_`. Prefect's start_time filter compares
  coalesce(start_time, expected_start_time), so `is_null_: false` keeps it to runs that started.
  `end_time` exists on servers from 3.0.4; older ones get the (coalescing) start window only and rely
  on following open runs by id.
* active: every RUNNING / PENDING / CANCELLING / PAUSED run, whatever its age (long runs).
* late: state name "Late", expected start bounded on both sides — the scheduler pre-creates many future
  SCHEDULED runs, and neglected deployments pile up Late runs forever.
* follow-ups: runs we last saw open that none of the above returned (they left the active set for a
  state those filters cannot see, e.g. AwaitingRetry, or ended on a server without the end_time filter).

`limit` above 200 is a 422, so every read pages; a window that fills a page is split in time until its
pieces fit, offset-paging only a one-second slice that still overflows (adapters.windows.scan).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from adapters.prefect_http import PrefectApi
from adapters.prefect_models import FLOW_RUNS, TASK_RUNS, FlowRun, TaskRun
from adapters.windows import Page, ScanResult, Window, scan

LIMIT = 200  # Prefect's PREFECT_SERVER_API_DEFAULT_LIMIT: a larger limit is rejected with 422
ACTIVE_TYPES = ("RUNNING", "PENDING", "CANCELLING", "PAUSED")
MIN_SPLIT = timedelta(seconds=1)
MAX_SPAN = timedelta(days=1)
TICK = timedelta(microseconds=1)  # Prefect stores microseconds; bounds are inclusive on both sides
TASK_IDS_PER_REQUEST = 50  # flow runs per task-run read: keeps pages mostly from few runs


@dataclass
class Budget:
    """Requests one kind of read may still make this cycle; the rest waits for the next cycle."""

    left: int

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def iso(dt: datetime) -> str:
    return dt.isoformat()


def window_filter(lo: datetime, hi: datetime, with_end: bool) -> dict[str, Any]:
    span = {"after_": iso(lo), "before_": iso(hi)}
    if not with_end:
        return {"start_time": span}
    # Started runs only: a cron tick makes hundreds of runs due at one instant, and coalescing their
    # expected start into the window would be an unsplittable burst. Unstarted runs are covered anyway
    # (pending: active read; late: late read; ended without starting: the end_time half).
    return {"operator": "or_", "start_time": {**span, "is_null_": False}, "end_time": dict(span)}


def active_filter() -> dict[str, Any]:
    return {"state": {"type": {"any_": list(ACTIVE_TYPES)}}}


def late_filter(lo: datetime, hi: datetime) -> dict[str, Any]:
    return {
        "state": {"type": {"any_": ["SCHEDULED"]}, "name": {"any_": ["Late"]}},
        "expected_start_time": {"after_": iso(lo), "before_": iso(hi)},
    }


def ids_filter(ids: Iterable[str]) -> dict[str, Any]:
    return {"id": {"any_": list(ids)}}


@dataclass
class WindowRead:
    runs: list[FlowRun] = field(default_factory=list)
    until: datetime | None = None  # everything in [lo, until] was read completely


class RunReader:
    def __init__(self, api: PrefectApi) -> None:
        self.api = api
        self.page_span: timedelta | None = None  # None until a window overflowed: read it whole

    async def flow_runs(
        self, criteria: dict[str, Any], budget: Budget, sort: str = "ID_DESC", offset: int = 0
    ) -> tuple[list[FlowRun], bool]:
        """All flow runs matching `criteria`, paged by offset. ID order is stable while runs change."""
        out: list[FlowRun] = []
        while budget.take():
            body = {"flow_runs": criteria, "sort": sort, "limit": LIMIT, "offset": offset}
            page = await self.api.post("/flow_runs/filter", body, FLOW_RUNS)
            out.extend(page)
            if len(page) < LIMIT:
                return out, True
            offset += LIMIT
        return out, False

    async def window(self, lo: datetime, hi: datetime, with_end: bool, budget: Budget) -> WindowRead:
        """Runs started or ended in [lo, hi]; pieces are read oldest first so progress is a prefix.

        The window is read in pieces of `page_span`, the width that last held about a page of runs: a busy
        server then costs one request per page instead of a full page thrown away at every halving, and a
        catch-up after an outage does not re-halve the whole backlog each cycle.
        """
        read = WindowRead(until=hi if lo >= hi else None)

        async def fetch(w: Window, offset: int, token: str | None) -> Page[FlowRun]:
            # ID order is stable while runs change state, so offset pages of one slice stay meaningful.
            body = {"flow_runs": window_filter(w.lo, w.hi, with_end), "sort": "ID_DESC", "limit": LIMIT}
            if offset:
                body["offset"] = offset
            return Page(await self.api.post("/flow_runs/filter", body, FLOW_RUNS))

        pos = lo
        while pos < hi and budget.left > 0:
            piece = Window(pos, hi if self.page_span is None else min(hi, pos + self.page_span))
            result = await scan(
                fetch, piece, key=lambda fr: fr.id, page_size=LIMIT, budget=budget.left, min_span=MIN_SPLIT
            )
            budget.left = max(0, budget.left - result.requests)
            read.runs.extend(result.items)
            self._learn(piece, result)
            if result.completed_to is None:
                break
            read.until = result.completed_to
            if result.exhausted:
                break
            pos = result.completed_to + TICK
        return read

    def _learn(self, piece: Window, result: ScanResult[FlowRun]) -> None:
        """Aim the next piece at half a page, judged by how full this one was."""
        if result.completed_to is None:  # not even the first slice fit the budget
            self.page_span = max(MIN_SPLIT, piece.span / 4)
        elif result.requests == 1:
            if self.page_span is not None or len(result.items) >= LIMIT // 2:
                scale = min(4.0, max(0.5, (LIMIT / 2) / max(1, len(result.items))))
                self.page_span = min(MAX_SPAN, max(MIN_SPLIT, piece.span * scale))
        else:
            # Split: the slices that fit show the width to use. Slices that could not be split further are
            # one-instant bursts (a cron tick scheduling hundreds of runs at :00) and say nothing about it.
            fitted = sorted(w.span for w in set(result.windows) if w.span > 2 * MIN_SPLIT)
            if fitted:
                self.page_span = fitted[len(fitted) // 2]

    async def by_ids(self, ids: list[str], budget: Budget) -> tuple[list[FlowRun], set[str]]:
        """Flow runs by id; returns what was found and which ids were actually asked about."""
        found: list[FlowRun] = []
        asked: set[str] = set()
        for i in range(0, len(ids), LIMIT):
            chunk = ids[i : i + LIMIT]
            runs, complete = await self.flow_runs(ids_filter(chunk), budget)
            if not complete:
                break
            found.extend(runs)
            asked.update(chunk)
        return found, asked

    async def task_runs(self, flow_run_ids: list[str], budget: Budget) -> tuple[list[TaskRun], set[str]]:
        """Task runs of the given flow runs; returns them and the flow run ids read completely."""
        found: list[TaskRun] = []
        done: set[str] = set()
        for i in range(0, len(flow_run_ids), TASK_IDS_PER_REQUEST):
            chunk = flow_run_ids[i : i + TASK_IDS_PER_REQUEST]
            criteria = {"flow_run_id": {"any_": chunk}}
            offset, complete, got = 0, False, []
            while budget.take():
                body = {"task_runs": criteria, "sort": "ID_DESC", "limit": LIMIT, "offset": offset}
                page = await self.api.post("/task_runs/filter", body, TASK_RUNS)
                got.extend(page)
                if len(page) < LIMIT:
                    complete = True
                    break
                offset += LIMIT
            if not complete:
                break
            found.extend(got)
            done.update(chunk)
        return found, done
