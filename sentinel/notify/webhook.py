"""Alertmanager's webhook: the same JSON document (version "4"), so any tool that reads it reads Sentinel.

Field names, order and time format follow Alertmanager's `notify/webhook` Message and `template.Data`:
times are RFC 3339 in UTC, and a firing alert's `endsAt` is Go's zero time, "0001-01-01T00:00:00Z"
(Alertmanager clears the end of every alert that is not yet resolved when it flushes a group).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from loguru import logger
from pydantic import SecretStr
from yarl import URL

import sentinel
from sentinel.alerting.alert import Alert
from sentinel.alerting.stage import FlushContext
from sentinel.notify import http1
from sentinel.notify.base import DeliveryError
from sentinel.notify.errors import NotifyConfigError
from sentinel.notify.redact import redact_url, scrub, scrubber, url_fragments, url_scheme

VERSION = "4"
ZERO_TIME = "0001-01-01T00:00:00Z"
_RETRYABLE_4XX = frozenset({408, 429})


def rfc3339(dt: datetime | None) -> str:
    """Go's time.Time JSON form in UTC: RFC 3339 with trailing zeros of the fraction dropped."""
    if dt is None:
        return ZERO_TIME
    return _rfc3339(dt)


# A burst of alerts shares its receipt time, and a group repeats its alerts' times at every flush.
@functools.lru_cache(maxsize=4096)
def _rfc3339(dt: datetime) -> str:
    dt = dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


def _kv(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    # Go encodes maps with their keys sorted; so do we, for byte-comparable documents.
    return dict(sorted(pairs))


def _common(sets: list[Sequence[tuple[str, str]]]) -> dict[str, str]:
    if not sets:
        return {}
    # Names are unique within a set, so the pairs every set holds are the names with one value in all.
    return _kv(list(set(sets[0]).intersection(*sets[1:])))


def payload(
    ctx: FlushContext,
    alerts: Sequence[Alert],
    *,
    max_alerts: int = 0,
    external_url: str = "",
) -> dict[str, Any]:
    """The webhook document for one flush; `max_alerts` > 0 keeps the first N and counts the rest."""
    truncated = 0
    if max_alerts > 0 and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        # As Alertmanager does, status and common labels describe only the alerts that are sent.
        alerts = alerts[:max_alerts]
    now = ctx.now
    firing = False
    items = []
    for alert in alerts:
        ends = alert.ends_at
        if ends is not None and ends <= now:
            status, ends_text = "resolved", _rfc3339(ends)
        else:
            status, ends_text, firing = "firing", ZERO_TIME, True
        starts = alert.starts_at
        items.append(
            {
                "status": status,
                # A LabelSet is sorted (fingerprints rely on it too): Go's sorted map keys as they are.
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "startsAt": ZERO_TIME if starts is None else _rfc3339(starts),
                "endsAt": ends_text,
                "generatorURL": alert.generator_url or "",
                "fingerprint": alert.fingerprint,
            }
        )
    return {
        "receiver": ctx.receiver,
        "status": "firing" if firing else "resolved",
        "alerts": items,
        "groupLabels": _kv(list(ctx.group_labels.items())),
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "version": VERSION,
        "groupKey": ctx.group_key,
        "truncatedAlerts": truncated,
    }


class WebhookIntegration:
    """POSTs Alertmanager's webhook JSON; 2xx is success, 5xx/408/429/network errors are worth a retry."""

    kind = "webhook"

    def __init__(
        self,
        url: str | SecretStr,
        *,
        name: str = "webhook[0]",
        send_resolved: bool = True,
        max_alerts: int = 0,
        timeout: timedelta | float = timedelta(seconds=10),
        external_url: str = "",
        where: str = "webhook",
    ) -> None:
        self.name = name
        self.send_resolved = send_resolved
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        raw = self._url.get_secret_value()
        try:
            parsed = URL(raw) if url_scheme(raw) in ("http", "https") else None
        except ValueError:
            parsed = None
        if parsed is None or not parsed.host:
            raise NotifyConfigError(
                f"{where}: url must be an http:// or https:// URL with a host (got {redact_url(raw)})"
            )
        if max_alerts < 0:
            raise NotifyConfigError(f"{where}: max_alerts must be 0 (no limit) or more, got {max_alerts}")
        # Errors of the HTTP client may quote the URL; its path and query may be the secret.
        scrubber().register(url_fragments(raw, public_host=parsed.host))
        self._max_alerts = max_alerts
        self._timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        headers = {"Content-Type": "application/json", "User-Agent": f"Sentinel/{sentinel.__version__}"}
        self._target = http1.Target.of(parsed, headers)
        self._external_url = external_url

    def __repr__(self) -> str:
        return f"WebhookIntegration(name={self.name!r})"

    def payload(self, ctx: FlushContext, alerts: Sequence[Alert]) -> dict[str, Any]:
        return payload(ctx, alerts, max_alerts=self._max_alerts, external_url=self._external_url)

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        body = orjson.dumps(self.payload(ctx, alerts))
        try:
            status, reason = await http1.post(self._target, body, self._timeout)
        except http1.PostTimeout as exc:
            # Once the request left, the receiver may have acted on it (paid channels must know).
            raise DeliveryError(f"{self.name}: {exc}", retryable=True, maybe_delivered=exc.connected) from None
        except http1.PostError as exc:
            raise DeliveryError(f"{self.name}: {scrub(str(exc))}", retryable=True) from None
        if 200 <= status < 300:
            logger.debug("{}: delivered {} alert(s) for group {}", self.name, len(alerts), ctx.group_key)
            return
        retryable = status >= 500 or status in _RETRYABLE_4XX
        error = DeliveryError(f"{self.name}: HTTP {status} {reason or 'error'}", retryable=retryable)
        logger.debug("{} (retryable: {})", error, retryable)
        raise error
