#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine with Python 3.11, then runs it.
# Real Airflow 3, Airflow 2 and Prefect 3 are installed into their own cached virtualenvs under
# ~/.cache/sentinel-test (never into ours) and started by the tests themselves on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's Prometheus (promtool and the server for the end-to-end test) and Alertmanager (the differential
# test's and the benchmark's peer).
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || [ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages: run 'sudo apt-get install ${missing[*]}'" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev,anomaly]'

# The three scheduler stacks install in parallel (cached after the first run).
.venv/bin/python -m tests.servers.venvs all

.venv/bin/ruff check sentinel adapters tests bench
SENTINEL_REQUIRE_PYOD=1 exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
