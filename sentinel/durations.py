"""The one duration syntax: Prometheus-style `1h30m`, `15s`, `500ms`, `2d`, `1w`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise ValueError("expected a duration like 15s, 5m or 1h30m")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        try:
            return _bounded(float(text), repr(text))
        except OverflowError:
            raise ValueError("duration is too long (over a century)") from None
    s = str(text).strip()
    if s == "0":
        return timedelta(0)
    pos, total, last_unit = 0, 0.0, None
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        unit = m.group(2)
        if last_unit is not None and list(_UNITS).index(unit) >= list(_UNITS).index(last_unit):
            raise ValueError(f"invalid duration {s!r}: units must go from largest to smallest")
        total += float(m.group(1)) * _UNITS[unit]
        pos, last_unit = m.end(), unit
    if pos != len(s) or not s:
        raise ValueError(f"invalid duration {s!r}: expected e.g. 30s, 5m, 1h30m, 2d")
    return _bounded(total, s)


def _bounded(seconds: float, text: str) -> timedelta:
    # timedelta tops out near 2.7 million years; anything close to that is a typo, not a duration.
    if not seconds < 10 * 31536000 * 100:
        raise ValueError(f"duration {text!r} is too long (over a century)")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    secs = td.total_seconds()
    if secs == 0:
        return "0s"
    out = []
    whole = int(secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out.append(f"{whole // size}{unit}")
            whole %= size
    frac = secs - int(secs)
    if frac:
        out.append(f"{round(frac * 1000)}ms")
    return "".join(out)


def _validate(v: Any) -> timedelta:
    return parse_duration(v)


Duration = Annotated[timedelta, BeforeValidator(_validate), PlainSerializer(format_duration, return_type=str)]
