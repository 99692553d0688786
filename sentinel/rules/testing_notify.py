"""`sentinel test`'s notification expectations: which receivers get which groups, and when.

The routing side comes from the test file: `config:` names a sentinel.yaml whose route, receivers,
inhibit_rules and time_intervals are used (secrets are irrelevant here, so an unset `${VAR}` expands to a
placeholder), or the file writes `route:` / `receivers:` itself. The notifications themselves come from
`sentinel.replay`: the daemon's dispatcher and stages on the test's frozen clock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sentinel.config import InhibitRuleConfig, NamedTimeIntervalConfig, ReceiverConfig, RouteConfig, load_config
from sentinel.replay.record import Notification, label_text
from sentinel.rules.testing_format import ExpectedNotification, NotificationsSpec, RuleTestFile
from sentinel.yamlfile import ConfigError, Document, Problem


@dataclass(frozen=True)
class Routing:
    route: RouteConfig
    receivers: list[ReceiverConfig]
    inhibit_rules: list[InhibitRuleConfig] = field(default_factory=list)
    time_intervals: list[NamedTimeIntervalConfig] = field(default_factory=list)


class _Placeholders(dict[str, str]):
    """Environment for expanding a sentinel.yaml in a test: real values where set, a placeholder otherwise."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, f"unset-{key}")


def routing(spec: RuleTestFile, doc: Document, path: Path) -> Routing | None:
    """The routing the file's notification expectations are checked against; ConfigError if unusable."""
    wants = [i for i, t in enumerate(spec.tests) if t.notifications is not None]
    if spec.config is not None:
        if spec.route is not None or spec.receivers:
            raise ConfigError([doc.problem(("config",), "config: give either config or route/receivers, not both")])
        target = path.parent / spec.config
        try:
            cfg = load_config(target, environ=_Placeholders()).config
        except ConfigError as exc:
            head = doc.problem(("config",), f"config: {spec.config} has problems:")
            raise ConfigError([head, *exc.problems]) from None
        except OSError as exc:
            raise ConfigError([doc.problem(("config",), f"config: cannot read {spec.config}: {exc}")]) from None
        return Routing(cfg.route, list(cfg.receivers), list(cfg.inhibit_rules), list(cfg.time_intervals))
    if spec.route is None:
        if wants:
            at = ("tests", wants[0], "notifications")
            msg = "notifications: expected notifications need `config: sentinel.yaml` or `route:` and `receivers:`"
            raise ConfigError([doc.problem(at, f"tests[{wants[0]}].{msg}")])
        return None
    problems = _route_problems(spec, doc)
    if problems:
        raise ConfigError(problems)
    return Routing(spec.route, list(spec.receivers), list(spec.inhibit_rules), list(spec.time_intervals))


def _route_problems(spec: RuleTestFile, doc: Document) -> list[Problem]:
    assert spec.route is not None
    problems: list[Problem] = []
    if spec.route.receiver is None:
        problems.append(doc.problem(("route",), "route: the root route needs a receiver"))
    known = {r.name for r in spec.receivers}

    def walk(route: RouteConfig, at: tuple[str | int, ...]) -> None:
        if route.receiver is not None and route.receiver not in known:
            where = ".".join(str(x) if isinstance(x, str) else f"[{x}]" for x in at).replace(".[", "[")
            problems.append(
                doc.problem((*at, "receiver"), f"{where}.receiver: {route.receiver!r} is not under receivers")
            )
        for i, child in enumerate(route.routes):
            walk(child, (*at, "routes", i))

    walk(spec.route, ("route",))
    return problems


# -- comparing -------------------------------------------------------------------------------------
def _alerts_match(wanted: Sequence[Mapping[str, str]], got: Sequence[Mapping[str, str]]) -> bool:
    """Same number of alerts, and each expected label subset found on a different one of them."""
    if len(wanted) != len(got):
        return False
    free = list(got)
    for w in sorted(wanted, key=len, reverse=True):
        hit = next((g for g in free if all(g.get(k) == v for k, v in w.items())), None)
        if hit is None:
            return False
        free.remove(hit)
    return True


def matches(exp: ExpectedNotification, at: datetime, n: Notification) -> bool:
    return (
        n.at == at
        and n.receiver == exp.receiver
        and (exp.group is None or n.group_map == exp.group)
        and _alerts_match(exp.firing, [dict(a) for a in n.firing])
        and _alerts_match(exp.resolved, [dict(a) for a in n.resolved])
    )


def compare_notifications(spec: NotificationsSpec, sent: Sequence[Notification], start: datetime) -> list[str]:
    """Readable lines for every expected notification not sent and (exact) every one sent unexpectedly."""
    lines: list[str] = []
    left = list(sent)
    for exp in spec.expect:
        at = exp.at.resolve(start)
        hit = next((n for n in left if matches(exp, at, n)), None)
        if hit is not None:
            left.remove(hit)
            continue
        lines.append(f"  missing:    {_expected_text(exp, at, start)}")
        near = _closest(exp, at, left)
        if near is not None:
            lines.append(f"              closest sent: {describe(near, start)}")
    if spec.match == "exact":
        lines += [f"  unexpected: {describe(n, start)}" for n in left]
    return lines


def _closest(exp: ExpectedNotification, at: datetime, sent: Sequence[Notification]) -> Notification | None:
    same = [n for n in sent if n.receiver == exp.receiver] or list(sent)
    if not same:
        return None
    return min(same, key=lambda n: abs((n.at - at).total_seconds()))


def _when(at: datetime, start: datetime) -> str:
    delta = at - start
    secs = int(delta.total_seconds())
    sign = "-" if secs < 0 else ""
    secs = abs(secs)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    rel = "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"
    return f"{sign}{rel} ({at.astimezone(start.tzinfo).isoformat()})"


def _group_text(labels: Mapping[str, str] | None) -> str:
    if labels is None:
        return "{any group}"
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _alerts_text(firing: Sequence[Mapping[str, str]], resolved: Sequence[Mapping[str, str]]) -> str:
    parts = [f"firing {label_text(a)}" for a in firing] + [f"resolved {label_text(a)}" for a in resolved]
    return "; ".join(parts) or "no alerts"


def _expected_text(exp: ExpectedNotification, at: datetime, start: datetime) -> str:
    return (
        f"at {_when(at, start)} to {exp.receiver} group {_group_text(exp.group)}: "
        f"{_alerts_text(exp.firing, exp.resolved)}"
    )


def describe(n: Notification, start: datetime) -> str:
    firing = [dict(a) for a in n.firing]
    resolved = [dict(a) for a in n.resolved]
    return f"at {_when(n.at, start)} to {n.receiver} group {_group_text(n.group_map)}: {_alerts_text(firing, resolved)}"
