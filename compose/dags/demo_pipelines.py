"""Demo DAGs for the compose stack: a market-data ingest every 5 minutes that fails now and then, and a
portfolio-risk job every 15 minutes that waits for it. They give Sentinel's dashboards and rules something
to watch; they are not part of Sentinel.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG


def _fetch_prices() -> int:
    time.sleep(random.uniform(2, 20))
    if random.random() < 0.15:  # an exchange feed that times out about once in seven runs
        raise RuntimeError("price feed timed out")
    return 42


def _store() -> None:
    time.sleep(random.uniform(1, 5))


def _compute_risk() -> None:
    time.sleep(random.uniform(10, 40))


with DAG(
    dag_id="market_data_ingest",
    schedule="*/5 * * * *",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["demo", "market-data"],
):
    fetch = PythonOperator(task_id="fetch_prices", python_callable=_fetch_prices, retries=0)
    store = PythonOperator(task_id="store", python_callable=_store)
    fetch >> store

with DAG(
    dag_id="portfolio_risk",
    schedule="*/15 * * * *",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["demo", "risk"],
):
    PythonOperator(task_id="compute_var", python_callable=_compute_risk)
