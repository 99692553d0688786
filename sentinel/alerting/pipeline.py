"""Builds the notification pipeline per receiver, Alertmanager-style: one branch per integration."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sentinel.alerting.ack import AckBook, AckStage
from sentinel.alerting.intents import EndIntentStage, IntentLog, IntentStage
from sentinel.alerting.muter import MuteStage, Muting
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.notify_stages import (
    AnyDeliversStage,
    DedupStage,
    FirstSuccessStage,
    Outcome,
    RateLimiter,
    RateLimitStage,
    RetryStage,
    SetNotifiesStage,
)
from sentinel.alerting.stage import FanOut, Stage
from sentinel.alerting.stage import Sequence as Seq
from sentinel.notify.base import Integration


@dataclass(frozen=True)
class DeliveryOptions:
    """A receiver's delivery options (config: `paid`, `max_notifications_per_minute`, `fallback`)."""

    paid: bool | None = None  # None: automatic, paid for SMS-type integrations
    max_per_minute: int | None = None
    fallback: bool = False
    tiers: tuple[tuple[int, ...], ...] = ()  # fallback by tag: integration indices per tier, first tier first

    def is_paid(self, integration: Integration) -> bool:
        return self.paid if self.paid is not None else integration.kind == "sms"


def build_pipelines(
    receivers: Mapping[str, Sequence[Integration]],
    nflog: NotificationLog,
    on_outcome: Outcome | None = None,
    before: Callable[[str], Sequence[Stage]] | None = None,
    *,
    acks: AckBook | None = None,
    intents: IntentLog | None = None,
    options: Mapping[str, DeliveryOptions] | None = None,
    muting: Muting | None = None,
) -> dict[str, Stage]:
    """receiver name -> Sequence(muting stages…, ack, FanOut(integration -> dedup ▶ [rate] ▶ [intent] retry ▶ log)).

    A `fallback` receiver has one branch whose delivery tries its integrations in order, or its tiers of
    integrations (`fallback: [tags…]`) in order, each tier sent to all of its integrations at once.
    """
    out: dict[str, Stage] = {}
    for name, integrations in receivers.items():
        opt = (options or {}).get(name, DeliveryOptions())
        limiter = RateLimiter(opt.max_per_minute) if opt.max_per_minute else None

        def branch(deliver: Stage, paid: bool, limiter: RateLimiter | None = limiter) -> Stage:
            stages: list[Stage] = [DedupStage(nflog)]
            if limiter is not None:
                stages.append(RateLimitStage(limiter))
            if paid and intents is not None:
                unsure = (lambda r: on_outcome(r, "possibly_delivered", 0.0)) if on_outcome is not None else None
                stages += [IntentStage(intents, deliver, unsure), SetNotifiesStage(nflog), EndIntentStage(intents)]
            else:
                stages += [deliver, SetNotifiesStage(nflog)]
            return Seq(*stages)

        def retry(i: Integration, opt: DeliveryOptions = opt) -> RetryStage:
            return RetryStage(i, on_outcome=on_outcome, paid=opt.is_paid(i))

        if opt.tiers:
            chain: Stage = FirstSuccessStage([AnyDeliversStage([retry(integrations[i]) for i in t]) for t in opt.tiers])
            paid = any(opt.is_paid(i) for i in integrations)
            branches = {"fallback": (branch(chain, paid), any(i.send_resolved for i in integrations))}
        elif opt.fallback and len(integrations) > 1:
            chain = FirstSuccessStage([retry(i) for i in integrations])
            paid = any(opt.is_paid(i) for i in integrations)
            branches = {"fallback": (branch(chain, paid), any(i.send_resolved for i in integrations))}
        else:
            branches = {
                i.name: (
                    branch(retry(i), opt.is_paid(i)),
                    i.send_resolved,
                )
                for i in integrations
            }
        head: list[Stage] = [MuteStage(muting, nflog)] if muting is not None else []  # inhibit ▶ time ▶ silence
        head += list(before(name)) if before else []
        if acks is not None:
            head.append(AckStage(acks))
        out[name] = Seq(*head, FanOut(branches))
    return out
