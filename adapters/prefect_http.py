"""Prefect-flavoured requests over the shared PoliteClient: auth, error bodies, payload validation.

Every failure becomes a `SourceError` whose message names the method, path and what went wrong, and never
a header, a credential, or an echo of the request body (Prefect's 422 echoes the body back).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from adapters.http import PoliteClient, SourceError
from sentinel.model import SourceSpec

T = TypeVar("T")


def auth_headers(spec: SourceSpec) -> dict[str, str]:
    """Basic auth for a self-hosted server (`auth_string`), Bearer for Prefect Cloud (`api_key`).

    auth_string wins when both are set, as in Prefect's own client.
    """
    if spec.auth_string is not None:
        token = base64.b64encode(spec.auth_string.get_secret_value().encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if spec.api_key is not None:
        return {"Authorization": f"Bearer {spec.api_key.get_secret_value()}"}
    return {}


def error_detail(body: Any) -> str:
    """The useful part of a Prefect error body, in either of its two 422 shapes.

    `{"detail": "..."}` comes from HTTPException (e.g. limit > 200); `{"exception_message": ...,
    "exception_detail": [pydantic errors], "request_body": ...}` from request validation.
    """
    if not isinstance(body, dict):
        return ""
    problems = body.get("exception_detail")
    if isinstance(problems, list) and problems:
        parts = []
        for problem in problems[:3]:
            if isinstance(problem, dict):
                loc = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {problem.get('msg', '')}".strip(": "))
        return "; ".join(parts)
    for key in ("detail", "exception_message"):
        value = body.get(key)
        if isinstance(value, str):
            return value[:300]
        if isinstance(value, list) and value:  # FastAPI's default validation shape
            return error_detail({"exception_detail": value})
    return ""


class PrefectApi:
    def __init__(self, spec: SourceSpec, client: PoliteClient) -> None:
        self.client = client
        self._headers = auth_headers(spec)
        # Server clock as of the last response that carried a Date header in *this* wrapper's calls;
        # the PoliteClient's own value may be older than the request just made.
        self.server_now: datetime | None = None

    async def get(self, path: str, shape: TypeAdapter[T]) -> T:
        return await self._call("GET", path, None, shape)

    async def post(self, path: str, body: dict[str, Any], shape: TypeAdapter[T]) -> T:
        return await self._call("POST", path, body, shape)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None, shape: TypeAdapter[T]) -> T:
        resp = await self.client.request(method, path, json=body, headers=self._headers)
        self.server_now = self.client.server_time if resp.headers.get("date") else None
        if resp.status_code >= 400:
            raise self._http_error(method, path, resp)
        if resp.status_code != 200:
            # Redirects are not followed (follow_redirects=False): a 3xx means a wrong URL, e.g. a UI page.
            raise SourceError("http_other", f"{method} {path}: unexpected HTTP {resp.status_code}", resp.status_code)
        data = self.client.json(resp)
        try:
            return shape.validate_python(data)
        except ValidationError as exc:
            self.client.report("invalid_payload")
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            raise SourceError(
                "invalid_payload",
                f"{method} {path}: unexpected response shape ({exc.error_count()} problems, first at "
                f"'{loc or '<root>'}': {first.get('msg', '')})",
            ) from None

    def _http_error(self, method: str, path: str, resp: httpx.Response) -> SourceError:
        status = resp.status_code
        if status in (401, 403):
            hint = "check the source's auth_string / api_key" if self._headers else "the server wants credentials"
            return SourceError("auth", f"{method} {path}: HTTP {status} not authorized ({hint})", status)
        try:
            detail = error_detail(resp.json())
        except ValueError:
            detail = ""
        message = f"{method} {path}: HTTP {status}" + (f": {detail}" if detail else "")
        return SourceError("http_4xx", message, status)
