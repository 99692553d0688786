"""`when: import_errors` — Airflow DAG files that fail to import: one alert per (source, file).

Source-scoped. Labels are `source` and `filename` (no `pipeline`: a file that does not import has no
DAG yet). The `filename` label is bounded by the number of DAG files in the deployment, which is the
cardinality on-call wants: each broken file is its own problem with its own fix, and resolves on its own
once the scheduler stops reporting it.

Import errors are read on a slower cadence than runs; `History.import_errors` holds each source's last
complete set. A source whose errors were never read (Prefect, or not yet polled) or that is unreachable
now cannot say a file is fixed, so its alerts are held as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope

MAX_MESSAGE = 300


class ImportErrorsRule(RuleBase):
    scope: ClassVar[str] = "source"
    template_fields: ClassVar[frozenset[str]] = frozenset({"filename", "message", "timestamp"})

    when: Literal["import_errors"]


def evaluate(rule: ImportErrorsRule, scope: Scope) -> Evaluation:
    findings: list[Finding] = []
    judged: set[str] = set()
    for source in scope.sources:
        health = scope.history.health.get(source)
        errors = scope.history.import_errors.get(source)
        if errors is None or health is None or not health.reachable:
            continue
        judged.add(source)
        seen: set[str] = set()
        for e in errors:
            # Airflow can list a file more than once (one per bundle version): one alert per file.
            if e.filename in seen:
                continue
            seen.add(e.filename)
            findings.append(
                Finding(
                    {"source": source, "filename": e.filename},
                    {"filename": e.filename, "message": summary(e.message), "timestamp": e.timestamp},
                )
            )

    def settled(labels: Mapping[str, str]) -> bool:
        return labels.get("source") in judged

    return Evaluation(findings, settled)


def summary(message: str) -> str:
    """The line that says what is wrong, at most MAX_MESSAGE characters.

    That is the first line, except for a Python traceback (Airflow's default), whose first line is
    "Traceback (most recent call last):" and whose last line names the exception — the useful one.
    """
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


MODEL = ImportErrorsRule
