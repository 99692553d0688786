"""A Prefect flow that reports its data volume as an artifact, the way `volume:` of a source reads it.

Same command line and output as run_flow.py (`--name NAME`, prints `FLOW_RUN_ID=`); the run records
artifact `rows-loaded` = 1234 (stored by the SDK as the JSON text "1234").
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow, task
from prefect.artifacts import Artifact

ROWS = 1234


@task(name="load")
def load() -> int:
    return ROWS


@flow(name="sentinel-volume-flow", retries=0)
def pipeline() -> int:
    rows = load()
    Artifact(type="result", key="rows-loaded", data=rows, description="rows loaded").create()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True, help="flow name the run is recorded under")
    parser.add_argument("--fail", action="store_true", help="accepted for run_flow.py compatibility; ignored")
    args = parser.parse_args()
    state = pipeline.with_options(name=args.name)(return_state=True)
    print(f"FLOW_RUN_ID={state.state_details.flow_run_id}", flush=True)
    print(f"FLOW_RUN_STATE={state.type.value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
