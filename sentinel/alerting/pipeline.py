"""Builds the notification pipeline per receiver, Alertmanager-style: one branch per integration."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.notify_stages import DedupStage, Outcome, RetryStage, SetNotifiesStage
from sentinel.alerting.stage import FanOut, Stage
from sentinel.alerting.stage import Sequence as Seq
from sentinel.notify.base import Integration


def build_pipelines(
    receivers: Mapping[str, Sequence[Integration]],
    nflog: NotificationLog,
    on_outcome: Outcome | None = None,
    before: Callable[[str], Sequence[Stage]] | None = None,
) -> dict[str, Stage]:
    """receiver name -> Sequence(muting stages…, FanOut(integration -> dedup ▶ retry ▶ log))."""
    out: dict[str, Stage] = {}
    for name, integrations in receivers.items():
        branches = {
            i.name: (
                Seq(DedupStage(nflog), RetryStage(i, on_outcome=on_outcome), SetNotifiesStage(nflog)),
                i.send_resolved,
            )
            for i in integrations
        }
        out[name] = Seq(*(before(name) if before else ()), FanOut(branches))
    return out
