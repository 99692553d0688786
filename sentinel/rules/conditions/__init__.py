"""Condition kinds: one module per `when:`, each exporting `MODEL` (a RuleBase subclass whose `when` is a
Literal) and a pure `evaluate(rule, scope) -> Evaluation`.

Adding a kind means adding a module here; the rule-file schema, `sentinel check` and the engine find it.

Two optional exports let the engine skip pipelines that did not change (see `sentinel.rules.engine`):
`time_independent(rule) -> bool` (findings read the history alone), and `quiet_until(rule, ph, scope)`
(for a pipeline found nothing for: the earliest instant it could be found, history unchanged; None for
never). A kind with neither is judged for every pipeline on every tick.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Annotated, Any, Union, get_args

from pydantic import Field

from sentinel.rules.base import Evaluation, RuleBase, Scope


def _discover() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        model = getattr(mod, "MODEL", None)
        if model is None:
            continue
        (kind,) = get_args(model.model_fields["when"].annotation)
        found[kind] = mod
    return found


KINDS: dict[str, ModuleType] = _discover()
MODELS: dict[str, type[RuleBase]] = {kind: mod.MODEL for kind, mod in KINDS.items()}

Rule = Annotated[Union[tuple(MODELS.values())], Field(discriminator="when")]  # type: ignore[valid-type]  # noqa: UP007


def evaluator(kind: str) -> Callable[[Any, Scope], Evaluation]:
    fn: Callable[[Any, Scope], Evaluation] = KINDS[kind].evaluate
    return fn
