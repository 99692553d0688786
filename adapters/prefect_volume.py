"""Data volume of successful Prefect runs: the newest artifact with the configured key, read in one batch.

`POST /artifacts/filter` for this cycle's successful runs of configured flows; the SDK stores an
artifact's `data` as JSON text (`Artifact(key=..., data=1234)` → "1234"), read by `parse_volume`. A failed
read leaves the runs without a volume and never fails the poll.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict, TypeAdapter

from adapters.http import SourceError
from adapters.prefect_http import PrefectApi
from adapters.volume import VolumeMemo, parse_volume
from sentinel.model import RunUpdate, VolumeSpec

BATCH = 100  # runs per cycle asked about (one request); the rest of a backlog is reported without a volume
LIMIT = 200  # Prefect's maximum page; a run with more versions of the key than fit loses only its volume


class ArtifactRow(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    flow_run_id: str | None = None
    data: Any = None


ARTIFACTS = TypeAdapter(list[ArtifactRow])


class ArtifactVolumes:
    def __init__(self, source: str, spec: VolumeSpec, api: PrefectApi) -> None:
        self._source = source
        self._api = api
        self._memo = VolumeMemo(spec)

    async def fill(self, runs: list[RunUpdate]) -> list[RunUpdate]:
        """`runs` with `volume` set on each successful run of a configured flow whose artifact holds a number."""
        ask = [r for r in runs if self._memo.wants(r) and not self._memo.known(r)][:BATCH]
        if ask:
            found = await self._read([r.run_id for r in ask])
            for run in ask:
                self._memo.remember(run, found.get(run.run_id))
        return [self._memo.apply(r) if self._memo.wants(r) else r for r in runs]

    async def _read(self, run_ids: list[str]) -> dict[str, float]:
        body = {
            "artifacts": {"flow_run_id": {"any_": run_ids}, "key": {"any_": [self._memo.spec.key]}},
            "sort": "CREATED_DESC",
            "limit": LIMIT,
        }
        try:
            rows = await self._api.post("/artifacts/filter", body, ARTIFACTS)
        except SourceError as exc:
            logger.debug("source {}: volumes of {} runs not read: {}", self._source, len(run_ids), exc)
            return {}
        newest: dict[str, Any] = {}
        for row in rows:  # newest first: the first artifact of a run is its latest word
            if row.flow_run_id is not None:
                newest.setdefault(row.flow_run_id, row.data)
        out = {rid: parse_volume(data) for rid, data in newest.items()}
        return {rid: v for rid, v in out.items() if v is not None}
