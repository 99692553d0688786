"""What a notification says: one group's alerts rendered for a kind of channel.

The title reads like Alertmanager's default subject — `[FIRING:2] PipelineFailed market_data_ingest
(airflow-prod)` — built from the labels the whole group shares. The body lists each alert's summary, the
labels that tell the alerts apart (the shared ones once, at the end), the runbook link and when it started.
SMS gets one line that never exceeds 160 as a gateway counts (GSM-7 septets, or UTF-16 units once any
character is outside GSM-7): one SMS for plain text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sentinel.alerting.alert import Alert
from sentinel.alerting.stage import FlushContext

MessageFormat = Literal["markdown", "text", "html"]

MAX_LISTED = 10
SMS_LIMIT = 160
ELLIPSIS = "..."  # not "…": one non-GSM character would switch a whole SMS to UCS-2 (70 per segment)

# The GSM 03.38 extension table: each of these costs two septets in a GSM-7 SMS.
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

# A summary cut shorter than this says nothing; drop it rather than keep a stub. Below the larger budget
# the source label gives way first.
_MIN_DETAIL = 12
_DETAIL_WITH_SOURCE = 40


@dataclass(frozen=True, slots=True)
class Message:
    """Title (the email subject, Slack's attachment title; empty for SMS, whose body is the one line),
    body, and the body's format ("markdown" is Slack's mrkdwn for kind slack)."""

    title: str
    body: str
    format: MessageFormat = "text"


def render(
    ctx: FlushContext,
    alerts: Sequence[Alert],
    kind: str,
    *,
    max_alerts: int = MAX_LISTED,
    sms_limit: int = SMS_LIMIT,
) -> Message:
    """Render one group flush for a channel kind: slack | sms | email | webhook | console | generic.

    `sms_limit` lowers the SMS budget for gateways with a shorter cap (Plivo: 140); it never raises it
    above 160.
    """
    group = _Group.of(alerts, ctx.now, ctx.group_labels)
    if kind == "sms":
        return Message(title="", body=_sms_line(group, min(sms_limit, SMS_LIMIT)), format="text")
    if kind == "slack":
        return Message(title=group.title, body=_slack_body(group, max_alerts), format="markdown")
    return Message(title=group.title, body=_text_body(group, max_alerts), format="text")


# --- the group ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Group:
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    common_labels: dict[str, str]
    common_annotations: dict[str, str]
    names: tuple[str, ...]  # alertname and pipeline when shared, else the group labels' values
    source: str

    @classmethod
    def of(cls, alerts: Sequence[Alert], now: datetime, group_labels: Mapping[str, str]) -> _Group:
        firing = tuple(sorted((a for a in alerts if not a.resolved_at(now)), key=_order))
        resolved = tuple(sorted((a for a in alerts if a.resolved_at(now)), key=_order))
        common_labels = _common([a.labels for a in alerts])
        common_annotations = _common([a.annotations for a in alerts])
        names = tuple(common_labels[k] for k in ("alertname", "pipeline") if common_labels.get(k))
        if not names:
            names = tuple(v for k, v in _sorted_pairs(group_labels.items()) if v and k != "source")
        source = common_labels.get("source", "")
        return cls(firing, resolved, common_labels, common_annotations, names or ("alerts",), source)

    @property
    def state(self) -> str:
        return f"FIRING:{len(self.firing)}" if self.firing else "RESOLVED"

    @property
    def title(self) -> str:
        source = f" ({_one_line(self.source)})" if self.source else ""
        return _one_line(f"[{self.state}] {' '.join(self.names)}") + source

    def listed(self, limit: int) -> tuple[tuple[Alert, ...], tuple[Alert, ...], int]:
        """Firing alerts first, then resolved, at most `limit` in all; and how many were left out."""
        limit = max(limit, 1)
        firing = self.firing[:limit]
        resolved = self.resolved[: limit - len(firing)]
        hidden = len(self.firing) + len(self.resolved) - len(firing) - len(resolved)
        return firing, resolved, hidden

    def own_labels(self, alert: Alert) -> list[tuple[str, str]]:
        return [(k, v) for k, v in _sorted_pairs(alert.labels) if self.common_labels.get(k) != v]

    def own_runbook(self, alert: Alert) -> str:
        runbook = alert.annotation("runbook_url")
        return "" if runbook and self.common_annotations.get("runbook_url") == runbook else runbook


def _order(alert: Alert) -> tuple[datetime, tuple[tuple[str, str], ...]]:
    return (alert.starts_at or datetime.min.replace(tzinfo=UTC), alert.labels)


def _common(sets: list[tuple[tuple[str, str], ...]]) -> dict[str, str]:
    if not sets:
        return {}
    common = dict(sets[0])
    for pairs in sets[1:]:
        other = dict(pairs)
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return common


def _sorted_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Alertmanager's SortedPairs: alertname first, the rest by name."""
    return sorted(pairs, key=lambda kv: (kv[0] != "alertname", kv[0]))


