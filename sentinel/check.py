"""`sentinel check`: validate sentinel.yaml and its rule files, reporting every problem as file:line:col."""

from __future__ import annotations

import sys
from pathlib import Path

from sentinel.config import load_config
from sentinel.rules.files import load_rules
from sentinel.yamlfile import ConfigError, Problem


def problems(config_path: Path) -> list[Problem]:
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        return exc.problems
    found: list[Problem] = []
    try:
        load_rules(loaded.rule_paths)
    except ConfigError as exc:
        found.extend(exc.problems)
    try:
        from sentinel.notify.build import build_integrations

        for r in loaded.config.receivers:
            build_integrations(r)
    except ConfigError as exc:
        found.extend(exc.problems)
    except ValueError as exc:
        found.append(Problem(str(config_path), 1, 1, f"receivers: {exc}"))
    return found


def check(config_path: Path, strict: bool = False) -> int:
    found = problems(config_path)
    errors = [p for p in found if p.severity == "error" or strict]
    for p in found:
        print(p, file=sys.stderr if p in errors else sys.stdout)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{config_path}: ok")
    return 0
