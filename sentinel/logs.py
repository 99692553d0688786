"""Logging set-up: loguru, plain or JSON lines, with every configured secret redacted."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from loguru import logger

_secrets: set[str] = set()


def add_secrets(values: Iterable[str]) -> None:
    # Short values would redact ordinary words; a secret under 4 characters is no secret anyway.
    _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, "<redacted>")
    return text


def _patch(record: Any) -> None:
    if _secrets:
        record["message"] = redact(record["message"])
        if record["exception"] is not None:
            exc = record["exception"].value
            if exc is not None and any(s in str(exc) for s in _secrets):
                record["exception"] = None  # a traceback that would print a secret is dropped, not leaked


def setup(level: str = "INFO", json: bool = False, sink: Any = None) -> None:
    logger.remove()
    logger.configure(patcher=_patch)
    target = sink if sink is not None else sys.stderr
    if json:
        logger.add(target, level=level.upper(), serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(
            target,
            level=level.upper(),
            format="{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {level: <7} {message}",
            backtrace=False,
            diagnose=False,  # diagnose prints local variables: they may hold secrets
        )


def secrets_of(config: Any) -> list[str]:
    """Every SecretStr value in a pydantic model tree."""
    from pydantic import BaseModel, SecretStr

    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, SecretStr):
            out.append(v.get_secret_value())
        elif isinstance(v, BaseModel):
            for name in type(v).model_fields:
                walk(getattr(v, name))
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(config)
    return out
