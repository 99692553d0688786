"""volume_pipeline: load -> publish, where publish pushes XCom `rows` = 1234 (Airflow 2.10 and 3.3 alike)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

try:  # Airflow 3 moved the authoring API to the task SDK and operators to the standard provider.
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator
    from airflow.operators.python import PythonOperator

ROWS = 1234


def _publish(ti: Any) -> None:
    ti.xcom_push(key="rows", value=ROWS)


with DAG(
    dag_id="volume_pipeline",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["sentinel-test"],
):
    load = BashOperator(task_id="load", bash_command="echo loaded")
    publish = PythonOperator(task_id="publish", python_callable=_publish)
    load >> publish
