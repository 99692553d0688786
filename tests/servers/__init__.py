"""Real Airflow 3, Airflow 2 and Prefect 3 servers for integration tests.

`venvs` installs each stack into its own cached virtualenv, `airflow` and `prefect` start and drive the
servers on 127.0.0.1, `procs` starts processes and stops whole process trees. The pytest fixtures that use
them live in tests/integration/conftest.py.
"""
