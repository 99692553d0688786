"""Delivery through apprise: one integration per URL, so each has its own retry and notification log.

Apprise answers a send with success or failure only. Whether a retry can help depends on the HTTP status
the service answered, and apprise's log lines do not reliably carry it (Twilio's says "error=20003", the
provider's code, for an HTTP 401). So the statuses are recorded where apprise's plugins make their calls,
requests' `Session.send`, into a list held by a context variable: apprise copies the caller's context into
its worker threads, so each delivery sees only its own responses, however many run at once. Apprise's
per-call log lines (apprise 2.x keeps them on the result) explain the failure in the error message.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apprise
import requests
from loguru import logger
from pydantic import SecretStr

from sentinel.alerting.alert import Alert
from sentinel.alerting.stage import FlushContext
from sentinel.notify.base import DeliveryError
from sentinel.notify.errors import NotifyConfigError
from sentinel.notify.message import SMS_LIMIT, Message, render
from sentinel.notify.redact import redact_url, scrub, scrubber, url_fragments, url_scheme

# Which channel a plugin speaks decides how the message is rendered. Unknown schemes are "generic": text.
_KIND_BY_SCHEME: dict[str, str] = {
    "slack": "slack",
    **dict.fromkeys(("mailto", "mailtos"), "email"),
    **dict.fromkeys(("json", "jsons", "form", "forms", "xml", "xmls"), "webhook"),
    **dict.fromkeys(
        (
            "twilio", "sns", "msg91", "clicksend", "vonage", "nexmo", "plivo", "sinch", "bulksms", "bulkvs",
            "burstsms", "kudosity", "d7sms", "46elks", "elks", "atalk", "clickatell", "freemobile", "httpsms",
            "infobip", "kavenegar", "msgbird", "ringc", "sfr", "smsc", "smseagle", "smseagles", "smsmanager",
            "smsmgr", "serwersms", "seven", "telnyx", "voipms", "smstunnel",
        ),
        "sms",
    ),
}  # fmt: skip

# Statuses that say "not now" rather than "never": a timeout and rate limiting.
_RETRYABLE_4XX = frozenset({408, 429})

# Apprise plugins word a failure "..., error=<code>."; a fallback when no HTTP status was recorded.
_LOGGED_STATUS = re.compile(r"\berror=([1-5]\d\d)\b")

_http_statuses: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "sentinel_apprise_http_statuses", default=None
)
_recorder_lock = threading.Lock()


def _record_http_statuses() -> None:
    """Wrap requests' Session.send once, to note each response's status for the delivery that made it.

    Outside a delivery (no list in the context) the wrapper only passes the call through.
    """
    with _recorder_lock:
        original = requests.Session.send
        if getattr(original, "_sentinel_records_status", False):
            return

        @functools.wraps(original)
        def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            response = original(self, request, **kwargs)
            statuses = _http_statuses.get()
            if statuses is not None:
                statuses.append(response.status_code)
            return response

        send._sentinel_records_status = True  # type: ignore[attr-defined]
        requests.Session.send = send  # type: ignore[method-assign]


_BODY_FORMAT: dict[str, apprise.NotifyFormat] = {
    "markdown": apprise.NotifyFormat.MARKDOWN,
    "text": apprise.NotifyFormat.TEXT,
    "html": apprise.NotifyFormat.HTML,
}


class _ThreadWarnings(logging.Handler):
    """Apprise's warnings raised by this thread while the block runs.

    Not apprise.LogCapture: that one listens to every thread and lowers the shared logger's level while it
    is open, so a delivery running on apprise's workers at the same time would land in our message.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.messages.append(record.getMessage())

    def __enter__(self) -> _ThreadWarnings:
        logging.getLogger(apprise.LOGGER_NAME).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(apprise.LOGGER_NAME).removeHandler(self)


@dataclass(frozen=True, slots=True)
class AppriseTarget:
    """One apprise URL, loaded and classified; holds the plugin, never prints the URL."""

    plugin: Any  # apprise's NotifyBase subclass instance
    scheme: str  # the plugin's own scheme (slack for an https://hooks.slack.com URL)
    kind: str
    sms_limit: int

    def __repr__(self) -> str:
        return f"AppriseTarget(scheme={self.scheme!r}, kind={self.kind!r})"


