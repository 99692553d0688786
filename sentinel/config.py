"""`sentinel.yaml`: the daemon's configuration, validated with file:line:col errors."""

from __future__ import annotations

import glob as globlib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from sentinel.alerting import time_intervals as ti
from sentinel.alerting.matchers import Matcher, parse_matchers
from sentinel.calendars import CalendarConfig
from sentinel.cost.rates import RateConfig
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


class TaggedUrl(_Strict):
    """An apprise URL with a tag, as apprise tags its URLs: the tier of a `fallback: [tags…]` it belongs to."""

    url: SecretStr
    tag: Name


# A string is a plain URL, a mapping a tagged one: chosen by shape, so an error names only the form used.
_AppriseUrl = Annotated[
    Annotated[SecretStr, Tag("plain")] | Annotated[TaggedUrl, Tag("tagged")],
    Discriminator(lambda v: "tagged" if isinstance(v, dict | TaggedUrl) else "plain"),
]


class ReceiverConfig(_Strict):
    name: Name
    # apprise URLs, plain or {url, tag}: they carry tokens, so secrets
    urls: list[_AppriseUrl] = Field(default_factory=list)
    webhook: WebhookConfig | None = None
    send_resolved: bool = True
    console: bool = False  # print to the terminal (the demo's receiver)
    # Delivery options (docs/delivery.md). `paid`: never send twice, even across a crash; unset = automatic for
    # SMS-type apprise schemes (twilio://, sns://, vonage://, …).
    paid: bool | None = None
    max_notifications_per_minute: Annotated[int, Field(ge=1)] | None = None  # excess waits, never dropped
    # true: try the integrations in order, stopping at the first that delivers; a list of tags: tiers in
    # priority order, each sent to all of its URLs, stopping at the first tier where one delivers
    fallback: bool | list[Name] = False

    @property
    def apprise_urls(self) -> list[SecretStr]:
        return [u.url if isinstance(u, TaggedUrl) else u for u in self.urls]

    @property
    def tiers(self) -> tuple[tuple[int, ...], ...]:
        """`fallback: [tags…]` as the indices of `urls` in each tier, highest priority first; () otherwise."""
        if not isinstance(self.fallback, list):
            return ()
        tags = [u.tag if isinstance(u, TaggedUrl) else None for u in self.urls]
        return tuple(tuple(i for i, t in enumerate(tags) if t == tag) for tag in self.fallback)


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
    # Still firing and unacknowledged this long after its first notification: notify `escalate_to` too.
    escalate_after: Duration | None = None
    escalate_to: Name | None = None
    routes: list[RouteConfig] = Field(default_factory=list)

    @field_validator("matchers", mode="before")
    @classmethod
    def _parse_matchers(cls, v: Any) -> tuple[Matcher, ...]:
        return _matchers(v)


