"""What the runs belong to: flow and deployment names, deployment metadata, work-pool health.

All three are read at a pace that does not grow with the number of deployments: names are cached (a
steady state asks nothing), deployments are read one page per cycle round-robin, work pools every few
cycles with one small worker read per pool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import Generic, TypeVar
from urllib.parse import quote

from adapters.http import SourceError
from adapters.prefect_http import PrefectApi
from adapters.prefect_mapping import needs_worker, pipeline_info, pool_health
from adapters.prefect_models import DEPLOYMENTS, FLOWS, WORK_POOLS, WORKERS, Deployment, FlowRun
from adapters.prefect_queries import LIMIT
from sentinel.model import ComponentHealth, PipelineInfo

K = TypeVar("K")
V = TypeVar("V")

MAX_CACHED = 50_000  # names of flows / deployments; 10,000 pipelines fit with room to spare
POOL_WORKER_READS = 10  # worker reads per pool refresh; more pools are covered round-robin


class Lru(Generic[K, V]):
    def __init__(self, limit: int) -> None:
        self._d: OrderedDict[K, V] = OrderedDict()
        self._limit = limit

    def get(self, key: K) -> V | None:
        value = self._d.get(key)
        if value is not None:
            self._d.move_to_end(key)
        return value

    def __contains__(self, key: K) -> bool:
        return key in self._d

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self._limit:
            self._d.popitem(last=False)


class Names:
    """flow id → flow name, deployment id → (deployment name, flow id), asked by id only when unknown."""

    def __init__(self, api: PrefectApi) -> None:
        self.api = api
        self.flows: Lru[str, str] = Lru(MAX_CACHED)
        # "" marks a deployment the server no longer has, so its runs do not trigger a lookup each cycle.
        self.deployments: Lru[str, tuple[str, str]] = Lru(MAX_CACHED)

    def remember(self, dep: Deployment) -> None:
        self.deployments.put(dep.id, (dep.name, dep.flow_id))

    async def resolve(self, runs: Iterable[FlowRun]) -> None:
        runs = list(runs)
        deployment_ids = {r.deployment_id for r in runs if r.deployment_id and r.deployment_id not in self.deployments}
        await self._load_deployments(sorted(deployment_ids))
        await self.load_flows({r.flow_id for r in runs})

    async def load_flows(self, flow_ids: Iterable[str]) -> None:
        missing = sorted({f for f in flow_ids if f not in self.flows})
        for i in range(0, len(missing), LIMIT):
            chunk = missing[i : i + LIMIT]
            body = {"flows": {"id": {"any_": chunk}}, "limit": LIMIT}
            for flow in await self.api.post("/flows/filter", body, FLOWS):
                self.flows.put(flow.id, flow.name)

    async def _load_deployments(self, ids: list[str]) -> None:
        for i in range(0, len(ids), LIMIT):
            chunk = ids[i : i + LIMIT]
            body = {"deployments": {"id": {"any_": chunk}}, "limit": LIMIT}
            found = await self.api.post("/deployments/filter", body, DEPLOYMENTS)
            for dep in found:
                self.remember(dep)
            for missing in set(chunk) - {d.id for d in found}:
                self.deployments.put(missing, ("", ""))

    def pipeline(self, run: FlowRun) -> str:
        """`flow/deployment` for deployment runs, the flow name for ad-hoc runs (Prefect's own naming)."""
        flow = self.flows.get(run.flow_id) or run.flow_id
        if run.deployment_id:
            name, _ = self.deployments.get(run.deployment_id) or ("", "")
            if name:
                return f"{flow}/{name}"
        return flow


class DeploymentRotation:
    """One page of deployments per cycle; a full pass yields the complete set.

    Sorted newest first so a deployment created during a pass shifts later pages by one (seen twice),
    instead of hiding one (only a deletion during a pass can, and the next pass corrects it).
    """

    def __init__(self, api: PrefectApi, names: Names, source: str) -> None:
        self.api = api
        self.names = names
        self.source = source
        self._offset = 0
        self._pass: dict[str, PipelineInfo] = {}

    async def next_page(self, ui: str | None) -> tuple[tuple[PipelineInfo, ...], tuple[PipelineInfo, ...] | None]:
        body = {"sort": "CREATED_DESC", "limit": LIMIT, "offset": self._offset}
        page = await self.api.post("/deployments/filter", body, DEPLOYMENTS)
        await self.names.load_flows(d.flow_id for d in page)
        infos = []
        for dep in page:
            self.names.remember(dep)
            flow = self.names.flows.get(dep.flow_id) or dep.flow_id
            url = f"{ui}/deployments/deployment/{dep.id}" if ui else None
            infos.append(pipeline_info(self.source, f"{flow}/{dep.name}", dep, url))
        self._pass.update((i.pipeline, i) for i in infos)
        if len(page) == LIMIT:
            self._offset += LIMIT
            return tuple(infos), None
        complete = tuple(sorted(self._pass.values(), key=lambda i: i.pipeline))
        self._offset, self._pass = 0, {}
        return tuple(infos), complete

    def restart(self) -> None:
        """A failed cycle may have left the pass with a gap; start it over rather than report a hole."""
        self._offset, self._pass = 0, {}


class PoolWatch:
    """Work pools and whether each has an online worker, refreshed every `every` cycles."""

    def __init__(self, api: PrefectApi, every: int) -> None:
        self.api = api
        self.every = every
        self.components: tuple[ComponentHealth, ...] = ()
        self._cycle = 0
        self._next_pool = 0  # round-robin start among pools when there are many
        self._by_pool: dict[str, ComponentHealth] = {}

    def due(self) -> bool:
        return self._cycle % self.every == 0

    def tick(self) -> None:
        self._cycle += 1

    async def refresh(self, now: datetime) -> None:
        pools = []
        offset = 0
        while True:
            try:
                page = await self.api.post("/work_pools/filter", {"limit": LIMIT, "offset": offset}, WORK_POOLS)
            except SourceError as exc:
                if exc.status != 404:
                    raise
                page = []  # Prefect before 2.10 has agents, not work pools: nothing to watch
            pools.extend(page)
            if len(page) < LIMIT:
                break
            offset += LIMIT
        watched = sorted((p for p in pools if needs_worker(p)), key=lambda p: p.name)
        reads = 0
        start = self._next_pool % len(watched) if watched else 0
        for pool in watched[start:] + watched[:start]:
            if pool.is_paused or pool.status == "PAUSED":
                self._by_pool[pool.name] = pool_health(pool, None, now)
                continue
            if reads >= POOL_WORKER_READS:
                continue  # keep its last known health; it is read first on the next refresh
            reads += 1
            self._next_pool = (watched.index(pool) + 1) % len(watched)
            try:
                # Workers come newest heartbeat first, so one is enough to know if any is online.
                workers = await self.api.post(
                    f"/work_pools/{quote(pool.name, safe='')}/workers/filter", {"limit": 1}, WORKERS
                )
            except SourceError as exc:
                if exc.status == 404:  # deleted between the two reads
                    continue
                raise
            self._by_pool[pool.name] = pool_health(pool, workers[0] if workers else None, now)
        names = {p.name for p in watched}
        self._by_pool = {n: c for n, c in self._by_pool.items() if n in names}
        self.components = tuple(self._by_pool[n] for n in sorted(self._by_pool))
