"""Prefect 2.x / 3.x adapter: polls the REST API and turns what changed into Sentinel facts.

One cycle, in order (see prefect_queries for why each read exists):
  GET /health → GET /admin/version (first cycle, after an outage, every VERSION_EVERY cycles) →
  flow runs: window ∪ active ∪ late (concurrently) → follow-ups of open runs that vanished →
  names of new flows/deployments (cached) → task runs of runs whose state changed → one page of
  deployments → work pools and their newest worker (every POOL_EVERY cycles).
A quiet steady state is 5 requests a cycle (health, window, active, late, one deployments page), plus
the pool reads every POOL_EVERY cycles. More only with run *activity*: one request per 200 active runs,
per ~100 runs started or ended inside the window, per 50 flow runs whose tasks must be read. The number
of deployments never adds requests per cycle; it only lengthens the round-robin pass.

It never calls the endpoints that mark work queues or deployments as polled
(`/work_queues/{id}/get_runs`, `/deployments/get_scheduled_flow_runs`,
`/work_pools/{name}/get_scheduled_flow_runs`): those make a deployment look READY and a worker look
alive, which would hide exactly the outage Sentinel is there to report.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar, cast

from loguru import logger

from adapters.http import PoliteClient, SourceError
from adapters.prefect_catalog import DeploymentRotation, Names, PoolWatch
from adapters.prefect_cursor import Cursor
from adapters.prefect_http import PrefectApi
from adapters.prefect_mapping import map_state, run_update, task_update
from adapters.prefect_models import HEALTH, VERSION, FlowRun, TaskRun
from adapters.prefect_queries import Budget, RunReader, WindowRead, active_filter, late_filter
from adapters.prefect_volume import ArtifactVolumes
from sentinel.model import (
    Clock,
    PollResult,
    RunState,
    RunUpdate,
    SourceHealth,
    SourceSpec,
    TaskUpdate,
)

# Late is set by the server's late-runs service some seconds after the expected start; this margin
# keeps a run in the Late read even when that service lags behind the overlap.
LATE_GRACE = timedelta(minutes=10)
END_TIME_SINCE = (3, 0, 4)  # first release whose flow-run filter accepts end_time
VERSION_EVERY = 40
POOL_EVERY = 4
# Requests per cycle per read; what does not fit waits for the next cycle (catch-up after an outage).
WINDOW_BUDGET, ACTIVE_BUDGET, LATE_BUDGET, FOLLOW_BUDGET, TASK_BUDGET = 20, 25, 5, 5, 10
A, B, C = TypeVar("A"), TypeVar("B"), TypeVar("C")
# Runs that can leave every read's view without a trace (retry waits, long runs on old servers).
OPEN_STATES = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.RETRYING, RunState.PAUSED})


def parse_version(text: str | None) -> tuple[int, ...] | None:
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g or 0) for g in m.groups()) if m else None


def ui_base(api_url: str) -> str | None:
    """The UI root for links: self-hosted serves it beside /api; Cloud on app.prefect.cloud."""
    url = api_url.rstrip("/")
    m = re.fullmatch(r"https://api\.prefect\.cloud/api/accounts/([^/]+)/workspaces/([^/]+)", url)
    if m:
        return f"https://app.prefect.cloud/account/{m[1]}/workspace/{m[2]}"
    return url[: -len("/api")] if url.endswith("/api") else None


class PrefectAdapter:
    kind: ClassVar[str] = "prefect"

    def __init__(self, spec: SourceSpec, clock: Clock, client: PoliteClient) -> None:
        self.spec = spec
        self.clock = clock
        self.client = client
        self.api = PrefectApi(spec, client)
        self.reader = RunReader(self.api)
        self.names = Names(self.api)
        self.deployments = DeploymentRotation(self.api, self.names, spec.name)
        self.pools = PoolWatch(self.api, POOL_EVERY)
        self.ui = ui_base(spec.url)
        self.version: str | None = None
        self._version_due = True
        self._cycles = 0
        self._end_time: bool | None = None  # flow-run end_time filter: None until known
        self._volumes = ArtifactVolumes(spec.name, spec.volume, self.api) if spec.volume is not None else None

    async def poll(self, cursor: dict[str, Any]) -> PollResult:
        before = self.client.requests
        try:
            result = await self._poll(Cursor.load(cursor, self.spec.name))
        except SourceError as exc:
            return self._unreachable(cursor, str(exc), before)
        except Exception as exc:
            logger.opt(exception=exc).error("source {}: Prefect adapter failed on a response", self.spec.name)
            self.client.report("adapter_error")
            return self._unreachable(cursor, f"adapter error while reading the response: {type(exc).__name__}", before)
        self._cycles += 1
        self._version_due = self._cycles % VERSION_EVERY == 0
        return result.model_copy(update={"requests": self.client.requests - before})

    def _unreachable(self, cursor: dict[str, Any], error: str, before: int) -> PollResult:
        logger.warning("source {}: poll failed: {}", self.spec.name, error)
        self._version_due = True  # it may come back upgraded
        self.deployments.restart()
        health = SourceHealth(
            source=self.spec.name,
            reachable=False,
            observed_at=self.clock.now(),
            error=error,
            version=self.version,
            api="prefect",
        )
        return PollResult(source=self.spec.name, health=health, cursor=cursor, requests=self.client.requests - before)

    async def _poll(self, cur: Cursor) -> PollResult:
        await self._check_health()
        # Windows follow the server's clock (Date header, whole seconds, so never ahead of the server).
        now = self.api.server_now or self.clock.now()
        if self._version_due:
            await self._read_version()
        overlap = self.spec.overlap
        since = cur.since or now - self.spec.initial_lookback
        if now < since:
            logger.warning("source {}: server clock went back from {} to {}", self.spec.name, since, now)
            since = now - overlap
        window, (active, _), (late, _) = await _all(
            self._window(since, now),
            self.reader.flow_runs(active_filter(), Budget(ACTIVE_BUDGET)),
            self.reader.flow_runs(late_filter(since - LATE_GRACE, now), Budget(LATE_BUDGET), "EXPECTED_START_TIME_ASC"),
        )
        observed = _latest([*window.runs, *active, *late])
        vanished = [rid for rid in cur.open if rid not in observed]
        found, asked = await self.reader.by_ids(vanished, Budget(FOLLOW_BUDGET))
        observed.update(_latest(found))
        unchecked = [rid for rid in vanished if rid not in asked]

        runs, changed, open_ids = self._changes(cur, observed)
        await self.names.resolve(fr for fr, _ in changed)
        updates = [self._run_update(fr, state) for fr, state in changed]
        if self._volumes is not None:
            updates = await self._volumes.fill(updates)
        for rid in unchecked:  # not re-read this cycle: keep what we knew so nothing repeats or is lost
            if rid in cur.runs:
                runs[rid] = cur.runs[rid]
                open_ids.append(rid)

        backlog = dict(cur.backlog)
        # Task runs exist only once the flow run has run; a Late or cancelled-before-start run has none.
        backlog.update((u.run_id, u.pipeline) for (fr, _), u in zip(changed, updates, strict=True) if fr.run_count)
        tasks, task_seen, backlog = await self._tasks(cur, backlog, observed, set(open_ids))

        partial, full = await self.deployments.next_page(self.ui)
        if self.pools.due():
            await self.pools.refresh(now)
        self.pools.tick()

        # Only the last `overlap` before the read can still gain rows (commits land late, client clocks lag):
        # the next window starts there, or where a budget-bound catch-up stopped if that is earlier.
        settled = since if window.until is None else max(since, min(window.until, now - overlap))
        next_cursor = Cursor(since=settled, runs=runs, open=open_ids, tasks=task_seen, backlog=backlog)
        health = SourceHealth(
            source=self.spec.name,
            reachable=True,
            observed_at=self.clock.now(),
            version=self.version,
            api="prefect",
            components=self.pools.components,
        )
        logger.debug(
            "source {}: {} run and {} task updates, window to {}",
            self.spec.name,
            len(updates),
            len(tasks),
            window.until,
        )
        return PollResult(
            source=self.spec.name,
            health=health,
            runs=tuple(updates),
            tasks=tuple(tasks),
            pipelines=full,
            pipelines_partial=partial,
            cursor=next_cursor.dump(),
            caught_up=window.until is not None and window.until >= now,
        )

    async def _check_health(self) -> None:
        try:
            healthy = await self.api.get("/health", HEALTH)
        except SourceError as exc:
            # A Cloud workspace URL may not serve /health; the reads that follow prove reachability then.
            if exc.status != 404:
                raise
            return
        if not healthy:
            raise SourceError("unhealthy", "GET /health: server reports itself unhealthy")

    async def _read_version(self) -> None:
        try:
            self.version = await self.api.get("/admin/version", VERSION)
        except SourceError as exc:
            if exc.status != 404:
                raise
            self.version = None  # Prefect Cloud has no admin API
        parsed = parse_version(self.version)
        self._end_time = None if parsed is None else parsed >= END_TIME_SINCE
        self._version_due = False

    async def _window(self, lo: datetime, hi: datetime) -> WindowRead:
        with_end = self._end_time is not False
        try:
            read = await self.reader.window(lo, hi, with_end, Budget(WINDOW_BUDGET))
        except SourceError as exc:
            # Unknown version (Cloud, odd builds): learn end_time support from the server's own answer.
            if not (self._end_time is None and exc.status == 422 and "end_time" in str(exc)):
                raise
            self._end_time = False
            return await self.reader.window(lo, hi, False, Budget(WINDOW_BUDGET))
        if with_end:
            self._end_time = True
        return read

    def _changes(
        self, cur: Cursor, observed: dict[str, FlowRun]
    ) -> tuple[dict[str, str], list[tuple[FlowRun, RunState]], list[str]]:
        """New state keys per run, the runs whose state was not emitted yet, and the runs still open."""
        runs: dict[str, str] = {}
        changed: list[tuple[FlowRun, RunState]] = []
        open_ids: list[str] = []
        for fr in sorted(observed.values(), key=_state_order):
            state = map_state(fr.type, fr.state_label)
            is_new = cur.runs.get(fr.id) != fr.state_key
            if state is None:
                state = RunState.UNKNOWN
                if is_new:
                    self._unknown("flow run", fr.id, fr.type)
            if is_new:
                changed.append((fr, state))
            runs[fr.id] = fr.state_key
            if state in OPEN_STATES:
                open_ids.append(fr.id)
        return runs, changed, open_ids

    def _run_update(self, fr: FlowRun, state: RunState) -> RunUpdate:
        url = f"{self.ui}/runs/flow-run/{fr.id}" if self.ui else None
        return run_update(self.spec.name, self.names.pipeline(fr), fr, state, url)

    async def _tasks(
        self, cur: Cursor, backlog: dict[str, str], observed: dict[str, FlowRun], open_ids: set[str]
    ) -> tuple[list[TaskUpdate], dict[str, dict[str, str]], dict[str, str]]:
        task_runs, done = await self.reader.task_runs(list(backlog), Budget(TASK_BUDGET))
        remaining = {rid: p for rid, p in backlog.items() if rid not in done}
        # Task runs are re-read only when their flow run changes state, and a finished flow run does not:
        # only open runs (and deferred reads) need to remember which task states were already reported.
        keep = open_ids | remaining.keys()
        task_seen = {rid: dict(entries) for rid, entries in cur.tasks.items() if rid in keep}
        reported: set[tuple[str, str]] = set()  # a task run can come back twice when pages shift
        updates: list[TaskUpdate] = []
        for tr in sorted(task_runs, key=_task_order):
            rid = tr.flow_run_id or ""
            if cur.tasks.get(rid, {}).get(tr.id) == tr.state_key or (tr.id, tr.state_key) in reported:
                continue
            reported.add((tr.id, tr.state_key))
            state = map_state(tr.type, tr.state_label)
            if state is None:
                state = RunState.UNKNOWN
                self._unknown("task run", tr.id, tr.type)
            updates.append(task_update(self.spec.name, backlog.get(rid, ""), observed.get(rid), tr, state))
            if rid in keep:
                task_seen.setdefault(rid, {})[tr.id] = tr.state_key
        return updates, task_seen, remaining

    def _unknown(self, what: str, run_id: str, state_type: str) -> None:
        self.client.report("unknown_state")
        logger.warning("source {}: {} {} has unknown state type {!r}", self.spec.name, what, run_id, state_type)


async def _all(a: Awaitable[A], b: Awaitable[B], c: Awaitable[C]) -> tuple[A, B, C]:
    """Run three independent reads together; wait for all, then fail with the first error."""
    ra, rb, rc = await asyncio.gather(a, b, c, return_exceptions=True)
    for r in (ra, rb, rc):
        if isinstance(r, BaseException):
            raise r
    return cast(A, ra), cast(B, rb), cast(C, rc)


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _state_order(fr: FlowRun) -> tuple[datetime, str]:
    return (fr.state_time or _EPOCH, fr.id)


def _task_order(tr: TaskRun) -> tuple[str, str]:
    stamp = tr.state.timestamp.isoformat() if tr.state and tr.state.timestamp else ""
    return (stamp, tr.id)


def _latest(runs: list[FlowRun]) -> dict[str, FlowRun]:
    """One observation per run: the reads overlap, and a run may move between them mid-cycle."""
    out: dict[str, FlowRun] = {}
    for fr in runs:
        prev = out.get(fr.id)
        if prev is None or _state_order(fr) >= _state_order(prev):
            out[fr.id] = fr
    return out
