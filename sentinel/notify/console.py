"""Notifications printed to a terminal: what `sentinel demo` shows instead of paging anyone."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from sentinel.alerting.alert import Alert
from sentinel.alerting.stage import FlushContext
from sentinel.notify.message import render


class ConsoleIntegration:
    kind = "console"

    def __init__(self, *, name: str = "console[0]", send_resolved: bool = True, stream: TextIO | None = None) -> None:
        self.name = name
        self.send_resolved = send_resolved
        self._stream = stream

    def __repr__(self) -> str:
        return f"ConsoleIntegration(name={self.name!r})"

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        message = render(ctx, alerts, self.kind)
        # sys.stdout is looked up per call, not at construction, so a redirected stdout (pytest's capture,
        # a CLI wrapper) is honoured.
        stream = self._stream if self._stream is not None else sys.stdout
        when = ctx.now.strftime("%Y-%m-%d %H:%M:%S UTC")
        rule = f"── {ctx.receiver} · {when} "
        # One write per notification keeps concurrent flushes from interleaving line by line.
        stream.write(f"{rule}{'─' * max(0, 72 - len(rule))}\n{message.title}\n{message.body}\n\n")
        stream.flush()
