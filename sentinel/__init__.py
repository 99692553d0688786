"""Sentinel: alerting for Airflow and Prefect pipelines."""

__version__ = "0.1.0"
