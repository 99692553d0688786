"""The rule-file schema (`rules/*.yaml`), validated with file:line:col errors."""

from __future__ import annotations

import fnmatch
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sentinel.durations import Duration
from sentinel.model import PipelineInfo, PipelineKey
from sentinel.yamlfile import ConfigError, Problem, load, validate

AlertName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
LabelName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
RESERVED_LABELS = frozenset({"alertname", "severity", "source", "pipeline", "task", "component"})


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    clash = sorted(set(labels) & {"alertname", "severity", "source", "pipeline"})
    if clash:
        raise ValueError(f"{', '.join(clash)} set by Sentinel (or by severity:) and cannot be overridden in labels")
    return labels


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PipelineSelector(_Strict):
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


class RuleBase(_Strict):
    alert: AlertName
    for_: Duration = Field(timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    severity: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "warning"
    labels: dict[LabelName, str] = Field(default_factory=dict)
    annotations: dict[LabelName, str] = Field(default_factory=dict)
    pipelines: PipelineSelector | None = None

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels(v)


class FailedRule(RuleBase):
    """The last `consecutive` finished runs (or, with level: task, a task's last tries) failed."""

    when: Literal["failed"]
    consecutive: Annotated[int, Field(ge=1, le=100)] = 1
    level: Literal["run", "task"] = "run"
    tasks: str = "*"  # glob of task names, for level: task


class SourceDownRule(RuleBase):
    """The scheduler's API is unreachable, a heartbeat is stale, or a work pool has no online worker."""

    when: Literal["source_down"]
    max_heartbeat_age: Duration = timedelta(seconds=90)
    components: list[str] = Field(
        default_factory=lambda: ["api", "scheduler", "dag_processor", "triggerer", "work_pool"]
    )


Rule = Annotated[FailedRule | SourceDownRule, Field(discriminator="when")]


class RuleGroup(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    pipelines: PipelineSelector = PipelineSelector()
    calendar: str | None = None
    interval: Duration | None = None
    labels: dict[LabelName, str] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels(v)

    @model_validator(mode="after")
    def _unique_alerts(self) -> RuleGroup:
        names = [r.alert for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"group {self.name!r}: alert names must be unique repeated: {', '.join(dupes)}")
        return self


class RuleFile(_Strict):
    groups: list[RuleGroup] = Field(default_factory=list)


class LoadedRules(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    files: list[tuple[Path, RuleFile]]

    def groups(self) -> list[tuple[Path, RuleGroup]]:
        return [(p, g) for p, f in self.files for g in f.groups]


def load_rule_file(path: Path) -> RuleFile:
    doc = load(path)
    if doc.data is None:
        return RuleFile()
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "a rule file must be a mapping with a 'groups' list")])
    rf = validate(doc, RuleFile)
    from sentinel.rules.templates import check_templates

    problems = [
        doc.problem(("groups", gi, "rules", ri, "annotations", key), msg)
        for gi, g in enumerate(rf.groups)
        for ri, r in enumerate(g.rules)
        for key, msg in check_templates(r)
    ]
    if problems:
        raise ConfigError(problems)
    return rf


def load_rules(paths: list[Path]) -> LoadedRules:
    problems: list[Problem] = []
    files: list[tuple[Path, RuleFile]] = []
    for p in paths:
        try:
            files.append((p, load_rule_file(p)))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return LoadedRules(files=files)
