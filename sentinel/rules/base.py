"""What every rule shares: the base rule model, pipeline selectors, and what a condition returns."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from sentinel.durations import Duration
from sentinel.model import PipelineInfo, PipelineKey

if TYPE_CHECKING:
    from sentinel.observe.history import History, PipelineHistory

AlertName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
LabelName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    clash = sorted(set(labels) & {"alertname", "severity", "source", "pipeline"})
    if clash:
        raise ValueError(f"{', '.join(clash)} set by Sentinel (or by severity:) and cannot be overridden in labels")
    return labels


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PipelineSelector(Strict):
    source: str = "*"
    pipeline: str = "*"
    tags: list[str] = Field(default_factory=list)

    def matches(self, key: PipelineKey, info: PipelineInfo | None) -> bool:
        if not fnmatch.fnmatchcase(key.source, self.source) or not fnmatch.fnmatchcase(key.pipeline, self.pipeline):
            return False
        if self.tags:
            return info is not None and set(self.tags) <= set(info.tags)
        return True

    def matches_source(self, source: str) -> bool:
        return fnmatch.fnmatchcase(source, self.source)


def _upstream_shorthand(v: Any) -> Any:
    # A bare string is the common case ("market_data_ingest"): a pipeline name in any source. A mapping
    # is needed only to pin the source, since Prefect names contain '/' and "source/pipeline" would be
    # ambiguous.
    return {"pipeline": v} if isinstance(v, str) else v


class UpstreamRef(Strict):
    """One entry of `depends_on`: an upstream pipeline, by name (globs allowed), optionally in one source."""

    source: str = "*"
    pipeline: Annotated[str, Field(min_length=1, max_length=512)]

    def matches(self, key: PipelineKey) -> bool:
        return fnmatch.fnmatchcase(key.source, self.source) and fnmatch.fnmatchcase(key.pipeline, self.pipeline)


Upstream = Annotated[UpstreamRef, BeforeValidator(_upstream_shorthand)]

# Annotations that `depends_on` writes; a rule setting them itself would be overwritten every tick.
DEPENDENCY_ANNOTATIONS = frozenset({"root_cause", "blocks"})
# Kinds whose alerts an upstream problem explains (and inhibits): the pipeline is late, not broken.
DEPENDENT_KINDS = frozenset({"deadline", "late_start", "freshness"})


class RuleBase(Strict):
    """Fields every rule has, whatever its `when:`. Each condition module subclasses it."""

    # pipeline rules are evaluated per selected pipeline; source rules per source
    scope: ClassVar[str] = "pipeline"
    # fields a condition offers to annotation templates, beyond the common ones
    template_fields: ClassVar[frozenset[str]] = frozenset()

    alert: AlertName
    for_: Duration = Field(timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    severity: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "warning"
    labels: dict[LabelName, str] = Field(default_factory=dict)
    annotations: dict[LabelName, str] = Field(default_factory=dict)
    pipelines: PipelineSelector | None = None
    # None inherits the group's; a list (even empty) replaces it, as `pipelines:` does.
    depends_on: list[Upstream] | None = None
    inhibited_by_upstream: bool | None = None

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)

    @field_validator("annotations")
    @classmethod
    def _no_dependency_annotations(cls, v: dict[str, str]) -> dict[str, str]:
        clash = sorted(set(v) & DEPENDENCY_ANNOTATIONS)
        if clash:
            raise ValueError(f"annotations {', '.join(clash)} are written by depends_on and cannot be set in a rule")
        return v

    @model_validator(mode="after")
    def _depends_on_applies(self) -> RuleBase:
        when = getattr(self, "when", None)
        if (self.depends_on or self.inhibited_by_upstream is not None) and when not in DEPENDENT_KINDS:
            raise ValueError(
                f"depends_on / inhibited_by_upstream only affect when: {', '.join(sorted(DEPENDENT_KINDS))} "
                f"rules, not when: {when}"
            )
        return self


@dataclass(frozen=True)
class Finding:
    labels: Mapping[str, str]  # identity labels beyond alertname/severity: source, pipeline, task, component
    variables: Mapping[str, Any] = field(default_factory=dict)  # for annotation templates
    # A finding may stand for a second alert of its rule (a deadline's `DeadlineAtRisk` warning): its own
    # alertname, severity and annotation templates instead of the rule's. None: the rule's.
    alertname: str | None = None
    severity: str | None = None
    annotations: Mapping[str, str] | None = None


def _always(_labels: Mapping[str, str]) -> bool:
    return True


@dataclass
class Evaluation:
    """What a condition found. `settled` says whether an instance it did NOT find may resolve: a
    condition that could not judge (the source is unreachable) keeps such instances as they are."""

    findings: list[Finding]
    settled: Callable[[Mapping[str, str]], bool] = _always


@dataclass
class Scope:
    """Everything a condition may read for one evaluation: frozen `now`, the history, the selection."""

    now: datetime
    history: History
    pipelines: list[PipelineHistory]  # selected pipelines (pipeline-scoped rules)
    sources: list[str]  # selected sources (source-scoped rules)
    calendar: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. calendars registry


def pipeline_labels(ph: PipelineHistory, **extra: str) -> dict[str, str]:
    return {"source": ph.key.source, "pipeline": ph.key.pipeline, **extra}


def is_paused(ph: PipelineHistory) -> bool:
    """A paused DAG/deployment is a state of its own: no lateness, freshness or stuck alerts for it."""
    info = ph.info  # read once: a property, and this runs per pipeline per rule per tick
    return info is not None and info.paused


def per_pipeline(judge: Callable[[Any, PipelineHistory, Scope], Finding | None], rule: Any, scope: Scope) -> Evaluation:
    """The common shape of a pipeline condition: at most one finding per selected pipeline."""
    return Evaluation([f for ph in scope.pipelines if (f := judge(rule, ph, scope)) is not None])
