"""Airflow adapter: REST API v1 (Airflow 2.x) and v2 (Airflow 3.x), detected per source.

One poll cycle in steady state costs four requests plus one every few cycles, whatever the number of
DAGs: health (unauthenticated in both versions; it also gives the server's clock for the cursor), the
DAG-run change feed, the task-instance change feed, one page of the DAG list (round-robin, so a full pass
over 10,000 DAGs takes 100 cycles), and every `IMPORT_ERRORS_EVERY` cycles the import errors. The asset
(dataset) list, at most `ASSET_PAGES` pages, is read on the first cycle and then every `ASSETS_EVERY`
cycles, half-way between import-error reads so that no cycle pays for both. The feeds grow with the
number of *changes* only.

Cross-DAG dependencies come from Airflow itself: a DAG's upstreams are the DAGs whose tasks produce an
asset (Airflow 3) or dataset (Airflow 2) the DAG is scheduled on. A failed, forbidden or unsupported
asset read, or a list longer than the page budget, keeps the previous map; it never makes the source
unreachable.

Change feeds filter on `updated_at_gte/lte` over [high-water mark - overlap, server now] and are read with
`adapters.windows.scan`: keyset cursors on Airflow 3.3+, windows split in halves otherwise. Airflow never
returns a row's `updated_at` (checked on 2.10.5 and 3.3.2), so a change is identified by what Sentinel
reports about the row, and the cursor keeps digests of the changes reported inside the overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any, ClassVar

from loguru import logger

from adapters.airflow_api import PAGE, AirflowApi, Params
from adapters.airflow_convert import Converter, seg
from adapters.airflow_cursor import CursorState, Feed
from adapters.airflow_schema import (
    AssetList,
    DagList,
    DagRun,
    DagRunList,
    DatasetList,
    HealthInfo,
    ImportErrorList,
    TaskInstance,
    TaskInstanceList,
)
from adapters.airflow_states import fold_mapped
from adapters.airflow_volume import XcomVolumes
from adapters.http import PoliteClient, SourceError
from adapters.windows import FeedScan, Page, PageFetcher, Window, scan_feed
from sentinel.clock import utc
from sentinel.model import (
    Clock,
    ComponentHealth,
    ImportErrorInfo,
    PipelineInfo,
    PollResult,
    RunUpdate,
    SourceHealth,
    SourceSpec,
    TaskUpdate,
)

FEED_BUDGET = 25  # requests per change feed per cycle; a backlog beyond it is read over the next cycles
MAPPED_BUDGET = 10  # mapped tasks per cycle whose complete instance list is read for folding
IMPORT_ERRORS_EVERY = 4  # cycles
ASSETS_EVERY = IMPORT_ERRORS_EVERY  # cycles between reads of the asset (dataset) list
ASSET_PAGES = 5  # page budget per asset read; a longer list keeps the previous map


class AirflowAdapter:
    kind: ClassVar[str] = "airflow"

    def __init__(self, spec: SourceSpec, clock: Clock, client: PoliteClient) -> None:
        self._spec = spec
        self._clock = clock
        self._client = client
        self._api = AirflowApi(spec, clock, client)
        self._convert = Converter(spec.name, client.base_url, lambda: client.report("unknown_state"))
        self._cycles = 0
        self._active_read = False
        self._behind = False  # this cycle left a change backlog for the next ones
        self._dag_offset = 0
        self._dag_pass: dict[str, PipelineInfo] = {}
        self._upstreams: dict[str, tuple[str, ...]] = {}  # dag_id -> upstream dag_ids, from assets/datasets
        self._warned_no_date = False
        self._volumes = XcomVolumes(spec.name, spec.volume, self._api) if spec.volume is not None else None

    async def poll(self, cursor: dict[str, Any]) -> PollResult:
        before = self._client.requests
        try:
            return await self._poll(cursor, before)
        except SourceError as exc:
            return self._down(cursor, str(exc), before)
        except Exception as exc:  # a scheduler's surprise must never take the poller down
            logger.opt(exception=exc).error("airflow source {}: adapter error", self._spec.name)
            return self._down(cursor, f"adapter error: {type(exc).__name__}", before)

    async def _poll(self, cursor: dict[str, Any], before: int) -> PollResult:
        if self._api.api is None:
            await self._api.detect()
        self._convert.v2 = self._api.v2
        components = await self._health()
        now = self._server_now()
        overlap = self._spec.overlap
        state = CursorState.load(cursor, overlap)

        runs: list[RunUpdate] = []
        if not self._active_read:
            # A run running since before a restart may not change for hours: the feed alone would miss it.
            runs += state.runs.fresh("run", await self._active_runs(), now)
        self._behind = False
        res = await self._read_feed(state.runs, self._run_fetch, lambda r: (r.dag_id, r.dag_run_id), now)
        for r, w in zip(res.items, res.windows, strict=True):
            runs += state.runs.fresh("run", [self._convert.run(r)], w.hi)

        tasks: list[TaskUpdate] = []
        key = lambda t: (t.dag_id, t.dag_run_id, t.task_id, t.map_index)  # noqa: E731
        res_t = await self._read_feed(state.tasks, self._task_fetch, key, now)
        for update, until in await self._fold(res_t.items, [w.hi for w in res_t.windows], state.tasks):
            tasks += state.tasks.fresh("task", [update], until)

        import_errors = await self._import_errors() if self._cycles % IMPORT_ERRORS_EVERY == 0 else None
        due = self._cycles == 0 or self._cycles % ASSETS_EVERY == ASSETS_EVERY // 2
        read = await self._assets() if due else None
        upstreams = self._upstreams if read is None else read
        partial, complete, dag_offset, dag_pass = await self._dags_page(upstreams)

        if self._volumes is not None:
            runs = await self._volumes.fill(runs)

        # Everything succeeded: only now move in-memory progress, so a failed cycle is simply repeated.
        self._dag_offset, self._dag_pass, self._upstreams = dag_offset, dag_pass, upstreams
        self._active_read = True
        self._cycles += 1
        return PollResult(
            source=self._spec.name,
            health=self._health_fact(True, components=components),
            runs=tuple(runs),
            tasks=tuple(tasks),
            pipelines=complete,
            pipelines_partial=() if complete is not None else partial,
            import_errors=import_errors,
            cursor=state.dump(),
            requests=self._client.requests - before,
            caught_up=not self._behind,
        )

    def _down(self, cursor: dict[str, Any], error: str, before: int) -> PollResult:
        # The poller logs the streak once; here only the detail, for debugging.
        logger.debug("airflow source {}: unreachable: {}", self._spec.name, error)
        self._api.api = None  # redetect: it may come back upgraded, or be another server behind the URL
        return PollResult(
            source=self._spec.name,
            health=self._health_fact(False, error=error),
            cursor=cursor,
            requests=self._client.requests - before,
        )

    def _health_fact(self, reachable: bool, **kw: Any) -> SourceHealth:
        return SourceHealth(
            source=self._spec.name,
            reachable=reachable,
            observed_at=self._clock.now(),
            version=self._api.version,
            api=self._api.api,
            **kw,
        )

    async def _read_feed(
        self, feed: Feed, fetch: PageFetcher[Any], key: Callable[[Any], Hashable], now: datetime
    ) -> FeedScan[Any]:
        overlap = self._spec.overlap
        res = await scan_feed(
            fetch,
            feed.hwm,
            now,
            overlap=overlap,
            first_lookback=self._spec.initial_lookback,
            key=key,
            page_size=PAGE,
            budget=FEED_BUDGET,
        )
        if res.exhausted:
            self._behind = True
            logger.info("airflow source {}: change backlog, continuing next cycle", self._spec.name)
        feed.hwm = res.high_water
        return res

    def _server_now(self) -> datetime:
        if self._client.server_time is not None:
            return utc(self._client.server_time)
        if not self._warned_no_date:
            # Without the server's clock, skew between us and Airflow eats into the overlap.
            logger.warning("airflow source {}: no Date header; using the local clock", self._spec.name)
            self._warned_no_date = True
        return self._clock.now()

    async def _health(self) -> tuple[ComponentHealth, ...]:
        path = "/api/v2/monitor/health" if self._api.v2 else "/api/v1/health"
        self._client.server_time = None  # this cycle's "now" must come from this cycle's response
        info = await self._api.get(path, [], HealthInfo)
        out = []
        if (db := info.metadatabase) is not None:
            out.append(ComponentHealth(name="metadatabase", healthy=db.status == "healthy", detail=db.status))
        s = info.scheduler
        out.append(
            ComponentHealth(
                name="scheduler",
                healthy=s.status == "healthy",
                last_heartbeat=s.latest_scheduler_heartbeat,
                detail=s.status or "never ran",
            )
        )
        # A null status means the component never ran (not deployed): there is nothing to watch.
        if (d := info.dag_processor) is not None and d.status is not None:
            heartbeat = d.latest_dag_processor_heartbeat
            out.append(
                ComponentHealth(
                    name="dag_processor", healthy=d.status == "healthy", last_heartbeat=heartbeat, detail=d.status
                )
            )
        if (t := info.triggerer) is not None and t.status is not None:
            heartbeat = t.latest_triggerer_heartbeat
            out.append(
                ComponentHealth(
                    name="triggerer", healthy=t.status == "healthy", last_heartbeat=heartbeat, detail=t.status
                )
            )
        return tuple(out)

    async def _run_fetch(self, w: Window, offset: int, token: str | None) -> Page[DagRun]:
        params: Params = [
            ("updated_at_gte", w.lo.isoformat()),
            ("updated_at_lte", w.hi.isoformat()),
            ("order_by", "updated_at"),
            ("limit", PAGE),
            *self._api.paging(offset, token),
        ]
        data = await self._api.get(f"{self._api.prefix}/dags/~/dagRuns", params, DagRunList)
        return Page(data.dag_runs, data.total_entries, data.next_cursor, data.keyset)

    async def _task_fetch(self, w: Window, offset: int, token: str | None) -> Page[TaskInstance]:
        params: Params = [("updated_at_gte", w.lo.isoformat()), ("updated_at_lte", w.hi.isoformat()), ("limit", PAGE)]
        if self._api.v2:
            # Keyset paging needs a stable order and v2 refuses updated_at here (400); v1 refuses order_by.
            params.append(("order_by", "id"))
        params += self._api.paging(offset, token)
        data = await self._api.get(f"{self._api.prefix}/dags/~/dagRuns/~/taskInstances", params, TaskInstanceList)
        return Page(data.task_instances, data.total_entries, data.next_cursor, data.keyset)

    async def _active_runs(self) -> list[RunUpdate]:
        params: Params = [("state", "queued"), ("state", "running"), ("order_by", "id")]
        rows, _ = await self._api.list_all(f"{self._api.prefix}/dags/~/dagRuns", params, DagRunList, "dag_runs")
        unique = {(r.dag_id, r.dag_run_id): r for r in rows}
        return [self._convert.run(r) for r in unique.values()]

    async def _fold(
        self, items: list[TaskInstance], untils: list[datetime], feed: Feed
    ) -> list[tuple[TaskUpdate, datetime]]:
        """One TaskUpdate per (run, task_id), mapped instances folded, with the latest window end seen."""
        groups: dict[tuple[str, str, str], tuple[list[TaskInstance], datetime]] = {}
        for ti, until in zip(items, untils, strict=True):
            key = (ti.dag_id, ti.dag_run_id, ti.task_id)
            rows, seen_until = groups.get(key, ([], until))
            groups[key] = ([*rows, ti], max(seen_until, until))
        out: list[tuple[TaskUpdate, datetime]] = []
        budget = MAPPED_BUDGET
        for (dag, run, task), (rows, until) in groups.items():
            count: int | None = None
            mapped = [r for r in rows if r.map_index >= 0]
            # Instances re-read inside the overlap, unchanged, must not cost a listMapped request each cycle.
            changed = [
                feed.mark(until, "ti", dag, run, task, r.map_index, r.state, r.try_number, r.end_date) for r in mapped
            ]
            if mapped and not any(changed):
                continue
            if mapped and budget > 0:
                # The feed holds only the instances that changed; a fold needs them all. Past the budget the
                # fold uses what the feed had, and the next change to that task reads the full list.
                budget -= 1
                path = f"{self._api.prefix}/dags/{seg(dag)}/dagRuns/{seg(run)}/taskInstances/{seg(task)}/listMapped"
                rows, count = await self._api.list_all(path, [], TaskInstanceList, "task_instances")
            if rows:
                out.append((fold_mapped([self._convert.task(r) for r in rows], count), until))
        return out

    async def _import_errors(self) -> tuple[ImportErrorInfo, ...]:
        path = f"{self._api.prefix}/importErrors"
        rows, _ = await self._api.list_all(path, [], ImportErrorList, "import_errors")
        return tuple(self._convert.import_error(e) for e in rows)

    async def _assets(self) -> dict[str, tuple[str, ...]] | None:
        """dag_id -> upstream dag_ids from the complete asset (dataset) list; None keeps the previous map."""
        path, model, field = (
            ("/api/v2/assets", AssetList, "assets") if self._api.v2 else ("/api/v1/datasets", DatasetList, "datasets")
        )
        try:
            rows, total, complete = await self._api.list_pages(path, [], model, field, ASSET_PAGES)
        except SourceError as exc:
            # Unsupported (404), forbidden to this user (403) or failing: dependencies are an extra, not health.
            # The request's outcome is already counted by the client; the map stays as it was.
            logger.debug("airflow source {}: assets not read ({}): {}", self._spec.name, exc.outcome, exc)
            return None
        if not complete:
            logger.info(
                "airflow source {}: {} assets exceed {} pages; keeping the previous dependencies",
                self._spec.name,
                total,
                ASSET_PAGES,
            )
            self._client.report("assets_truncated")
            return None
        return self._convert.upstreams(rows)

    async def _dags_page(
        self, upstreams: dict[str, tuple[str, ...]]
    ) -> tuple[tuple[PipelineInfo, ...], tuple[PipelineInfo, ...] | None, int, dict[str, PipelineInfo]]:
        """One page of the DAG list; the complete set too when this page ends a pass."""
        params: Params = [("limit", PAGE), ("offset", self._dag_offset), ("order_by", "dag_id")]
        data = await self._api.get(f"{self._api.prefix}/dags", params, DagList)
        infos = tuple(self._convert.pipeline(d, upstreams.get(d.dag_id, ())) for d in data.dags)
        dag_pass = {**self._dag_pass, **{i.pipeline: i for i in infos}}
        offset = self._dag_offset + len(infos)
        if infos and data.total_entries is not None and offset < data.total_entries:
            return infos, None, offset, dag_pass
        # Pages read earlier in the pass carry the map of their time; the complete set carries the latest.
        done = [i.model_copy(update={"upstreams": upstreams.get(i.pipeline, ())}) for i in dag_pass.values()]
        return infos, tuple(sorted(done, key=lambda p: p.pipeline)), 0, {}
