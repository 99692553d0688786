"""`sentinel ack FINGERPRINT --by NAME --comment WHY`: acknowledge a firing alert on a running daemon."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from sentinel.api_client import DEFAULT_URL, TOKEN_ENV, CliError, call


def add_parser(sub: Any) -> None:
    a = sub.add_parser(
        "ack",
        help="acknowledge a firing alert: no more repeats or escalation until it resolves",
        description="Acknowledge a firing alert on a running daemon. The bearer token is read from "
        f"${TOKEN_ENV}. Fingerprints are listed by GET /api/v1/alerts and /api/v1/groups.",
    )
    a.add_argument("fingerprint", metavar="FINGERPRINT", help="the alert's fingerprint")
    a.add_argument("--by", required=True, help="who acknowledges (shown in the API)")
    a.add_argument("--comment", default="", help="why, or what is being done")
    a.add_argument("--expires", help="page again after this: a duration (2h) or an RFC 3339 time")
    a.add_argument("--url", default=DEFAULT_URL, help=f"the daemon's address (default {DEFAULT_URL})")
    a.add_argument("--json", action="store_true", help="print the daemon's JSON answer")


def run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"by": args.by, "comment": args.comment}
    if args.expires:
        body["expires"] = args.expires
    try:
        data = call(args.url, "POST", f"/api/v1/alerts/{args.fingerprint}/ack", body)
    except CliError as exc:
        print(f"sentinel ack: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        acked = data["acked"]
        until = f" until {acked['expires']}" if acked.get("expires") else ""
        print(f"acknowledged {args.fingerprint} by {acked['by']}{until}")
    return 0
