"""Alertmanager label matchers: `name="value"`, `!=`, `=~`, `!~`; regexes are fully anchored.

The one matcher implementation, used by routes, inhibitions, silences and the API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

_LABEL = r"[A-Za-z_][A-Za-z0-9_]*"
_MATCHER = re.compile(
    rf"""^\s*(?P<name>{_LABEL})\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^,"]*?)\s*$""", re.S
)


class MatchType(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True)
class Matcher:
    name: str
    op: MatchType
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name: str, op: MatchType | str, value: str) -> Matcher:
        op = MatchType(op)
        regex = None
        if op in (MatchType.REGEX, MatchType.NOT_REGEX):
            try:
                regex = re.compile(f"^(?:{value})$", re.S)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r} in matcher: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")  # a missing label matches the empty string, as in Alertmanager
        match self.op:
            case MatchType.EQUAL:
                return v == self.value
            case MatchType.NOT_EQUAL:
                return v != self.value
            case MatchType.REGEX:
                assert self._regex is not None
                return self._regex.match(v) is not None
            case MatchType.NOT_REGEX:
                assert self._regex is not None
                return self._regex.match(v) is None

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op.value}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    m = _MATCHER.match(text)
    if not m:
        raise ValueError(f'invalid matcher {text!r}: expected name="value", name!="value", name=~"re" or name!~"re"')
    value = m.group("value")
    if value.startswith('"'):
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return Matcher.make(m.group("name"), m.group("op"), value)


def parse_matchers(items: Iterable[str] | str) -> tuple[Matcher, ...]:
    """Each item may itself be a `{a="b", c=~"d"}` list, as amtool and Alertmanager accept."""
    if isinstance(items, str):
        items = [items]
    out: list[Matcher] = []
    for item in items:
        body = item.strip()
        if body.startswith("{") and body.endswith("}"):
            body = body[1:-1]
        for part in _split_top_level(body):
            if part.strip():
                out.append(parse_matcher(part))
    return tuple(out)


def _split_top_level(text: str) -> list[str]:
    parts, buf, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            buf.append(ch)
        elif ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
