"""The flow-run and task-run reads of one poll cycle, each bounded by a request budget.

Prefect has no "updated since" filter, so "what changed" is assembled from filters it does have (all
verified on a real 3.9.1 server):

* window: runs whose start *or* end time lies in [since, now] (since trails the last read by the
  overlap) — one request thanks to the filter's `operator: or_`. Prefect's start_time filter is
  coalesce(start_time, expected_start_time), so scheduled runs also appear here when they fall due. `end_time` exists on servers from 3.0.4; older ones
  get the start window only and rely on following open runs by id.
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
from adapters.windows import Page, Window, scan

LIMIT = 200  # Prefect's PREFECT_SERVER_API_DEFAULT_LIMIT: a larger limit is rejected with 422
ACTIVE_TYPES = ("RUNNING", "PENDING", "CANCELLING", "PAUSED")
MIN_SPLIT = timedelta(seconds=1)
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
    return {"operator": "or_", "start_time": span, "end_time": dict(span)}


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
        self.catch_up_span: timedelta | None = None  # None: not behind, read the whole window at once

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
        """Runs started or ended in [lo, hi]; sub-windows are read oldest first so progress is a prefix."""
        read = WindowRead(until=hi if lo >= hi else None)

        async def fetch(w: Window, offset: int, token: str | None) -> Page[FlowRun]:
            # ID order is stable while runs change state, so offset pages of one slice stay meaningful.
            body = {"flow_runs": window_filter(w.lo, w.hi, with_end), "sort": "ID_DESC", "limit": LIMIT}
            if offset:
                body["offset"] = offset
            return Page(await self.api.post("/flow_runs/filter", body, FLOW_RUNS))

        pos = lo
        while pos < hi and budget.left > 0:
            end = hi if self.catch_up_span is None else min(hi, pos + self.catch_up_span)
            result = await scan(
                fetch, Window(pos, end), key=lambda fr: fr.id, page_size=LIMIT, budget=budget.left, min_span=MIN_SPLIT
            )
            budget.left = max(0, budget.left - result.requests)
            read.runs.extend(result.items)
            if result.completed_to is None:
                if self.catch_up_span is not None:
                    self.catch_up_span = max(MIN_SPLIT, self.catch_up_span / 4)
                else:
                    self.catch_up_span = max(MIN_SPLIT, (end - pos) / 4)
                break
            read.until = result.completed_to
            if result.exhausted:
                break
            pos = result.completed_to + TICK
        # Still behind after spending the budget: remember how far one cycle got, so the next one reads the
        # backlog in pieces of about that size instead of halving down from the whole backlog again.
        if read.until is not None and read.until < hi:
            self.catch_up_span = max(MIN_SPLIT, read.until - lo)
        elif read.until is not None:
            self.catch_up_span = None
        return read

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
