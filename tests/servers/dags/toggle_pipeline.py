"""toggle_pipeline: extract -> load; `load` fails when the run's conf has a truthy "fail".

Lets one DAG produce a failed or a successful run on demand, on Airflow 2.10 and 3.3 alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

try:  # Airflow 3 moved the authoring API to the task SDK and operators to the standard provider.
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator


def _extract() -> int:
    return 42


def _load(**context: Any) -> None:
    conf = context["dag_run"].conf or {}
    if conf.get("fail"):
        raise RuntimeError("load failed on purpose (dag_run.conf.fail)")


with DAG(
    dag_id="toggle_pipeline",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["sentinel-test"],
):
    extract = PythonOperator(task_id="extract", python_callable=_extract)
    load = PythonOperator(task_id="load", python_callable=_load, retries=0)
    extract >> load
