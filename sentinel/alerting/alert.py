"""The alert value that flows from rules through the notification pipeline."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

LabelSet = tuple[tuple[str, str], ...]


def labelset(labels: Mapping[str, str]) -> LabelSet:
    return tuple(sorted(labels.items()))


def fingerprint(labels: Mapping[str, str] | LabelSet) -> str:
    """Stable identity of an alert: a hash of its sorted label pairs (what Alertmanager does with FNV)."""
    items = labels if isinstance(labels, tuple) else labelset(labels)
    h = hashlib.blake2b(digest_size=8)
    for k, v in items:
        h.update(k.encode())
        h.update(b"\xff")
        h.update(v.encode())
        h.update(b"\xfe")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Alert:
    labels: LabelSet
    annotations: LabelSet = ()
    starts_at: datetime | None = None
    ends_at: datetime | None = None  # set when resolved
    generator_url: str | None = None
    fingerprint: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    @classmethod
    def of(
        cls,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> Alert:
        return cls(labels=labelset(labels), annotations=labelset(annotations or {}), **kw)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def annotation_map(self) -> dict[str, str]:
        return dict(self.annotations)

    def label(self, name: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == name:
                return v
        return default

    def annotation(self, name: str, default: str = "") -> str:
        for k, v in self.annotations:
            if k == name:
                return v
        return default

    @property
    def name(self) -> str:
        return self.label("alertname")

    def resolved_at(self, now: datetime) -> bool:
        return self.ends_at is not None and self.ends_at <= now

    def status(self, now: datetime) -> str:
        return "resolved" if self.resolved_at(now) else "firing"

    def resolve(self, at: datetime) -> Alert:
        return replace(self, ends_at=at)
