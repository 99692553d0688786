"""Run one ad-hoc Prefect flow against $PREFECT_API_URL and print its flow run id.

Executed by the Prefect venv's interpreter (not the project's), as a script:

    python run_flow.py --name NAME [--fail]

Prints `FLOW_RUN_ID=<uuid>` and `FLOW_RUN_STATE=<type>`, exits 0 whether the flow failed or not (a failed
run is the point of --fail); any other exit code means the harness itself broke.
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow, task


@task(name="extract")
def extract() -> int:
    return 42


@task(name="load", retries=0)
def load(value: int, fail: bool) -> int:
    if fail:
        raise RuntimeError("load failed on purpose (--fail)")
    return value


@flow(name="sentinel-test-flow", retries=0)
def pipeline(fail: bool = False) -> int:
    return load(extract(), fail)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True, help="flow name the run is recorded under")
    parser.add_argument("--fail", action="store_true", help="make the second task raise")
    args = parser.parse_args()
    # return_state keeps a failed flow from raising here, so the id is printed either way.
    state = pipeline.with_options(name=args.name)(fail=args.fail, return_state=True)
    print(f"FLOW_RUN_ID={state.state_details.flow_run_id}", flush=True)
    print(f"FLOW_RUN_STATE={state.type.value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
