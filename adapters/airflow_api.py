"""Talking to one Airflow's REST API: version detection, auth, parsing, and paging of complete lists.

Facts checked against real 2.10.5 and 3.3.2 servers: v1 rejects unknown query parameters with 400 (so
`cursor` is only ever sent to v2); v2 ignores unknown parameters and pages by cursor only when `cursor`
is present ("" for the first page), which is exactly when `total_entries_limit` comes back non-null.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from adapters.airflow_auth import AirflowAuth
from adapters.airflow_schema import VersionInfo
from adapters.http import PoliteClient, SourceError
from sentinel.model import Clock, SourceSpec

M = TypeVar("M", bound=BaseModel)
Params = list[tuple[str, str | int]]

PAGE = 100  # Airflow's default maximum_page_limit; larger limits are silently capped
MAX_LIST_PAGES = 50  # bound on complete-list reads (active runs, import errors, mapped instances)


class AirflowApi:
    def __init__(self, spec: SourceSpec, clock: Clock, client: PoliteClient) -> None:
        self.client = client
        self.auth = AirflowAuth(spec, clock, client)
        self.api: str | None = None  # "airflow-v2" (Airflow 3) | "airflow-v1" (Airflow 2); None: undetected
        self.version: str | None = None

    @property
    def v2(self) -> bool:
        return self.api == "airflow-v2"

    @property
    def prefix(self) -> str:
        return "/api/v2" if self.v2 else "/api/v1"

    async def detect(self) -> None:
        resp = await self.client.request("GET", "/api/v2/version")
        if resp.status_code in (401, 403):  # a deployment that also protects /version
            self.api = "airflow-v2"
            resp = await self._send("/api/v2/version", [])
        if resp.status_code == 200 and (info := _maybe(resp, VersionInfo)) is not None:
            self.api, self.version = "airflow-v2", info.version
            return
        # Airflow 2 answers /api/v2/version with its HTML 404 page; Airflow 3 answers /api/v1 with 404 JSON.
        self.api = "airflow-v1"
        resp = await self._send("/api/v1/version", [])
        if resp.status_code == 200 and (info := _maybe(resp, VersionInfo)) is not None:
            self.version = info.version
            return
        self.api = None
        if resp.status_code in (401, 403):
            raise SourceError("auth", f"GET /api/v1/version: not authorized (HTTP {resp.status_code})")
        if resp.status_code == 200 and not _is_json(resp):
            self.client.report("invalid_json")
            raise SourceError("invalid_json", "GET /api/v1/version: response is not JSON")
        self.client.report("invalid_payload")
        raise SourceError("not_airflow", "no Airflow REST API at /api/v2/version or /api/v1/version")

    async def get(self, path: str, params: Params, model: type[M]) -> M:
        resp = await self._send(path, params)
        if resp.status_code in (401, 403):
            raise SourceError("auth", f"GET {path}: not authorized (HTTP {resp.status_code})", resp.status_code)
        if resp.status_code >= 400:
            raise SourceError("http_4xx", f"GET {path}: HTTP {resp.status_code}{_detail(resp)}", resp.status_code)
        return self.parse(path, self.client.json(resp), model)

    async def _send(self, path: str, params: Params) -> httpx.Response:
        assert self.api is not None
        resp = await self.client.request("GET", path, params=params, headers=await self.auth.headers(self.api))
        if resp.status_code in (401, 403) and self.v2 and self.auth.has_credentials:
            # Expired, revoked, or signed with a rotated secret (403): one fresh token, then give up.
            self.auth.invalidate()
            resp = await self.client.request("GET", path, params=params, headers=await self.auth.headers(self.api))
        return resp

    def parse(self, path: str, data: Any, model: type[M]) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.client.report("invalid_payload")
            err = exc.errors(include_input=False)[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            # Only the location and pydantic's message: the payload itself could be anything.
            raise SourceError("invalid_payload", f"GET {path}: unexpected response ({where}: {err['msg']})") from exc

    def paging(self, offset: int, token: str | None) -> Params:
        if not self.v2:
            return [("offset", offset)] if offset else []
        # Airflow 3.3+ pages by cursor once `cursor` is present; older 3.x ignore it and page by offset.
        out: Params = [("cursor", token if token is not None else "")]
        return [*out, ("offset", offset)] if offset else out

    async def list_all(self, path: str, params: Params, model: type[M], field: str) -> tuple[list[Any], int]:
        """Every row of a small, complete list (not a change feed); returns (rows, total_entries)."""
        rows, total, _ = await self.list_pages(path, params, model, field, MAX_LIST_PAGES)
        return rows, total

    async def list_pages(
        self, path: str, params: Params, model: type[M], field: str, max_pages: int
    ) -> tuple[list[Any], int, bool]:
        """At most `max_pages` pages of a complete list; returns (rows, total_entries, whether all were read)."""
        rows: list[Any] = []
        offset, token, total = 0, None, None
        complete = False
        for _ in range(max_pages):
            page = await self.get(path, [*params, ("limit", PAGE), *self.paging(offset, token)], model)
            batch = getattr(page, field)
            rows += batch
            total = getattr(page, "total_entries", None)
            if getattr(page, "total_entries_limit", None) is not None:
                token = getattr(page, "next_cursor", None)
                if token is None:
                    complete = True
                    break
            elif not batch or total is None or offset + len(batch) >= total:
                complete = True
                break
            offset += len(batch)
        return rows, len(rows) if total is None else max(total, len(rows)), complete


def _maybe(resp: httpx.Response, model: type[M]) -> M | None:
    try:
        return model.model_validate(orjson.loads(resp.content))
    except (orjson.JSONDecodeError, ValidationError):
        return None


def _is_json(resp: httpx.Response) -> bool:
    try:
        orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return False
    return True


def _detail(resp: httpx.Response) -> str:
    try:
        detail = orjson.loads(resp.content).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return f": {str(detail)[:200]}" if detail else ""
