"""Where the shipped rules and runbooks live: inside the wheel, or at the top of a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def bundled(name: str) -> Path:
    """`rules` or `runbooks`."""
    inside = _PKG / "_bundled" / name
    return inside if inside.is_dir() else _PKG.parent / name
