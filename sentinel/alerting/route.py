"""Alertmanager's route tree: depth-first, first match wins unless `continue`, options inherited."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TypeVar

from sentinel.alerting.matchers import Matcher, matches_all
from sentinel.config import RouteConfig

T = TypeVar("T")


def _pick(value: T | None, inherited: T | None, default: T) -> T:
    if value is not None:
        return value
    return inherited if inherited is not None else default


DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)


@dataclass(frozen=True)
class RouteOpts:
    receiver: str
    group_by: tuple[str, ...]  # ("...",) groups by every label
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    mute_time_intervals: tuple[str, ...] = ()
    active_time_intervals: tuple[str, ...] = ()
    escalate_after: timedelta | None = None
    escalate_to: str | None = None

    @cached_property
    def group_by_all(self) -> bool:
        return "..." in self.group_by


@dataclass
class Route:
    key: str
    opts: RouteOpts
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    routes: list[Route] = field(default_factory=list)

    @classmethod
    def build(cls, cfg: RouteConfig, parent: RouteOpts | None = None, key: str = "0") -> Route:
        opts = RouteOpts(
            receiver=_pick(cfg.receiver, parent.receiver if parent else None, ""),
            group_by=tuple(cfg.group_by) if cfg.group_by is not None else (parent.group_by if parent else ()),
            group_wait=_pick(cfg.group_wait, parent.group_wait if parent else None, DEFAULT_GROUP_WAIT),
            group_interval=_pick(cfg.group_interval, parent.group_interval if parent else None, DEFAULT_GROUP_INTERVAL),
            repeat_interval=_pick(
                cfg.repeat_interval, parent.repeat_interval if parent else None, DEFAULT_REPEAT_INTERVAL
            ),
            mute_time_intervals=tuple(cfg.mute_time_intervals),
            active_time_intervals=tuple(cfg.active_time_intervals),
            escalate_after=cfg.escalate_after or (parent.escalate_after if parent else None),
            escalate_to=cfg.escalate_to or (parent.escalate_to if parent else None),
        )
        route = cls(key, opts, cfg.matchers, cfg.continue_)
        route.routes = [cls.build(c, opts, f"{key}.{i}") for i, c in enumerate(cfg.routes)]
        return route

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        if self.matchers and not matches_all(self.matchers, labels):
            return []
        if not self.routes:
            return [self]
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.opts.group_by_all:
            return dict(labels)
        return {k: labels[k] for k in self.opts.group_by if k in labels}

    def walk(self) -> list[Route]:
        out = [self]
        for c in self.routes:
            out.extend(c.walk())
        return out
