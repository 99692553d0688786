"""Demo Prefect flows for the compose stack, served from this process (no work pool needed):
an end-of-day report every 10 minutes that sometimes fails, and a reference-data sync every 5 minutes."""

from __future__ import annotations

import random
import time

from prefect import flow, serve, task


@task
def render(section: str) -> str:
    time.sleep(random.uniform(1, 10))
    if section == "positions" and random.random() < 0.2:
        raise RuntimeError("positions file missing")
    return section


@flow(name="eod-reporting")
def eod_reporting() -> list[str]:
    return [render(s) for s in ("positions", "pnl", "exposures")]


@task
def sync(table: str) -> int:
    time.sleep(random.uniform(1, 5))
    return len(table)


@flow(name="reference-data-sync")
def reference_data_sync() -> int:
    return sum(sync(t) for t in ("instruments", "calendars"))


if __name__ == "__main__":
    serve(
        eod_reporting.to_deployment(name="eod", interval=600),
        reference_data_sync.to_deployment(name="sync", interval=300),
    )
