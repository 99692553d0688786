"""`cost.rates`: which runs and tasks a price applies to, and the price.

    cost:
      currency: USD
      monthly_budget: 800
      rates:
        - {source: airflow-prod, pool: gpu_pool, per_task_hour: 2.40}
        - {source: prefect-*, work_pool: k8s-large, per_task_hour: 0.90, per_run: 0.02}
        - {pipeline: "report_*", per_run: 0.10}
        - {per_task_hour: 0.35}          # everything else

Each charge takes the FIRST rate, in file order, that matches and sets that kind of price: a task's
hours use the first matching rate with `per_task_hour`, a run's flat price the first matching rate with
`per_run`. Put specific rates before general ones, as with firewall rules.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

Glob = Annotated[str, Field(min_length=1, max_length=256)]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class RateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: Glob = "*"
    pipeline: Glob = "*"
    # Airflow's task pool, or Prefect's work pool (the same fact under each scheduler's own name).
    pool: Glob | None = Field(None, validation_alias=AliasChoices("pool", "work_pool"))
    queue: Glob | None = None  # Airflow's executor queue / Prefect's work queue
    per_task_hour: Price | None = None
    per_run: Price | None = None

    @model_validator(mode="after")
    def _has_a_price(self) -> RateConfig:
        if self.per_task_hour is None and self.per_run is None:
            raise ValueError("a rate needs per_task_hour or per_run (or both)")
        return self

    def matches(self, source: str, pipeline: str, pool: str | None, queue: str | None) -> bool:
        return (
            fnmatch.fnmatchcase(source, self.source)
            and fnmatch.fnmatchcase(pipeline, self.pipeline)
            and (self.pool is None or (pool is not None and fnmatch.fnmatchcase(pool, self.pool)))
            and (self.queue is None or (queue is not None and fnmatch.fnmatchcase(queue, self.queue)))
        )


def task_hour_price(rates: list[RateConfig], source: str, pipeline: str, pool: str | None, queue: str | None) -> float:
    for r in rates:
        if r.per_task_hour is not None and r.matches(source, pipeline, pool, queue):
            return r.per_task_hour
    return 0.0


def run_price(rates: list[RateConfig], source: str, pipeline: str, pool: str | None, queue: str | None) -> float:
    for r in rates:
        if r.per_run is not None and r.matches(source, pipeline, pool, queue):
            return r.per_run
    return 0.0