def load_apprise_url(url: str | SecretStr, *, where: str = "url") -> AppriseTarget:
    """Parse one apprise URL; raise NotifyConfigError naming `where` and the scheme, never the secret."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    scheme = url_scheme(raw)
    shown = redact_url(raw)
    # Registered before apprise sees the URL (apprise logs a URL it cannot load verbatim, at ERROR), with
    # the host taken for a token until the plugin says otherwise.
    provisional = url_fragments(raw)
    scrubber().register(provisional)
    if not scheme:
        raise NotifyConfigError(f"{where}: not an apprise URL ({shown}); expected scheme://…, e.g. slack://…")
    with _ThreadWarnings() as captured:
        plugin: Any = apprise.Apprise.instantiate(raw)
    reasons = "; ".join(dict.fromkeys(scrub(m) for m in captured.messages))
    if plugin is None:
        hint = f": {reasons}" if reasons else ""
        raise NotifyConfigError(
            f"{where}: apprise cannot load this {scheme}:// URL ({shown}){hint}. "
            "Check the URL against apprise's documentation for this service."
        )
    public_host = _privacy_host(plugin)
    # Apprise's own spelling of the URL may encode a secret differently; what it prints in clear itself
    # (method=POST, overflow=upstream) is not one, unless the user wrote it.
    normalised = url_fragments(str(plugin.url(privacy=False)), public_host=public_host)
    printed = url_fragments(str(plugin.url(privacy=True)), public_host=public_host)
    final = url_fragments(raw, public_host=public_host) | (normalised - printed)
    scrubber().register(final)
    scrubber().forget(provisional - final)
    if reasons:
        logger.warning("{}: apprise accepted the {}:// URL with warnings: {}", where, scheme, reasons)
    canonical = _canonical_scheme(plugin, scheme)
    kind = _KIND_BY_SCHEME.get(canonical, "generic")
    body_max = _int_attr(plugin, "body_maxlen", SMS_LIMIT * 1000)
    if kind == "generic" and body_max <= SMS_LIMIT:
        # A short-message service apprise knows but this table does not (pager, radio, SMS gateway).
        kind = "sms"
    return AppriseTarget(plugin=plugin, scheme=canonical, kind=kind, sms_limit=min(SMS_LIMIT, body_max))


def _canonical_scheme(plugin: Any, written: str) -> str:
    protocols: list[str] = []
    for attr in ("secure_protocol", "protocol"):
        value = getattr(plugin, attr, None)
        if isinstance(value, str):
            protocols.append(value)
        elif isinstance(value, (tuple, list)):
            protocols.extend(v for v in value if isinstance(v, str))
    if written in protocols or not protocols:
        return written
    known = [p for p in protocols if p in _KIND_BY_SCHEME]
    return (known or protocols)[0]


def _int_attr(obj: Any, name: str, default: int) -> int:
    value = getattr(obj, name, default)
    return value if isinstance(value, int) and value > 0 else default


class AppriseIntegration:
    """Sends one group's notification to one apprise URL."""

    def __init__(
        self,
        target: AppriseTarget,
        *,
        name: str,
        send_resolved: bool = True,
        timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.kind = target.kind
        self.send_resolved = send_resolved
        self._target = target
        self._timeout = timeout
        self._apprise = apprise.Apprise()
        self._apprise.add(target.plugin)
        _record_http_statuses()

    @classmethod
    def from_url(
        cls, url: str | SecretStr, *, index: int = 0, send_resolved: bool = True, where: str = "url"
    ) -> AppriseIntegration:
        target = load_apprise_url(url, where=where)
        return cls(target, name=f"{target.scheme}[{index}]", send_resolved=send_resolved)

    def __repr__(self) -> str:
        return f"AppriseIntegration(name={self.name!r}, kind={self.kind!r})"

    def render(self, ctx: FlushContext, alerts: Sequence[Alert]) -> Message:
        return render(ctx, alerts, self.kind, sms_limit=self._target.sms_limit)

    async def notify(self, ctx: FlushContext, alerts: Sequence[Alert]) -> None:
        message = self.render(ctx, alerts)
        firing = any(not a.resolved_at(ctx.now) for a in alerts)
        # Slack gets its own mrkdwn untouched: declared as markdown, apprise would re-read it as
        # CommonMark (turning *bold* into _italic_ and mangling <url|label> links).
        body_format = None if self.kind == "slack" else _BODY_FORMAT[message.format]
        # async_notify runs each plugin's blocking send() on apprise's own worker threads, so the event
        # loop is not blocked (checked for json:// with a slow server: loop lag stays in milliseconds).
        statuses: list[int] = []
        token = _http_statuses.set(statuses)
        try:
            result = await self._apprise.async_notify(
                body=message.body,
                title=message.title,
                notify_type=apprise.NotifyType.FAILURE if firing else apprise.NotifyType.SUCCESS,
                body_format=body_format,
                timeout=self._timeout,
            )
        finally:
            _http_statuses.reset(token)
        if result:
            logger.debug("{}: delivered {} alert(s) for group {}", self.name, len(alerts), ctx.group_key)
            return
        error = _failure(self.name, result, statuses, self._timeout)
        logger.debug("{} (retryable: {})", error, error.retryable)
        raise error


def _privacy_host(plugin: Any) -> str | None:
    """The plugin's host when apprise itself prints it in clear: an address (127.0.0.1), not a token."""
    try:
        return getattr(plugin, "host", None) if plugin.host and plugin.host in plugin.url(privacy=True) else None
    except Exception:  # a plugin that cannot print itself just keeps its host masked
        return None


def _failure(name: str, result: Any, statuses: list[int], timeout: float) -> DeliveryError:
    """A failed delivery is permanent when every failing HTTP answer was a 4xx other than 408/429."""
    if isinstance(result, bool):  # apprise 1.x answers with a bare bool and no detail
        return DeliveryError(f"{name}: delivery failed (apprise gave no reason)", retryable=True)
    if getattr(result, "status", None) == apprise.AppriseResultStatus.TIMEOUT:
        return DeliveryError(f"{name}: no answer within {timeout:g}s", retryable=True)
    lines = [scrub(entry.message) for entry in result.logs() if entry.level in ("WARNING", "ERROR", "CRITICAL")]
    failing = [c for c in statuses if not 200 <= c < 300]
    if not failing:
        # No HTTP answer recorded (a plugin not built on requests, or no answer at all): take the log's word.
        failing = [int(c) for line in lines for c in _LOGGED_STATUS.findall(line)]
    permanent = bool(failing) and all(400 <= c < 500 and c not in _RETRYABLE_4XX for c in failing)
    detail = "; ".join(dict.fromkeys(lines)) or "apprise reported a failure without a reason"
    prefix = f"HTTP {failing[-1]}: " if failing else ""
    return DeliveryError(f"{name}: {prefix}{detail}", retryable=not permanent)


__all__ = [
    "AppriseIntegration",
    "AppriseTarget",
    "NotifyConfigError",
    "load_apprise_url",
]
