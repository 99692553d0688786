"""Every receiver's integrations from a loaded sentinel.yaml; an unusable URL is a `file:line:col` error.

`build_integrations` words each unusable URL as "receiver 'x' urls[2]: …" (secrets redacted); this puts
each message at that URL's place in the file, for `sentinel check`, `sentinel run` and `/-/reload` alike.
"""

from __future__ import annotations

import re
from pathlib import Path

from sentinel.config import Config, ReceiverConfig, TaggedUrl
from sentinel.notify.base import Integration
from sentinel.notify.build import build_integrations
from sentinel.notify.errors import NotifyConfigError
from sentinel.yamlfile import ConfigError, Problem, load

_NAMED = re.compile(r"^receiver '[^']*' (?:urls\[(\d+)\]|(webhook))")


def all_integrations(path: Path, config: Config) -> dict[str, list[Integration]]:
    """receiver name -> its integrations; raises ConfigError with every unusable URL located."""
    out: dict[str, list[Integration]] = {}
    problems: list[Problem] = []
    for i, r in enumerate(config.receivers):
        try:
            out[r.name] = build_integrations(r, external_url=config.server.external_url or "")
        except NotifyConfigError as exc:
            doc = load(path)
            problems += [doc.problem(_where(r, i, m), f"receivers: {m}") for m in str(exc).splitlines()]
    if problems:
        raise ConfigError(problems)
    return out


def _where(receiver: ReceiverConfig, index: int, message: str) -> tuple[str | int, ...]:
    m = _NAMED.match(message)
    if m is None:
        return ("receivers", index)
    if m.group(2):
        return ("receivers", index, "webhook", "url")
    j = int(m.group(1))
    tagged = j < len(receiver.urls) and isinstance(receiver.urls[j], TaggedUrl)
    return ("receivers", index, "urls", j, *(("url",) if tagged else ()))
