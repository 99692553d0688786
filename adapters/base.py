"""The adapter contract.

An adapter knows HTTP, pagination, auth and version differences of one scheduler kind, and nothing
about rules. `poll` reads what changed since `cursor` and returns it with the next cursor. It never
raises for scheduler trouble (down, slow, garbage): it returns `health.reachable = False`, the cursor it
was given, and the poller backs off.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from adapters.http import PoliteClient
from sentinel.model import Clock, PollResult, SourceSpec


class Adapter(Protocol):
    kind: ClassVar[str]

    def __init__(self, spec: SourceSpec, clock: Clock, client: PoliteClient) -> None: ...

    async def poll(self, cursor: dict[str, Any]) -> PollResult: ...
