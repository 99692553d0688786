"""The rule-file schema (`rules/*.yaml`), validated with file:line:col errors."""

from __future__ import annotations

from datetime import timedelta  # noqa: F401 - pydantic resolves annotations at runtime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sentinel.durations import Duration
from sentinel.rules.base import LabelName, PipelineSelector, RuleBase, Strict, Upstream, check_labels
from sentinel.rules.conditions import Rule
from sentinel.yamlfile import ConfigError, Problem, load, validate

__all__ = [
    "LoadedRules",
    "PipelineSelector",
    "Rule",
    "RuleBase",
    "RuleFile",
    "RuleGroup",
    "load_rule_file",
    "load_rules",
]


class RuleGroup(Strict):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    pipelines: PipelineSelector = PipelineSelector()
    calendar: str | None = None
    interval: Duration | None = None
    labels: dict[LabelName, str] = Field(default_factory=dict)
    # Upstream pipelines of the group's deadline/late_start/freshness rules (see docs/rules.md#depends_on).
    depends_on: list[Upstream] = Field(default_factory=list)
    inhibited_by_upstream: bool = True
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)

    @model_validator(mode="after")
    def _unique_alerts(self) -> RuleGroup:
        names = [r.alert for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"group {self.name!r}: alert names must be unique in a group; repeated: {', '.join(dupes)}"
            )
        return self


class RuleFile(Strict):
    groups: list[RuleGroup] = Field(default_factory=list)


class LoadedRules(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    files: list[tuple[Path, RuleFile]]

    def groups(self) -> list[tuple[Path, RuleGroup]]:
        return [(p, g) for p, f in self.files for g in f.groups]


def load_rule_file(path: Path, text: str | None = None) -> RuleFile:
    doc = load(path, text)
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
