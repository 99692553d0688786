"""Silences over HTTP, shaped like Alertmanager's API: `GET|POST /api/v1/silences`,
`GET|DELETE /api/v1/silences/{id}`; and the per-alert `status` that `GET /api/v1/alerts` shows."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentinel.alerting.silences import SilenceError, matcher_from_api
from sentinel.clock import utc
from sentinel.web.server import _authorized, _daemon, _json

if TYPE_CHECKING:
    from sentinel.daemon import Daemon
    from sentinel.rules.lifecycle import Instance

STATES = ("active", "pending", "expired")


class PostableMatcher(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    value: str
    isRegex: bool = False  # Alertmanager's field names
    isEqual: bool = True


class PostableSilence(BaseModel):
    """Alertmanager's postable silence; a matcher may also be written as text, `alertname="X"`."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None  # given: update that silence
    matchers: list[PostableMatcher | str] = Field(min_length=1)
    startsAt: datetime | None = None
    endsAt: datetime
    createdBy: str = Field(min_length=1)
    comment: str = Field(min_length=1)


def _bad(field: str, message: str, status: int = 400) -> web.Response:
    return _json({"error": f"{field}: {message}", "field": field}, status)


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("str", "PostableMatcher"):  # union branch names are not fields
            out += f".{part}" if out else str(part)
    return out or "body"


async def post_silence(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"error": "missing or wrong bearer token"}, 401)
    d = _daemon(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _bad("body", f"not JSON: {exc}")
    try:
        ps = PostableSilence.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        return _bad(_field(tuple(err["loc"])), err["msg"].removeprefix("Value error, "))
    matchers = []
    for i, m in enumerate(ps.matchers):
        try:
            matchers.append(matcher_from_api(m if isinstance(m, str) else m.model_dump()))
        except ValueError as exc:
            return _bad(f"matchers[{i}]", str(exc))
    now = d.clock.now()
    try:
        silence_id = await d.silences.set(
            tuple(matchers),
            utc(ps.endsAt),
            now,
            starts_at=utc(ps.startsAt) if ps.startsAt else None,
            created_by=ps.createdBy,
            comment=ps.comment,
            silence_id=ps.id,
        )
    except SilenceError as exc:
        return _bad(exc.field, exc.message, exc.status)
    return _json({"silenceID": silence_id})


async def list_silences(request: web.Request) -> web.Response:
    d = _daemon(request)
    wanted = request.query.get("state")
    states = [s.strip() for s in wanted.split(",") if s.strip()] if wanted else None
    if states is not None and not set(states) <= set(STATES):
        return _bad("state", f"expected a comma-separated list of {', '.join(STATES)}")
    now = d.clock.now()
    await d.silences.gc(now)  # expired beyond retention: gone, even if nothing was created since
    return _json([s.dump(now) for s in d.silences.list(now, states)])  # type: ignore[arg-type]


async def get_silence(request: web.Request) -> web.Response:
    d = _daemon(request)
    s = d.silences.get(request.match_info["id"])
    if s is None:
        return _bad("id", f"no silence {request.match_info['id']!r}", 404)
    return _json(s.dump(d.clock.now()))


async def expire_silence(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"error": "missing or wrong bearer token"}, 401)
    d = _daemon(request)
    now = d.clock.now()
    try:
        s = await d.silences.expire(request.match_info["id"], now)
    except SilenceError as exc:
        return _bad(exc.field, exc.message, exc.status)
    return _json(s.dump(now))


def alert_status(d: Daemon, inst: Instance) -> dict[str, Any]:
    """Alertmanager's alert `status`, computed now; `depends_on` root causes count as inhibitors too."""
    st = d.muting.status(dict(inst.labels), d.clock.now())
    out = st.dump()
    if inst.inhibited_by:
        out["inhibitedBy"] = sorted(set(st.inhibited_by) | set(inst.inhibited_by))
        out["state"] = "suppressed"
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/silences", list_silences)
    app.router.add_post("/api/v1/silences", post_silence)
    app.router.add_get("/api/v1/silences/{id}", get_silence)
    app.router.add_delete("/api/v1/silences/{id}", expire_silence)