def _summary(alert: Alert) -> str:
    text = alert.annotation("summary") or alert.annotation("description") or alert.name or "alert"
    return _one_line(text)


def _when(alert: Alert, resolved: bool) -> str:
    parts = []
    if alert.starts_at is not None:
        parts.append(f"started {_time(alert.starts_at)}")
    if resolved and alert.ends_at is not None:
        parts.append(f"resolved {_time(alert.ends_at)}")
    return ", ".join(parts)


def _time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_SPACES = re.compile(r"\s+")


def _one_line(text: str) -> str:
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return _SPACES.sub(" ", printable).strip()


def _is_link(url: str) -> bool:
    return url.startswith(("https://", "http://"))


# --- plain text (email, console, generic) -------------------------------------------------------------


def _text_body(group: _Group, max_alerts: int) -> str:
    firing, resolved, hidden = group.listed(max_alerts)
    mixed = bool(group.firing and group.resolved)
    lines: list[str] = []
    for heading, listed, is_resolved in (("Firing", firing, False), ("Resolved", resolved, True)):
        if not listed:
            continue
        if mixed:
            lines.append(f"{heading}:")
        for alert in listed:
            lines.append(f"- {_summary(alert)}")
            own = group.own_labels(alert)
            if own:
                lines.append("  " + ", ".join(f"{k}={_one_line(v)}" for k, v in own))
            when = _when(alert, is_resolved)
            if when:
                lines.append(f"  {when}")
            runbook = group.own_runbook(alert)
            if runbook:
                lines.append(f"  runbook: {runbook}")
            if alert.generator_url:
                lines.append(f"  link: {alert.generator_url}")
    if hidden:
        lines.append(f"... and {hidden} more")
    footer = []
    if group.common_labels:
        pairs = _sorted_pairs(group.common_labels.items())
        footer.append("Labels: " + ", ".join(f"{k}={_one_line(v)}" for k, v in pairs))
    if group.common_annotations.get("runbook_url"):
        footer.append(f"Runbook: {group.common_annotations['runbook_url']}")
    if footer:
        lines.append("")
        lines.extend(footer)
    return "\n".join(lines)


# --- Slack mrkdwn -------------------------------------------------------------------------------------
# The text is sent as is: `&`, `<` and `>` in it are escaped by the transport (apprise's Slack plugin
# escapes them and keeps `<url|label>` links), so only link and emphasis syntax is produced here.


def _slack_code(text: str) -> str:
    # A backtick inside a code span would end it early; Slack has no escape for it.
    return "`" + _one_line(text).replace("`", "'") + "`"


def _slack_link(url: str, label: str) -> str:
    return f"<{url}|{label}>" if _is_link(url) else _slack_code(url)


