"""healthy_pipeline: extract -> load, always succeeds (on Airflow 2.10 and 3.3 alike)."""

from __future__ import annotations

from datetime import UTC, datetime

try:  # Airflow 3 moved the authoring API to the task SDK and operators to the standard provider.
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="healthy_pipeline",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["sentinel-test"],
):
    extract = BashOperator(task_id="extract", bash_command="echo extracted")
    load = BashOperator(task_id="load", bash_command="echo loaded")
    extract >> load
