"""Airflow REST rows turned into Sentinel facts (states per `airflow_states`)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from adapters.airflow_schema import Asset, Dag, DagRun, ImportErrorItem, TaskInstance
from adapters.airflow_states import RUN_TYPES, latest, run_state, task_state
from sentinel.model import ImportErrorInfo, PipelineInfo, RunUpdate, TaskUpdate


def seg(value: str) -> str:
    """One percent-encoded path segment.

    Run ids carry ':' and '+' (manual__2026-01-01T00:00:00+00:00): '+' reads as a space in some stacks and
    a '/' would split the segment, so nothing is left unencoded.
    """
    return quote(value, safe="")


class Converter:
    def __init__(self, source: str, base_url: str, on_unknown: Callable[[], None]) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.on_unknown = on_unknown
        self.v2 = True

    def run(self, r: DagRun) -> RunUpdate:
        versions = [v.version_number for v in r.dag_versions if v.version_number is not None]
        return RunUpdate(
            source=self.source,
            pipeline=r.dag_id,
            run_id=r.dag_run_id,
            state=run_state(r.state, self.on_unknown),
            raw_state=r.state,
            # Manual runs on Airflow 3 have no logical date; run_after is when they were due.
            scheduled_for=r.logical_date or r.run_after or r.execution_date,
            queued_at=r.queued_at,
            started_at=r.start_date,
            ended_at=r.end_date,
            # Airflow does not return updated_at. The latest lifecycle stamp stands in; the scheduler's
            # last_scheduling_decision is left out because it moves on every loop without any real change.
            updated_at=latest(r.queued_at, r.start_date, r.end_date),
            run_type=RUN_TYPES.get(r.run_type or "", r.run_type),
            version=str(versions[-1]) if versions else None,
            message=r.note,
            url=self.run_url(r.dag_id, r.dag_run_id),
        )

    def task(self, t: TaskInstance) -> TaskUpdate:
        return TaskUpdate(
            source=self.source,
            pipeline=t.dag_id,
            run_id=t.dag_run_id,
            task=t.task_id,
            state=task_state(t.state, self.on_unknown),
            raw_state=t.state or "none",
            try_number=t.try_number,
            max_tries=t.max_tries,
            started_at=t.start_date,
            ended_at=t.end_date,
            updated_at=latest(t.scheduled_when, t.queued_when, t.start_date, t.end_date),
            pool=t.pool,
            queue=t.queue,
            message=t.note,
        )

    def pipeline(self, d: Dag, upstreams: tuple[str, ...] = ()) -> PipelineInfo:
        return PipelineInfo(
            source=self.source,
            pipeline=d.dag_id,
            paused=bool(d.is_paused),
            tags=tuple(t.name for t in d.tags or ()),
            schedule=d.schedule,
            # v2's run_after / v1's create_after: when the scheduler will create the next run.
            next_run=d.next_dagrun_run_after or d.next_dagrun_create_after,
            upstreams=upstreams,
            url=f"{self.base_url}/dags/{seg(d.dag_id)}" + ("" if self.v2 else "/grid"),
        )

    def import_error(self, e: ImportErrorItem) -> ImportErrorInfo:
        return ImportErrorInfo(source=self.source, filename=e.filename, message=e.stack_trace, timestamp=e.timestamp)

    @staticmethod
    def upstreams(assets: list[Asset]) -> dict[str, tuple[str, ...]]:
        """dag_id -> the other DAGs whose tasks produce an asset (dataset) that DAG is scheduled on."""
        out: dict[str, set[str]] = {}
        for a in assets:
            producers = {t.dag_id for t in a.producing_tasks}
            for consumer in a.consumers:
                out.setdefault(consumer, set()).update(producers - {consumer})
        return {dag: tuple(sorted(ups)) for dag, ups in out.items() if ups}

    def run_url(self, dag_id: str, run_id: str) -> str:
        if self.v2:
            return f"{self.base_url}/dags/{seg(dag_id)}/runs/{seg(run_id)}"
        return f"{self.base_url}/dags/{seg(dag_id)}/grid?dag_run_id={seg(run_id)}"
