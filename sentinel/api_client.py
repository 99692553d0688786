"""A small client for a running daemon's API, shared by `sentinel ack`, `sentinel silence` and `sentinel alerts`.

The bearer token is read from $SENTINEL_API_TOKEN (never a flag: flags end up in shell history and `ps`).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import orjson

DEFAULT_URL = "http://127.0.0.1:9464"
TOKEN_ENV = "SENTINEL_API_TOKEN"


class CliError(Exception):
    pass


def call(base_url: str, method: str, path: str, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = f"{base_url.rstrip('/')}{path}"
    try:
        r = httpx.request(
            method, url, content=orjson.dumps(body) if body is not None else None, headers=headers, timeout=10
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {base_url}: {type(exc).__name__}: {exc}") from None
    try:
        data = r.json()
    except ValueError:
        data = {"error": r.text.strip() or f"HTTP {r.status_code}"}
    if r.status_code == 401:
        raise CliError(f"unauthorized; set {TOKEN_ENV} to the daemon's server.api_token")
    if r.status_code != 200:
        raise CliError(str(data.get("error", r.status_code)) if isinstance(data, dict) else f"HTTP {r.status_code}")
    return data
