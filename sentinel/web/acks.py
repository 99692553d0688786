"""`POST /api/v1/alerts/{fingerprint}/ack`: someone is on it — no more repeats, no escalation until it resolves."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sentinel.alerting.ack import Ack
from sentinel.clock import utc
from sentinel.durations import parse_duration
from sentinel.web.server import _authorized, _daemon, _json

if TYPE_CHECKING:
    from sentinel.daemon import Daemon


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)
    # An RFC 3339 time, or a duration from now ("2h"): after it the alert pages again.
    expires: str | None = None

    @field_validator("by")
    @classmethod
    def _by(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("by must name who acknowledges")
        return v.strip()


def _expiry(text: str, now: datetime) -> datetime:
    try:
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        pass
    try:
        return now + parse_duration(text)
    except ValueError:
        raise ValueError(f"expires: {text!r} is neither an RFC 3339 time nor a duration like 2h") from None


def firing_fingerprints(d: Daemon) -> set[str]:
    """Alerts that can be acknowledged: firing rule instances and firing alerts held by the dispatcher."""
    now = d.clock.now()
    fps = {i.fingerprint for i in d.engine.instance_list() if i.state == "firing"}
    for g in d.dispatcher.groups.values():
        fps.update(fp for fp, a in g.alerts.items() if not a.resolved_at(now))
    return fps


def acked_view(d: Daemon, fp: str) -> dict[str, Any] | None:
    ack = d.acks.get(fp, d.clock.now())
    return ack.view() if ack is not None else None


async def ack(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"error": "missing or wrong bearer token"}, 401)
    d = _daemon(request)
    fp = request.match_info["fingerprint"]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _json({"error": f"body is not JSON: {exc}"}, 400)
    try:
        req = AckRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        return _json({"error": f"{where}: {err['msg']}", "field": where}, 400)
    now = d.clock.now()
    try:
        expires = _expiry(req.expires, now) if req.expires else None
    except ValueError as exc:
        return _json({"error": str(exc), "field": "expires"}, 400)
    if expires is not None and expires <= now:
        return _json({"error": "expires: must be in the future", "field": "expires"}, 400)
    if fp not in firing_fingerprints(d):
        return _json({"error": f"no firing alert has fingerprint {fp!r}"}, 404)
    record = Ack(fp, req.by, req.comment, now, expires)
    await d.acks.add(record)
    acknowledged = getattr(d.metrics, "acknowledged", None)
    if acknowledged is not None:
        acknowledged(1, [fp])
    return _json({"fingerprint": fp, "acked": record.view()})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/alerts/{fingerprint}/ack", ack)
