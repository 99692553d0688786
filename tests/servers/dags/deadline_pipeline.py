"""deadline_pipeline: one task that always succeeds; used only by tests/integration/test_deadline_real.py.

A DAG of its own because the deadline test needs a pipeline with no successful run today on a server that
other tests share (any success of healthy_pipeline from an earlier test would meet the deadline at once).
"""

from __future__ import annotations

from datetime import UTC, datetime

try:  # Airflow 3 moved the authoring API to the task SDK and operators to the standard provider.
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="deadline_pipeline",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["sentinel-test"],
):
    BashOperator(task_id="publish", bash_command="echo published")
