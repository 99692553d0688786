"""The schema of rule unit-test files (`rules/tests/*.yaml`), validated with file:line:col errors.

Times are written relative to each test's `start` so a scenario reads like a timeline; see
docs/rule-tests.md for the format with examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from sentinel.calendars import CalendarConfig
from sentinel.config import InhibitRuleConfig, NamedTimeIntervalConfig, ReceiverConfig, RouteConfig
from sentinel.durations import Duration, parse_duration
from sentinel.model import RunState


@dataclass(frozen=True)
class At:
    """A point in time as written: `15m` / `-1d` (from the test's start), `+9m` (from the run's
    scheduled time, inside runs only) or an absolute timestamp with a UTC offset."""

    text: str
    delta: timedelta = timedelta(0)
    absolute: datetime | None = None
    from_scheduled: bool = False

    def resolve(self, start: datetime, scheduled: datetime | None = None) -> datetime:
        try:
            return self._resolve(start, scheduled)
        except OverflowError:
            raise ValueError(f"{self.text!r} is out of range") from None

    def _resolve(self, start: datetime, scheduled: datetime | None) -> datetime:
        if self.absolute is not None:
            return self.absolute
        if self.from_scheduled:
            if scheduled is None:
                raise ValueError(f"{self.text!r} is relative to the run's `scheduled`, which is not given")
            return scheduled + self.delta
        return start + self.delta


def parse_at(value: Any) -> At:
    if isinstance(value, At):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value.isoformat()} needs a UTC offset, e.g. 2026-11-25T16:00:00-05:00")
        return At(value.isoformat(), absolute=value)
    if isinstance(value, date):
        raise ValueError(f"{value.isoformat()} is a date; give a timestamp with a UTC offset or an offset like 15m")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected an offset like 15m, -1d or +9m, or a timestamp with a UTC offset")
    try:
        return _parse_at(value)
    except OverflowError:
        raise ValueError(f"time {value!r} is out of range") from None


def _parse_at(value: int | float | str) -> At:
    if isinstance(value, int | float):
        # YAML reads `90` (and even `1:30`) as a number: take it as seconds, like durations do.
        return At(str(value), delta=parse_duration(value))
    text = value.strip()
    sign = text[:1] if text[:1] in ("+", "-") else ""
    body = text[1:].strip() if sign else text
    try:
        delta = parse_duration(body)
    except ValueError:
        if sign == "+":
            raise ValueError(f"invalid offset {text!r}: expected e.g. +1m or +1h30m") from None
        try:
            absolute = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"invalid time {text!r}: expected an offset like 15m, -1d or +9m, or a timestamp with a UTC offset"
            ) from None
        return parse_at(absolute)
    if sign == "-":
        delta = -delta
    return At(text, delta=delta, from_scheduled=sign == "+")


def _no_run_relative(at: At) -> At:
    if at.from_scheduled:
        raise ValueError(f"{at.text!r}: a leading + (relative to a run's scheduled time) is only allowed in runs")
    return at


def _aware(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"invalid timestamp {value!r}: expected e.g. 2026-11-25T16:00:00-05:00") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"start {value.isoformat()} needs a UTC offset, e.g. 2026-11-25T16:00:00-05:00")
    return value


RunAt = Annotated[At, BeforeValidator(parse_at)]
TestAt = Annotated[At, BeforeValidator(lambda v: _no_run_relative(parse_at(v)))]
Start = Annotated[datetime, BeforeValidator(_aware)]
Label = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True)


class TaskSpec(_Strict):
    state: RunState
    started: RunAt | None = None
    ended: RunAt | None = None
    try_number: Annotated[int, Field(ge=0)] = 1
    max_tries: Annotated[int, Field(ge=0)] | None = None
    message: str | None = None


def _task(value: Any) -> Any:
    # `load: failed` is the short form of `load: {state: failed}`
    return {"state": value} if isinstance(value, str) else value


class RunSpec(_Strict):
    id: str | None = None
    scheduled: RunAt | None = None
    for_: RunAt | None = Field(None, alias="for")  # the period the run is for, when not its scheduled time
    queued: RunAt | None = None
    started: RunAt | None = None
    ended: RunAt | None = None
    state: RunState | None = None  # default: success when ended, else what the timestamps say
    run_type: str | None = None
    message: str | None = None
    version: str | None = None
    url: str | None = None
    volume: float | None = None  # data volume a source's `volume:` would read (successful runs only)
    tasks: dict[str, Annotated[TaskSpec, BeforeValidator(_task)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        if self.scheduled is None and self.queued is None and self.started is None and self.ended is None:
            raise ValueError("a run needs at least one of scheduled, queued, started, ended")
        if self.scheduled is not None and self.scheduled.from_scheduled:
            raise ValueError(f"scheduled {self.scheduled.text!r} cannot be relative to itself")
        if self.ended is not None and self.state is not None and not self.state.terminal:
            raise ValueError(f"state {self.state.value!r} is not final, so the run cannot have ended")
        return self


class PipelineSpec(_Strict):
    source: str
    pipeline: str
    tags: list[str] = Field(default_factory=list)
    paused: bool = False
    schedule: str | None = None
    next_run: TestAt | None = None
    upstreams: list[str] = Field(default_factory=list)
    url: str | None = None
    runs: list[RunSpec] = Field(default_factory=list)


class ComponentSpec(_Strict):
    healthy: bool = True
    last_heartbeat: TestAt | None = None
    detail: str | None = None


def _component(value: Any) -> Any:
    # `scheduler: false` is the short form of `scheduler: {healthy: false}`
    return {"healthy": value} if isinstance(value, bool) else value


class HealthSpec(_Strict):
    at: TestAt
    source: str
    reachable: bool = True
    error: str | None = None
    version: str | None = None
    components: dict[str, Annotated[ComponentSpec, BeforeValidator(_component)]] = Field(default_factory=dict)


class ImportErrorSpec(_Strict):
    source: str
    filename: str
    message: str = "import failed"
    from_: TestAt = Field(At("0s"), alias="from")
    until: TestAt | None = None


class SourceSpec(_Strict):
    labels: dict[Label, str] = Field(default_factory=dict)


class ExpectedAlert(_Strict):
    labels: dict[Label, str]
    annotations: dict[Label, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _alertname(cls, v: dict[str, str]) -> dict[str, str]:
        if "alertname" not in v:
            raise ValueError("expected alert labels must include alertname")
        return v


class Expectation(_Strict):
    at: TestAt
    alerts: list[ExpectedAlert] = Field(default_factory=list)
    match: Literal["exact", "subset"] = "exact"


def _alert_match(value: Any) -> Any:
    # `PipelineFailed` is the short form of `{alertname: PipelineFailed}`
    return {"alertname": value} if isinstance(value, str) else value


AlertMatch = Annotated[dict[Label, str], BeforeValidator(_alert_match)]


class ExpectedNotification(_Strict):
    """One message a receiver must get: compared by instant, receiver, group labels and alert lists."""

    at: TestAt
    receiver: str
    group: dict[Label, str] | None = None  # the group's labels (route group_by), exactly; omitted = any
    firing: list[AlertMatch] = Field(default_factory=list)  # each: labels an alert carries (a subset of them)
    resolved: list[AlertMatch] = Field(default_factory=list)


def _notifications(value: Any) -> Any:
    return {"expect": value} if isinstance(value, list) else value


class NotificationsSpec(_Strict):
    match: Literal["exact", "subset"] = "exact"
    expect: list[ExpectedNotification] = Field(default_factory=list)


class RuleTest(_Strict):
    name: Annotated[str, Field(min_length=1)]
    start: Start
    interval: Duration = timedelta(minutes=1)
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
    pipelines: list[PipelineSpec] = Field(default_factory=list)
    health: list[HealthSpec] = Field(default_factory=list)
    import_errors: list[ImportErrorSpec] = Field(default_factory=list)
    evaluate: list[Expectation] = Field(min_length=1)
    # Expected notifications (a list, or {match, expect}); needs the file's `config:` or `route:`/`receivers:`.
    notifications: Annotated[NotificationsSpec, BeforeValidator(_notifications)] | None = None

    @field_validator("interval")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v < timedelta(seconds=1):
            raise ValueError("interval must be at least 1s")
        return v


class RuleTestFile(_Strict):
    rule_files: list[str] = Field(min_length=1)
    calendars: dict[str, CalendarConfig] = Field(default_factory=dict)  # as in sentinel.yaml
    # For expected notifications: a sentinel.yaml to take route/receivers/inhibit_rules/time_intervals from,
    # or the same keys written here.
    config: str | None = None
    route: RouteConfig | None = None
    receivers: list[ReceiverConfig] = Field(default_factory=list)
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)
    time_intervals: list[NamedTimeIntervalConfig] = Field(default_factory=list)
    tests: list[RuleTest] = Field(default_factory=list)
