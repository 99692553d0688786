"""From `sentinel.yaml` to the delivery features' settings: receivers' options and the correlation rule."""

from __future__ import annotations

from sentinel.alerting.correlation import CorrelationRule, Correlator
from sentinel.alerting.pipeline import DeliveryOptions
from sentinel.config import Config


def delivery_options(config: Config) -> dict[str, DeliveryOptions]:
    return {
        r.name: DeliveryOptions(
            paid=r.paid, max_per_minute=r.max_notifications_per_minute, fallback=bool(r.fallback), tiers=r.tiers
        )
        for r in config.receivers
    }


def correlator_for(config: Config, previous: Correlator | None = None) -> Correlator | None:
    """A correlator for the configured rule; a reload with the same rule keeps the open incidents."""
    c = config.correlation
    if c is None:
        return None
    rule = CorrelationRule(
        threshold=c.threshold,
        window=c.window,
        by=c.by if isinstance(c.by, str) else tuple(c.by),
        matchers=c.matchers,
    )
    if previous is not None and previous.rule == rule:
        return previous
    return Correlator(rule)
