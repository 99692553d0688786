"""Data volume of successful Airflow runs: one GET of the configured XCom entry per run.

`GET {prefix}/dags/{dag}/dagRuns/{run}/taskInstances/{task}/xcomEntries/{key}` exists in v1 (Airflow 2)
and v2 (Airflow 3), without extra parameters (v1 answers 400 to unknown ones). The value comes back as a
JSON number or as text depending on version and settings; `parse_volume` reads both (checked end to end
on 2.10.5 and 3.3.2 by tests/integration/test_volume_real.py). A missing entry (404), a forbidden one, or
a value that is no number leaves the run without a volume and never fails the poll.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict

from adapters.airflow_api import AirflowApi
from adapters.airflow_convert import seg
from adapters.http import SourceError
from adapters.volume import VolumeMemo, parse_volume
from sentinel.model import RunUpdate, VolumeSpec

# XCom reads per cycle: after an outage the backlog of successful runs is read a few per cycle, and the
# runs beyond it are reported without a volume rather than delaying every other fact.
VOLUME_BUDGET = 10


class XcomEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    value: Any = None


class XcomVolumes:
    def __init__(self, source: str, spec: VolumeSpec, api: AirflowApi) -> None:
        assert spec.task_id is not None  # SourceSpec requires it for airflow
        self._source = source
        self._task_id = spec.task_id
        self._api = api
        self._memo = VolumeMemo(spec)

    async def fill(self, runs: list[RunUpdate]) -> list[RunUpdate]:
        """`runs` with `volume` set on each successful run of a configured DAG whose XCom holds a number."""
        budget = VOLUME_BUDGET
        out: list[RunUpdate] = []
        for run in runs:
            if not self._memo.wants(run):
                out.append(run)
                continue
            if not self._memo.known(run) and budget > 0:
                budget -= 1
                self._memo.remember(run, await self._read(run))
            out.append(self._memo.apply(run))
        return out

    async def _read(self, run: RunUpdate) -> float | None:
        key = self._memo.spec.key
        path = (
            f"{self._api.prefix}/dags/{seg(run.pipeline)}/dagRuns/{seg(run.run_id)}"
            f"/taskInstances/{seg(self._task_id)}/xcomEntries/{seg(key)}"
        )
        try:
            entry = await self._api.get(path, [], XcomEntry)
        except SourceError as exc:
            logger.debug("airflow source {}: no volume for {} {}: {}", self._source, run.pipeline, run.run_id, exc)
            return None
        volume = parse_volume(entry.value)
        if volume is None:
            logger.debug(
                "airflow source {}: XCom {!r} of {} {} is not a number", self._source, key, run.pipeline, run.run_id
            )
        return volume
