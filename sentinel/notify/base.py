"""The edge of the pipeline: an integration sends one group's alerts and reports retryable or not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sentinel.alerting.alert import Alert
from sentinel.alerting.stage import FlushContext


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        # The request left and no answer came back (a read timeout): the message may have arrived. A paid
        # channel (SMS) is then not retried: a second SMS is worse than a possibly missing one.
        self.maybe_delivered = maybe_delivered


class Integration(Protocol):
    name: str  # unique within its receiver, e.g. "slack[0]"; label-safe, never contains a secret
    kind: str  # bounded: slack | sms | email | webhook | console | generic
    send_resolved: bool

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        """Deliver; raise DeliveryError on failure."""
        ...
