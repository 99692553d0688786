"""Maps a source `kind` to its adapter class, through the `sentinel.adapters` entry-point group so a
third party can add a scheduler (Dagster, Argo) without touching Sentinel."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from adapters.base import Adapter

_BUILTIN = {"airflow": "adapters.airflow:AirflowAdapter", "prefect": "adapters.prefect:PrefectAdapter"}


def _load(target: str) -> type[Adapter]:
    module, _, attr = target.partition(":")
    cls: type[Adapter] = getattr(import_module(module), attr)
    return cls


def kinds() -> list[str]:
    names = set(_BUILTIN)
    names.update(ep.name for ep in entry_points(group="sentinel.adapters"))
    return sorted(names)


def adapter_for(kind: str) -> type[Adapter]:
    for ep in entry_points(group="sentinel.adapters"):
        if ep.name == kind:
            cls: type[Adapter] = ep.load()
            return cls
    if kind in _BUILTIN:
        return _load(_BUILTIN[kind])
    raise KeyError(f"unknown source kind {kind!r}; known kinds: {', '.join(kinds())}")