class CorrelationConfig(_Strict):
    """Keep-style correlation: `threshold` alerts for different pipelines sharing a root cause within `window`
    become one incident notification (docs/delivery.md#correlation)."""

    threshold: Annotated[int, Field(ge=2)] = 3
    window: Duration = timedelta(minutes=5)
    by: list[str] | Literal["signature"] = Field(default_factory=lambda: ["source"])
    matchers: tuple[Matcher, ...] = ()  # which alerts may correlate; default every alert

    @field_validator("matchers", mode="before")
    @classmethod
    def _parse_matchers(cls, v: Any) -> tuple[Matcher, ...]:
        return _matchers(v)

    @field_validator("by")
    @classmethod
    def _by(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and not v:
            raise ValueError("by: name at least one label (e.g. [source]) or say signature")
        return v


class InhibitRuleConfig(_Strict):
    source_matchers: tuple[Matcher, ...] = ()
    target_matchers: tuple[Matcher, ...] = ()
    equal: list[str] = Field(default_factory=list)

    @field_validator("source_matchers", "target_matchers", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> tuple[Matcher, ...]:
        return _matchers(v)


# -- time_intervals: Alertmanager's syntax; parsing and meaning live in sentinel/alerting/time_intervals.py --------
def _span(parse: Any) -> Any:
    return Annotated[ti.Span, PlainValidator(lambda v: parse(_scalar(v)))]


def _scalar(v: Any) -> str | int:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise ValueError("expected a value or a start:end range")
    return v


class TimeRangeConfig(_Strict):
    start_time: Annotated[int, PlainValidator(lambda v: ti.parse_time(_scalar(v)))]
    end_time: Annotated[int, PlainValidator(lambda v: ti.parse_time(_scalar(v)))]

    @model_validator(mode="after")
    def _order(self) -> TimeRangeConfig:
        if self.start_time >= self.end_time:
            raise ValueError("start_time must be before end_time (an interval crossing midnight is two intervals)")
        return self


class TimeIntervalConfig(_Strict):
    times: list[TimeRangeConfig] = Field(default_factory=list)
    weekdays: list[_span(ti.parse_weekdays)] = Field(default_factory=list)  # type: ignore[valid-type]
    days_of_month: list[_span(ti.parse_days_of_month)] = Field(default_factory=list)  # type: ignore[valid-type]
    months: list[_span(ti.parse_months)] = Field(default_factory=list)  # type: ignore[valid-type]
    years: list[_span(ti.parse_years)] = Field(default_factory=list)  # type: ignore[valid-type]
    location: str = "UTC"

    @field_validator("location")
    @classmethod
    def _location(cls, v: str) -> str:
        ti.parse_location(v)
        return v

    def compile(self) -> ti.TimeInterval:
        return ti.TimeInterval(
            times=tuple(ti.Span(t.start_time, t.end_time) for t in self.times),
            weekdays=tuple(self.weekdays),
            days_of_month=tuple(self.days_of_month),
            months=tuple(self.months),
            years=tuple(self.years),
            location=ti.parse_location(self.location),
            local=self.location == "Local",
        )


class NamedTimeIntervalConfig(_Strict):
    name: Name
    time_intervals: list[TimeIntervalConfig] = Field(default_factory=list)


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
    # POST /api/v2/alerts: Prometheus sends no token by default, so the Alertmanager intake is open unless asked.
    intake_requires_token: bool = False

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
    """`cost:` — see docs/metrics.md#cost and sentinel/cost/rates.py."""

    currency: Annotated[str, Field(min_length=1, max_length=16)] = "USD"
    monthly_budget: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    rates: list[RateConfig] = Field(default_factory=list)


class Config(_Strict):
    sources: list[SourceConfig] = Field(default_factory=list)
    rule_files: list[str] = Field(default_factory=list)
    evaluation_interval: Duration = timedelta(seconds=15)
    # Alertmanager's global.resolve_timeout: how long a posted alert without endsAt stays firing unless re-posted.
    resolve_timeout: Duration = timedelta(minutes=5)
    calendars: dict[Name, CalendarConfig] = Field(default_factory=dict)
    receivers: list[ReceiverConfig] = Field(min_length=1)
    route: RouteConfig
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)
    correlation: CorrelationConfig | None = None
    time_intervals: list[NamedTimeIntervalConfig] = Field(default_factory=list)
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
        if route.escalate_to is not None and route.escalate_to not in known:
            problems.append(
                doc.problem(
                    (*path, "escalate_to"),
                    f"{dotted(path)}.escalate_to: {route.escalate_to!r} is not defined under receivers "
                    f"(known: {', '.join(sorted(known))})",
                )
            )
        if (route.escalate_to is None) != (route.escalate_after is None):
            field = "escalate_to" if route.escalate_to is not None else "escalate_after"
            problems.append(
                doc.problem(
                    (*path, field),
                    f"{dotted(path)}.{field}: escalate_after and escalate_to go together; set both or neither",
                )
            )
        for i, child in enumerate(route.routes):
            walk(child, (*path, "routes", i))

    walk(cfg.route, ("route",))
    return problems + _time_interval_problems(doc, cfg) + _fallback_problems(doc, cfg)


def _fallback_problems(doc: Document, cfg: Config) -> list[Problem]:
    """`fallback: [tags…]`: every URL in a tier, every tier holding a URL, nothing outside the tiers."""
    problems: list[Problem] = []
    for i, r in enumerate(cfg.receivers):
        if not isinstance(r.fallback, list):
            continue
        where = ("receivers", i, "fallback")
        listed = set(r.fallback)
        if not r.fallback:
            problems.append(doc.problem(where, f"receiver {r.name!r}: fallback lists no tier; use true or tags"))
        for tag in sorted({t for t in r.fallback if r.fallback.count(t) > 1}):
            problems.append(doc.problem(where, f"receiver {r.name!r}: fallback tier {tag!r} is listed twice"))
        for tag, tier in zip(r.fallback, r.tiers, strict=True):
            if not tier:
                problems.append(doc.problem(where, f"receiver {r.name!r}: fallback tier {tag!r} tags none of its urls"))
        for j, u in enumerate(r.urls):
            if not isinstance(u, TaggedUrl) or u.tag not in listed:
                problems.append(
                    doc.problem(
                        ("receivers", i, "urls", j),
                        f"receiver {r.name!r}: urls[{j}] is in no fallback tier; give it a tag from "
                        f"{', '.join(r.fallback)}",
                    )
                )
        for other in ("webhook", "console"):
            if getattr(r, other):
                problems.append(
                    doc.problem(
                        ("receivers", i, other),
                        f"receiver {r.name!r}: a receiver with fallback tiers sends only to tagged urls; "
                        f"{other} has no tier",
                    )
                )
    return problems


def _time_interval_problems(doc: Document, cfg: Config) -> list[Problem]:
    """Interval names are unique, and a route may only name defined ones (Alertmanager refuses both too)."""
    problems: list[Problem] = []
    defined: set[str] = set()
    for i, named in enumerate(cfg.time_intervals):
        if named.name in defined:
            problems.append(doc.problem(("time_intervals", i, "name"), f"time_intervals: {named.name!r} is repeated"))
        defined.add(named.name)

    def walk(route: RouteConfig, path: tuple[str | int, ...]) -> None:
        for key in ("mute_time_intervals", "active_time_intervals"):
            for i, name in enumerate(getattr(route, key)):
                if name not in defined:
                    message = f"{key}: {name!r} is not defined under time_intervals"
                    problems.append(doc.problem((*path, key, i), message))
        for i, child in enumerate(route.routes):
            walk(child, (*path, "routes", i))

    walk(cfg.route, ("route",))
    return problems
