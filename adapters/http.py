"""A polite HTTP client: we must never hurt the scheduler we watch.

Token-bucket rate limit (sustained `max_requests_per_second`, short bursts up to `burst`), at most
`max_concurrency` requests in flight, a timeout on every request, the server's own clock read from the
`Date` header (cursors follow the server's clock, not ours), and every request's outcome reported for
`sentinel_source_requests_total{outcome}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from sentinel.model import SourceSpec

OutcomeObserver = Callable[[str, float], None]  # (outcome, seconds)


class SourceError(Exception):
    """A request to a scheduler failed. `outcome` is a bounded label; the message carries no secret."""

    def __init__(self, outcome: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.status = status


class RateLimiter:
    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._mono = monotonic
        self._last = monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._mono()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            while self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self._rate)
                self._refill()
            self._tokens -= 1.0


class PoliteClient:
    def __init__(
        self,
        spec: SourceSpec,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: OutcomeObserver | None = None,
    ) -> None:
        self.spec = spec
        self.base_url = spec.url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=spec.timeout.total_seconds(),
            verify=spec.verify_tls,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "orchestration-sentinel"},
            follow_redirects=False,
        )
        self._limiter = RateLimiter(spec.max_requests_per_second, spec.burst)
        self._inflight = asyncio.Semaphore(spec.max_concurrency)
        self._on_request = on_request
        self.server_time: datetime | None = None
        self.requests = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request. Raises SourceError for transport trouble and 5xx; returns 2xx-4xx responses."""
        await self._limiter.acquire()
        async with self._inflight:
            started = time.monotonic()
            self.requests += 1
            try:
                content = orjson.dumps(json) if json is not None else None
                hdrs = dict(headers or {})
                if content is not None:
                    hdrs["Content-Type"] = "application/json"
                resp = await self._client.request(method, path, params=params, content=content, headers=hdrs, data=data)
            except httpx.TimeoutException as exc:
                self._report("timeout", started)
                raise SourceError("timeout", f"{method} {path}: timed out") from exc
            except httpx.HTTPError as exc:
                self._report("connect_error", started)
                raise SourceError("connect_error", f"{method} {path}: {type(exc).__name__}") from exc
        self._note_server_time(resp)
        if resp.status_code >= 500:
            self._report("http_5xx", started)
            raise SourceError("http_5xx", f"{method} {path}: HTTP {resp.status_code}", resp.status_code)
        if resp.status_code >= 400:
            self._report("http_4xx", started)
        else:
            self._report("ok", started)
        return resp

    def report(self, outcome: str) -> None:
        """Count an outcome found after the response arrived (invalid JSON, unexpected payload)."""
        if self._on_request is not None:
            self._on_request(outcome, 0.0)

    def json(self, resp: httpx.Response) -> Any:
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            self.report("invalid_json")
            raise SourceError("invalid_json", f"{resp.request.url.path}: response is not JSON") from exc

    def _report(self, outcome: str, started: float) -> None:
        if self._on_request is not None:
            self._on_request(outcome, time.monotonic() - started)

    def _note_server_time(self, resp: httpx.Response) -> None:
        date = resp.headers.get("date")
        if not date:
            return
        try:
            self.server_time = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            pass

    async def aclose(self) -> None:
        await self._client.aclose()
