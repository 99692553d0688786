"""`when: source_down` — API unreachable, a heartbeat stale, or a work pool without an online worker."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field

from sentinel.durations import Duration
from sentinel.rules.base import Evaluation, Finding, RuleBase, Scope


class SourceDownRule(RuleBase):
    scope: ClassVar[str] = "source"
    template_fields: ClassVar[frozenset[str]] = frozenset({"component", "error", "last_heartbeat", "version"})

    when: Literal["source_down"]
    max_heartbeat_age: Duration = timedelta(seconds=90)
    components: list[str] = Field(
        default_factory=lambda: ["api", "scheduler", "dag_processor", "triggerer", "work_pool"]
    )


def evaluate(rule: SourceDownRule, scope: Scope) -> Evaluation:
    findings: list[Finding] = []
    unreachable: set[str] = set()
    wanted = set(rule.components)
    for source in scope.sources:
        h = scope.history.health.get(source)
        if h is None:
            continue  # not polled yet: we know nothing either way
        if not h.reachable:
            unreachable.add(source)
            if "api" in wanted:
                findings.append(Finding({"source": source, "component": "api"}, {"component": "api", "error": h.error}))
            continue
        for c in h.components:
            if c.name.split(":", 1)[0] not in wanted:
                continue
            # Age as of the observation, not of this evaluation: our own poll cadence is not the scheduler's fault.
            seen = c.observed_at or h.observed_at
            stale = c.last_heartbeat is not None and (seen - c.last_heartbeat) > rule.max_heartbeat_age
            if c.healthy and not stale:
                continue
            findings.append(
                Finding(
                    {"source": source, "component": c.name},
                    {"component": c.name, "error": c.detail, "last_heartbeat": c.last_heartbeat, "version": h.version},
                )
            )

    def settled(labels: Mapping[str, str]) -> bool:
        # While the API is down we cannot see the scheduler's heartbeat: keep those alerts as they are.
        return labels.get("source") not in unreachable or labels.get("component") == "api"

    return Evaluation(findings, settled)


MODEL = SourceDownRule
