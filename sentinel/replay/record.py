"""The replay's edge: an Integration that records each notification instead of delivering it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sentinel.alerting.alert import Alert, LabelSet, labelset
from sentinel.alerting.stage import FlushContext


@dataclass(frozen=True)
class Notification:
    """One message a receiver would have got: a group's firing and resolved alerts at one instant."""

    at: datetime
    receiver: str
    group: LabelSet
    firing: tuple[LabelSet, ...]
    resolved: tuple[LabelSet, ...]
    integration: str = ""

    @property
    def group_map(self) -> dict[str, str]:
        return dict(self.group)

    def alertnames(self) -> list[str]:
        return sorted({dict(a).get("alertname", "") for a in (*self.firing, *self.resolved)})

    def signature(self) -> tuple[str, LabelSet, tuple[LabelSet, ...], tuple[LabelSet, ...]]:
        """What a notification says, without when: for comparing two replays or a replay with a live run."""
        return (self.receiver, self.group, self.firing, self.resolved)

    def dump(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "receiver": self.receiver,
            "group": self.group_map,
            "firing": [dict(a) for a in self.firing],
            "resolved": [dict(a) for a in self.resolved],
        }


def notification(ctx: FlushContext, alerts: Sequence[Alert]) -> Notification:
    firing = sorted(a.labels for a in alerts if not a.resolved_at(ctx.now))
    resolved = sorted(a.labels for a in alerts if a.resolved_at(ctx.now))
    return Notification(
        at=ctx.now,
        receiver=ctx.receiver,
        group=labelset(ctx.group_labels),
        firing=tuple(firing),
        resolved=tuple(resolved),
        integration=ctx.integration,
    )


class RecordingIntegration:
    """Stands in for a receiver's integrations: one per receiver, honouring its send_resolved."""

    kind = "generic"

    def __init__(self, sink: list[Notification], *, send_resolved: bool = True, name: str = "record") -> None:
        self.name = name
        self.send_resolved = send_resolved
        self._sink = sink

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        self._sink.append(notification(ctx, alerts))


def label_text(labels: Mapping[str, str] | LabelSet) -> str:
    items = sorted(labels.items()) if isinstance(labels, Mapping) else list(labels)
    name = dict(items).get("alertname", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in items if k != "alertname")
    return f"{name}{{{rest}}}"
