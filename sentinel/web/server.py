"""aiohttp server: metrics, health, status API and reload. Responses are JSON via orjson."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

import sentinel
from sentinel.web.metrics_page import metrics_response

if TYPE_CHECKING:
    from sentinel.daemon import Daemon

DAEMON = web.AppKey("daemon", object)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _daemon(request: web.Request) -> Daemon:
    return request.app[DAEMON]  # type: ignore[return-value]


def _authorized(request: web.Request) -> bool:
    token = _daemon(request).config.server.api_token
    if token is None:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.get_secret_value().encode())


async def metrics(request: web.Request) -> web.StreamResponse:
    return await metrics_response(request, _daemon(request).metrics)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    d = _daemon(request)
    if d.ready:
        return web.Response(text="ready\n")
    waiting = [s.name for s in d.config.sources if s.name not in d.attempted]
    return web.Response(text=f"not ready: waiting for first poll of {', '.join(waiting)}\n", status=503)


async def status(request: web.Request) -> web.Response:
    d = _daemon(request)
    sources = []
    for s in d.config.sources:
        h = d.history.health.get(s.name)
        sources.append(
            {
                "name": s.name,
                "kind": s.kind,
                "url": s.url,
                "reachable": h.reachable if h else None,
                "version": h.version if h else None,
                "error": h.error if h else None,
                "components": [c.model_dump(mode="json") for c in h.components] if h else [],
            }
        )
    return _json(
        {
            "version": sentinel.__version__,
            "ready": d.ready,
            "config_file": str(d.loaded.path),
            "sources": sources,
            "pipelines": len(d.history.pipelines),
            "rule_groups": len(d.engine.rules.groups()),
        }
    )


async def alerts(request: web.Request) -> web.Response:
    from sentinel.web.acks import acked_view
    from sentinel.web.silences import alert_status

    d = _daemon(request)
    out = []
    for inst in d.engine.instance_list():
        out.append(
            {
                "fingerprint": inst.fingerprint,
                "state": inst.state,
                "labels": dict(inst.labels),
                "annotations": dict(inst.annotations),
                "activeAt": inst.active_at.isoformat(),
                "firedAt": inst.fired_at.isoformat() if inst.fired_at else None,
                "resolvedAt": inst.resolved_at.isoformat() if inst.resolved_at else None,
                # Alertmanager's status.inhibitedBy: the root-cause alerts holding this one back.
                "inhibitedBy": list(inst.inhibited_by),
                "acked": acked_view(d, inst.fingerprint),  # {by, comment, at, expires} or null
                "status": alert_status(d, inst),  # {state: active|suppressed, silencedBy, inhibitedBy, mutedBy}
                "origin": "rules",
            }
        )
    out.extend(_posted_alerts(d))
    out.sort(key=lambda a: (a["state"], a["labels"].get("alertname", ""), a["fingerprint"]))
    return _json(out)


def _posted_alerts(d: Daemon) -> list[dict[str, Any]]:
    """Alerts pushed to POST /api/v2/alerts (Prometheus, scripts), in the same shape as the rules' own."""
    from sentinel.web.acks import acked_view
    from sentinel.web.intake import intake_of

    now = d.clock.now()
    out = []
    for stored in list(intake_of(d).alerts.values()):
        a = stored.alert
        resolved = a.resolved_at(now)
        out.append(
            {
                "fingerprint": a.fingerprint,
                "state": "resolved" if resolved else "firing",
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "activeAt": a.starts_at.isoformat() if a.starts_at else None,
                "firedAt": a.starts_at.isoformat() if a.starts_at else None,
                "resolvedAt": a.ends_at.isoformat() if resolved and a.ends_at else None,
                "inhibitedBy": [],
                "acked": acked_view(d, a.fingerprint),
                "status": d.muting.status(dict(a.labels), now).dump(),
                "origin": "api",
            }
        )
    return out


async def reload(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"error": "missing or wrong bearer token"}, 401)
    ok, message = await _daemon(request).reload()
    return _json({"status": "ok" if ok else "error", "error": None if ok else message}, 200 if ok else 400)


def make_app(daemon: Daemon) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[DAEMON] = daemon
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_post("/-/reload", reload)
    from sentinel.web import intake

    intake.add_routes(app)
    from sentinel.web import acks, groups

    acks.add_routes(app)
    groups.add_routes(app)
    from sentinel.web import silences

    silences.add_routes(app)
    return app


class ListenError(RuntimeError):
    """The configured `server.listen` address cannot be bound (in use, not ours, no permission)."""


async def start_web(daemon: Daemon) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_app(daemon), access_log=None)
    await runner.setup()
    server = daemon.config.server
    site = web.TCPSite(runner, server.host, server.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(
            f"cannot listen on {server.host}:{server.port} (server.listen): {exc.strerror or exc}"
        ) from None
    port = server.port
    if port == 0 and site._server is not None:  # an ephemeral port: tests and the demo ask for one
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            port = sockets[0].getsockname()[1]
    return runner, port
