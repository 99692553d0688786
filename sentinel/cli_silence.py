"""`sentinel silence add|ls|expire` and `sentinel alerts`: amtool's job against a running daemon's API.

The bearer token for mutations is read from $SENTINEL_API_TOKEN (never a flag: flags end up in shell
history and `ps`).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from sentinel.alerting.matchers import parse_matchers
from sentinel.api_client import DEFAULT_URL, TOKEN_ENV, CliError, call
from sentinel.durations import parse_duration

_LABELS_SHOWN = ("source", "pipeline", "task", "component")


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "silence",
        help="add, list or expire silences on a running daemon",
        description=f"Manage silences on a running daemon (like amtool). Mutations read the token from ${TOKEN_ENV}.",
    )
    ssub = s.add_subparsers(dest="silence_command", metavar="SUBCOMMAND", required=True)
    add = ssub.add_parser("add", help="silence the alerts matching every MATCHER")
    add.add_argument("matchers", nargs="+", metavar="MATCHER", help="label matchers, e.g. 'alertname=\"X\"'")
    add.add_argument("-d", "--duration", default="1h", help="how long, from --start (default 1h)")
    add.add_argument("--end", help="end at this RFC 3339 time instead of after --duration")
    add.add_argument("--start", help="start at this RFC 3339 time (default now)")
    add.add_argument("-c", "--comment", required=True, help="why: a ticket, a maintenance window")
    add.add_argument("-a", "--author", default=_user(), help="who (default: your login name)")
    add.add_argument("--id", help="update this silence instead of creating one")
    ls = ssub.add_parser("ls", help="list active and pending silences")
    ls.add_argument("--expired", action="store_true", help="list expired silences instead")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    ex = ssub.add_parser("expire", help="end silences now")
    ex.add_argument("ids", nargs="+", metavar="ID")
    for p in (add, ls, ex):
        _common(p)

    a = sub.add_parser("alerts", help="list a running daemon's alerts, and why any is held back")
    a.add_argument("--all", action="store_true", help="also list pending and resolved alerts")
    _common(a)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"the daemon's address (default {DEFAULT_URL})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "alerts":
            return _alerts(args)
        return {"add": _add, "ls": _ls, "expire": _expire}[args.silence_command](args)
    except CliError as exc:
        print(f"sentinel {args.command}: {exc}", file=sys.stderr)
        return 1


def _time(text: str, flag: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag}: {text!r} is not an RFC 3339 time like 2026-11-26T18:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _add(args: argparse.Namespace) -> int:
    try:
        matchers = parse_matchers(args.matchers)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    start = _time(args.start, "--start") if args.start else datetime.now(UTC)
    if args.end:
        end = _time(args.end, "--end")
    else:
        try:
            end = start + parse_duration(args.duration)
        except ValueError as exc:
            raise CliError(f"--duration: {exc}") from None
    body: dict[str, Any] = {
        "matchers": [str(m) for m in matchers],
        "endsAt": end.isoformat(),
        "createdBy": args.author,
        "comment": args.comment,
    }
    if args.start:
        body["startsAt"] = start.isoformat()
    if args.id:
        body["id"] = args.id
    data = call(args.url, "POST", "/api/v1/silences", body)
    print(orjson.dumps(data).decode() if args.json else data["silenceID"])
    return 0


def _ls(args: argparse.Namespace) -> int:
    state = "expired" if args.expired else "active,pending"
    data = call(args.url, "GET", f"/api/v1/silences?state={state}")
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    elif args.quiet:
        for s in data:
            print(s["id"])
    else:
        rows = [
            [
                s["id"],
                s["status"]["state"],
                " ".join(_matcher_text(m) for m in s["matchers"]),
                _when(s["startsAt"]),
                _when(s["endsAt"]),
                s["createdBy"],
                s["comment"],
            ]
            for s in data
        ]
        print(_table(["ID", "STATE", "MATCHERS", "STARTS", "ENDS", "CREATED BY", "COMMENT"], rows))
    return 0


def _expire(args: argparse.Namespace) -> int:
    for silence_id in args.ids:
        data = call(args.url, "DELETE", f"/api/v1/silences/{silence_id}")
        print(orjson.dumps(data).decode() if args.json else f"expired {silence_id}")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    data = call(args.url, "GET", "/api/v1/alerts")
    if not args.all:
        data = [a for a in data if a["state"] == "firing"]
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return 0
    rows = []
    for a in data:
        labels = a["labels"]
        status = a.get("status") or {}
        rows.append(
            [
                labels.get("alertname", ""),
                a["state"],
                status.get("state", "active"),
                " ".join(f"{k}={labels[k]}" for k in _LABELS_SHOWN if k in labels),
                _when(a.get("firedAt") or a.get("activeAt")),
                _why(status),
            ]
        )
    print(_table(["ALERT", "STATE", "STATUS", "WHERE", "SINCE", "HELD BACK BY"], rows))
    return 0


def _why(status: dict[str, Any]) -> str:
    parts = []
    if status.get("silencedBy"):
        parts.append("silenced by " + ", ".join(status["silencedBy"]))
    if status.get("inhibitedBy"):
        parts.append("inhibited by " + ", ".join(status["inhibitedBy"]))
    if status.get("mutedBy"):
        parts.append("muted by time interval " + ", ".join(status["mutedBy"]))
    return "; ".join(parts) or "-"


def _matcher_text(m: dict[str, Any]) -> str:
    op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}[
        (bool(m.get("isRegex")), bool(m.get("isEqual", True)))
    ]
    value = str(m["value"]).replace("\\", "\\\\").replace('"', '\\"')
    return f'{m["name"]}{op}"{value}"'


def _when(text: str | None) -> str:
    if not text:
        return "-"
    t = datetime.fromisoformat(text).astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)
