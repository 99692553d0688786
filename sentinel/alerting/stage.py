"""Alertmanager's pipeline shape: every feature is a Stage; Sequence and FanOut compose them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sentinel.alerting.alert import Alert


@dataclass(frozen=True)
class FlushContext:
    """What every stage of one group flush may read. `now` is frozen for the whole flush."""

    now: datetime
    group_key: str
    group_labels: Mapping[str, str]
    receiver: str
    repeat_interval: timedelta
    integration: str = ""  # set by FanOut for the per-integration branch
    send_resolved: bool = True
    deadline: datetime | None = None  # retries stop here (the next flush takes over)
    extra: dict[str, object] = field(default_factory=dict)

    def for_integration(self, name: str, send_resolved: bool) -> FlushContext:
        return FlushContext(
            now=self.now,
            group_key=self.group_key,
            group_labels=self.group_labels,
            receiver=self.receiver,
            repeat_interval=self.repeat_interval,
            integration=name,
            send_resolved=send_resolved,
            deadline=self.deadline,
            extra=dict(self.extra),
        )


class Stage(Protocol):
    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]: ...


class Sequence:
    """Run stages in order; an empty list stops the sequence (nothing left to send)."""

    def __init__(self, *stages: Stage) -> None:
        self.stages = stages

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        for stage in self.stages:
            if not alerts:
                return alerts
            alerts = await stage(ctx, alerts)
        return alerts


class FanOut:
    """Run one branch per integration concurrently; a failing branch does not stop the others."""

    def __init__(self, branches: Mapping[str, tuple[Stage, bool]]) -> None:
        # name -> (stage, send_resolved)
        self.branches = dict(branches)

    async def __call__(self, ctx: FlushContext, alerts: list[Alert]) -> list[Alert]:
        if len(self.branches) == 1:  # the usual receiver: no task to spawn and gather for one branch
            ((name, (stage, sr)),) = self.branches.items()
            await stage(ctx.for_integration(name, sr), list(alerts))
            return alerts
        results = await asyncio.gather(
            *(stage(ctx.for_integration(name, sr), list(alerts)) for name, (stage, sr) in self.branches.items()),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return alerts