def _slack_body(group: _Group, max_alerts: int) -> str:
    firing, resolved, hidden = group.listed(max_alerts)
    mixed = bool(group.firing and group.resolved)
    lines: list[str] = []
    for heading, listed, is_resolved in (("Firing", firing, False), ("Resolved", resolved, True)):
        if not listed:
            continue
        if mixed:
            lines.append(f"*{heading}*")
        for alert in listed:
            lines.append(f"• *{_summary(alert)}*")
            own = group.own_labels(alert)
            if own:
                lines.append("    " + " ".join(_slack_code(f"{k}={v}") for k, v in own))
            details = []
            when = _when(alert, is_resolved)
            if when:
                details.append(when)
            runbook = group.own_runbook(alert)
            if runbook:
                details.append(_slack_link(runbook, "Runbook"))
            if alert.generator_url:
                details.append(_slack_link(alert.generator_url, "Open run"))
            if details:
                lines.append("    " + " · ".join(details))
    if hidden:
        lines.append(f"_... and {hidden} more_")
    footer = []
    if group.common_labels:
        pairs = _sorted_pairs(group.common_labels.items())
        footer.append("*Labels:* " + " ".join(_slack_code(f"{k}={v}") for k, v in pairs))
    runbook = group.common_annotations.get("runbook_url", "")
    if runbook:
        footer.append("*Runbook:* " + (f"<{runbook}>" if _is_link(runbook) else _slack_code(runbook)))
    if footer:
        lines.append("")
        lines.extend(footer)
    return "\n".join(lines)


# --- SMS ----------------------------------------------------------------------------------------------


def _char_cost(ch: str) -> int:
    # Two for GSM extension characters (escape + char) and for characters outside the BMP (a UTF-16
    # surrogate pair): the larger of the two encodings' costs, so the bound holds whichever one is used.
    return 2 if ch in _GSM_EXTENSION or ord(ch) > 0xFFFF else 1


def sms_cost(text: str) -> int:
    """Length as an SMS gateway counts it, never less: GSM-7 septets or UTF-16 code units, the larger."""
    return sum(_char_cost(ch) for ch in text)


def _clip(text: str, budget: int) -> str:
    """Shorten `text` to `budget`, at a word boundary when one is near, marking the cut."""
    if sms_cost(text) <= budget:
        return text
    if budget <= len(ELLIPSIS):
        return _take(text, budget)
    head = _take(text, budget - len(ELLIPSIS))
    space = head.rfind(" ")
    if space >= max(1, int(len(head) * 0.6)):
        head = head[:space]
    return head.rstrip(" ,;:-(") + ELLIPSIS


def _take(text: str, budget: int) -> str:
    used = 0
    for i, ch in enumerate(text):
        used += _char_cost(ch)
        if used > budget:
            return text[:i]
    return text


def _sms_line(group: _Group, limit: int) -> str:
    """One line, within `limit`: state and names first, then source, the first summary, how many more."""
    state = f"[{group.state}]"
    names = [_one_line(n) for n in group.names]
    source = f" ({_one_line(group.source)})" if group.source else ""
    total = len(group.firing) + len(group.resolved)
    first = (group.firing or group.resolved or (None,))[0]
    detail = _summary(first) if first is not None else ""
    more = f" (+{total - 1} more)" if total > 1 else ""
    head = " ".join([state, *names])

    # The source is worth keeping only while the summary still says something; then it goes first.
    for src, least in ((source, _DETAIL_WITH_SOURCE), ("", _MIN_DETAIL)):
        prefix = f"{head}{src}: "
        room = limit - sms_cost(prefix) - sms_cost(more)
        if detail and room >= min(least, sms_cost(detail)):
            return prefix + _clip(detail, room) + more
    if sms_cost(head + more) <= limit:
        return head + more

    # Long alert or pipeline names: share what is left between them, the shorter keeping all it needs.
    room = limit - sms_cost(state) - sms_cost(more) - len(names)
    shares: dict[int, int] = {}
    for position, i in enumerate(sorted(range(len(names)), key=lambda i: sms_cost(names[i]))):
        share = max(room, 0) // (len(names) - position)
        shares[i] = min(sms_cost(names[i]), share)
        room -= shares[i]
    clipped = [_clip(name, shares[i]) for i, name in enumerate(names)]
    return _clip(" ".join([state, *(c for c in clipped if c)]) + more, limit)
