"""asset_producer: one task that updates the asset (dataset) `sentinel://prices`; never scheduled."""

from __future__ import annotations

from datetime import UTC, datetime

try:  # Airflow 3: assets in the task SDK, operators in the standard provider.
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG, Asset
except ImportError:  # Airflow 2: datasets
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="asset_producer",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["sentinel-test"],
):
    BashOperator(task_id="publish", bash_command="echo published", outlets=[Asset("sentinel://prices")])
