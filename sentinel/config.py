"""`sentinel.yaml`: the daemon's configuration, validated with file:line:col errors."""

from __future__ import annotations

import glob as globlib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from sentinel.alerting.matchers import Matcher, parse_matchers
from sentinel.calendars import CalendarConfig
from sentinel.durations import Duration
from sentinel.model import SourceSpec
from sentinel.yamlfile import ConfigError, Document, Problem, dotted, expand, load, validate

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class WebhookConfig(_Strict):
    url: SecretStr
    send_resolved: bool = True
    max_alerts: Annotated[int, Field(ge=0)] = 0
    timeout: Duration = timedelta(seconds=10)


class ReceiverConfig(_Strict):
    name: Name
    urls: list[SecretStr] = Field(default_factory=list)  # apprise URLs: they carry tokens, so secrets
    webhook: WebhookConfig | None = None
    send_resolved: bool = True
    console: bool = False  # print to the terminal (the demo's receiver)


def _matchers(v: Any) -> tuple[Matcher, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("matchers must be a list of strings like 'severity=\"critical\"'")
    return parse_matchers(v)


class RouteConfig(_Strict):
    """Alertmanager's route node. Unset timers and group_by inherit from the parent."""

    receiver: Name | None = None
    matchers: tuple[Matcher, ...] = ()
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(False, alias="continue")
    mute_time_intervals: list[str] = Field(default_factory=list)
    active_time_intervals: list[str] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)

    @field_validator("matchers", mode="before")
    @classmethod
    def _parse_matchers(cls, v: Any) -> tuple[Matcher, ...]:
        return _matchers(v)


class InhibitRuleConfig(_Strict):
    source_matchers: tuple[Matcher, ...] = ()
    target_matchers: tuple[Matcher, ...] = ()
    equal: list[str] = Field(default_factory=list)

    @field_validator("source_matchers", "target_matchers", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> tuple[Matcher, ...]:
        return _matchers(v)


class SourceConfig(SourceSpec):
    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from adapters.registry import kinds

        known = kinds()
        if v not in known:
            raise ValueError(f"unknown kind {v!r}; known kinds: {', '.join(known)}")
        return v


class StoreConfig(_Strict):
    path: str = "./sentinel-state.db"


class ServerConfig(_Strict):
    listen: str = "127.0.0.1:9464"
    api_token: SecretStr | None = None
    external_url: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        _host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be host:port, got {v!r}")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class CostConfig(_Strict):
    currency: str = "USD"
    monthly_budget: float | None = None
    rates: list[dict[str, Any]] = Field(default_factory=list)


class Config(_Strict):
    sources: list[SourceConfig] = Field(default_factory=list)
    rule_files: list[str] = Field(default_factory=list)
    evaluation_interval: Duration = timedelta(seconds=15)
    calendars: dict[Name, CalendarConfig] = Field(default_factory=dict)
    receivers: list[ReceiverConfig] = Field(min_length=1)
    route: RouteConfig
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)
    time_intervals: list[dict[str, Any]] = Field(default_factory=list)
    cost: CostConfig = CostConfig()
    store: StoreConfig = StoreConfig()
    server: ServerConfig = ServerConfig()

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return v

    @field_validator("receivers")
    @classmethod
    def _unique_receivers(cls, v: list[ReceiverConfig]) -> list[ReceiverConfig]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receiver names must be unique; repeated: {', '.join(dupes)}")
        return v

    def receiver(self, name: str) -> ReceiverConfig:
        return next(r for r in self.receivers if r.name == name)


class LoadedConfig(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    config: Config
    path: Path
    rule_paths: list[Path]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> LoadedConfig:
    """Read, expand and validate sentinel.yaml. Raises ConfigError with every problem found."""
    p = Path(path)
    doc = load(p)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "sentinel.yaml must be a mapping with sources, receivers and route")])
    problems = expand(doc, environ, base_dir=p.parent)
    if problems:
        raise ConfigError(problems)
    cfg = validate(doc, Config)
    semantic = _route_problems(doc, cfg)
    if semantic:
        raise ConfigError(semantic)
    rule_paths, missing = resolve_rule_files(cfg.rule_files, p.parent)
    if missing:
        raise ConfigError([_rule_file_problem(doc, i, pattern) for i, pattern in missing])
    return LoadedConfig(config=cfg, path=p, rule_paths=rule_paths)


def resolve_rule_files(patterns: list[str], base: Path) -> tuple[list[Path], list[tuple[int, str]]]:
    paths: list[Path] = []
    missing: list[tuple[int, str]] = []
    for i, pattern in enumerate(patterns):
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        found = sorted(Path(x) for x in globlib.glob(full, recursive=True))
        if not found:
            missing.append((i, pattern))
        for f in found:
            if f not in paths:
                paths.append(f)
    return paths, missing


def _rule_file_problem(doc: Document, index: int, pattern: str) -> Problem:
    return doc.problem(("rule_files", index), f"rule_files: {pattern!r} matches no file")


def _route_problems(doc: Document, cfg: Config) -> list[Problem]:
    problems: list[Problem] = []
    if cfg.route.receiver is None:
        problems.append(doc.problem(("route",), "route: the root route needs a receiver (the default for all alerts)"))
    known = {r.name for r in cfg.receivers}

    def walk(route: RouteConfig, path: tuple[str | int, ...]) -> None:
        if route.receiver is not None and route.receiver not in known:
            problems.append(
                doc.problem(
                    (*path, "receiver"),
                    f"{dotted(path)}.receiver: {route.receiver!r} is not defined under receivers "
                    f"(known: {', '.join(sorted(known))})",
                )
            )
        for i, child in enumerate(route.routes):
            walk(child, (*path, "routes", i))

    walk(cfg.route, ("route",))
    return problems
