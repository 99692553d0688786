"""`GET /api/v1/groups`: the dispatcher's aggregation groups, as amtool's `alert groups` shows them."""

from __future__ import annotations

from aiohttp import web

from sentinel.web.server import _daemon, _json


async def groups(request: web.Request) -> web.Response:
    d = _daemon(request)
    now = d.clock.now()
    out = []
    for g in d.dispatcher.groups.values():
        alerts = []
        for fp, a in sorted(g.alerts.items()):
            ack = d.acks.get(fp, now)
            notified = g.notified_at.get(fp)
            alerts.append(
                {
                    "fingerprint": fp,
                    "state": a.status(now),
                    "labels": a.label_map,
                    "acked": ack.view() if ack is not None else None,
                    "notifiedAt": notified.isoformat() if notified else None,
                    "escalated": fp in g.escalated,
                }
            )
        out.append(
            {
                "key": g.key,
                "kind": g.kind,  # route | escalation | incident
                "receiver": g.receiver,
                "labels": g.labels,
                "alerts": alerts,
                "nextFlush": g.next_flush.isoformat(),
                "lastFlush": g.last_flush.isoformat() if g.last_flush else None,
                "nextEscalation": g.next_escalation.isoformat() if g.next_escalation else None,
            }
        )
    out.sort(key=lambda x: (x["receiver"], x["key"]))
    return _json(out)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/groups", groups)
