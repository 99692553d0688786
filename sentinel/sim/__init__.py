"""A built-in simulator of Airflow- and Prefect-shaped APIs, for the demo, benchmarks and fast tests.

It is never the proof that an adapter works: integration tests use real servers for that.
"""
