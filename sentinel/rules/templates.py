"""Annotation templates: Jinja2 in a sandbox, so a rule file can never run code or read files."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

# What every template may use; conditions add their own fields on top (each rule model's `template_fields`).
COMMON_FIELDS = frozenset({"labels", "source", "pipeline", "severity", "alertname", "value", "now"})
_env = ImmutableSandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=4096)
def _compile(source: str) -> jinja2.Template:
    return _env.from_string(source)


def render(source: str, variables: Mapping[str, Any]) -> str:
    if "{" not in source:
        return source
    try:
        return _compile(source).render(**variables)
    except jinja2.TemplateError as exc:
        # A template that compiled but failed on these values must not lose the alert.
        return f"{source} (template error: {exc})"


def check_templates(rule: Any) -> list[tuple[str, str]]:
    """(annotation key, message) for templates that do not compile or use fields the rule cannot provide."""
    allowed = COMMON_FIELDS | type(rule).template_fields
    out: list[tuple[str, str]] = []
    for key, source in rule.annotations.items():
        try:
            ast = _env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            msg = f"annotations.{key}: template does not compile: {exc.message} (template line {exc.lineno})"
            out.append((key, msg))
            continue
        try:
            unknown = sorted(meta.find_undeclared_variables(ast) - allowed)
        except jinja2.TemplateError as exc:  # e.g. an unknown filter, found only when compiling
            out.append((key, f"annotations.{key}: template does not compile: {exc}"))
            continue
        if unknown:
            out.append(
                (
                    key,
                    f"annotations.{key}: unknown template field(s) {', '.join(unknown)} for when: {rule.when}; "
                    f"known: {', '.join(sorted(allowed))}",
                )
            )
    return out
