"""From a receiver's configuration to its integrations: one per apprise URL, the webhook, the console."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from pydantic import SecretStr

from sentinel.notify.apprise_integration import AppriseIntegration, load_apprise_url
from sentinel.notify.base import Integration
from sentinel.notify.console import ConsoleIntegration
from sentinel.notify.errors import NotifyConfigError
from sentinel.notify.webhook import WebhookIntegration


class WebhookSettings(Protocol):
    """The fields of `sentinel.config.WebhookConfig` this module reads."""

    @property
    def url(self) -> SecretStr | str: ...
    @property
    def send_resolved(self) -> bool: ...
    @property
    def max_alerts(self) -> int: ...
    @property
    def timeout(self) -> timedelta: ...


class ReceiverSettings(Protocol):
    """The fields of `sentinel.config.ReceiverConfig` this module reads."""

    @property
    def name(self) -> str: ...
    @property
    def apprise_urls(self) -> Sequence[SecretStr | str]: ...
    @property
    def webhook(self) -> WebhookSettings | None: ...
    @property
    def send_resolved(self) -> bool: ...
    @property
    def console(self) -> bool: ...


def build_integrations(receiver: ReceiverSettings, *, external_url: str = "") -> list[Integration]:
    """Every integration of one receiver, named `<scheme>[i]` (i counts per scheme, as Alertmanager's
    `slack[0]`, `slack[1]`); raises NotifyConfigError listing every unusable URL, none of them in clear.

    `external_url` is where Sentinel is reachable, sent as the webhook's `externalURL`.
    """
    integrations: list[Integration] = []
    problems: list[str] = []
    per_scheme: Counter[str] = Counter()
    for i, url in enumerate(receiver.apprise_urls):
        where = f"receiver {receiver.name!r} urls[{i}]"
        try:
            target = load_apprise_url(url, where=where)
        except NotifyConfigError as exc:
            problems.append(str(exc))
            continue
        name = f"{target.scheme}[{per_scheme[target.scheme]}]"
        per_scheme[target.scheme] += 1
        integrations.append(AppriseIntegration(target, name=name, send_resolved=receiver.send_resolved))
    if receiver.webhook is not None:
        hook = receiver.webhook
        try:
            integrations.append(
                WebhookIntegration(
                    hook.url,
                    name="webhook[0]",
                    send_resolved=hook.send_resolved,
                    max_alerts=hook.max_alerts,
                    timeout=hook.timeout,
                    external_url=external_url,
                    where=f"receiver {receiver.name!r} webhook",
                )
            )
        except NotifyConfigError as exc:
            problems.append(str(exc))
    if receiver.console:
        integrations.append(ConsoleIntegration(name="console[0]", send_resolved=receiver.send_resolved))
    if problems:
        raise NotifyConfigError("\n".join(problems))
    return integrations
