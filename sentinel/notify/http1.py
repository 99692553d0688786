"""Keep-alive HTTP/1.1 POSTs for webhooks: asyncio transports and httptools' response parser (llhttp, uvicorn's).

Why not aiohttp's client, which webhooks used before: its per-request machinery cost ~220 µs of CPU per POST
here against ~90 µs for this module (1,000 POSTs, 50 at a time, to the peer benchmark's sink), and a flush of
1,000 groups is mostly POSTs (`bench/alert_pipeline.py`; docs/alerting.md).

It does only what a webhook needs: POST a body, read the status, drain the response and keep the connection
for the next POST. Like Alertmanager's webhook client it follows no redirects (a 30x is the answer), keeps
no cookies and asks for no compression; like aiohttp's default (`trust_env=False`) it ignores proxy
variables.

Pools are per event loop, one per origin, at most `LIMIT` connections in use each; an idle connection closes
after `KEEPALIVE` seconds, so a reload that drops a webhook leaves nothing open for long.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import weakref
from dataclasses import dataclass
from typing import cast

import httptools
from yarl import URL

LIMIT = 64
KEEPALIVE = 15.0
_tls: ssl.SSLContext | None = None


class PostError(Exception):
    """A POST that got no HTTP answer. `connected`: the request was written, so the receiver may have acted."""

    def __init__(self, message: str, *, connected: bool) -> None:
        super().__init__(message)
        self.connected = connected


class PostTimeout(PostError):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to POST, worked out once per webhook (not per send)."""

    origin: tuple[str, str, int]  # scheme, host, port
    head: bytes  # request line and headers up to Content-Length's name

    @classmethod
    def of(cls, url: str | URL, headers: dict[str, str]) -> Target:
        u = url if isinstance(url, URL) else URL(url)
        if u.scheme not in ("http", "https") or not u.raw_host or u.port is None:
            raise ValueError("url must be an http:// or https:// URL with a host")
        lines = [f"POST {u.raw_path_qs} HTTP/1.1", f"Host: {u.host_port_subcomponent}"]
        if u.user is not None:  # credentials in the URL: Basic auth, as aiohttp and curl do
            token = base64.b64encode(f"{u.user}:{u.password or ''}".encode()).decode()
            lines.append(f"Authorization: Basic {token}")
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} must be one line")
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        return cls((u.scheme, u.raw_host, u.port), head)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; answers one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, str]] | None = None
        self.reason = ""
        self.status = 0  # of the answer being read, once its headers are in
        self.closed = False
        self.idle_since = 0.0  # loop time it was put back in its pool

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # not an asyncio.Transport subclass on every loop

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection's framing can no longer be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(PostError("the receiver switched protocols", connected=True))
        except httptools.HttpParserError as exc:
            self._fail(PostError(f"invalid HTTP response ({exc})", connected=True))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.status >= 200 and self.waiter is not None and not self.waiter.done():
            # An answer without Content-Length or chunking ends where the connection does.
            self.waiter.set_result((self.status, self.reason))
            return
        detail = f" ({exc})" if exc else ""
        self._fail(PostError(f"the receiver closed the connection before answering{detail}", connected=True))

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1", "replace")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        status, self.status = self.status, 0
        if status < 200:  # 1xx: an interim answer; the real one follows
            self.reason = ""
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, self.reason))
        if not self.parser.should_keep_alive():
            self.close()

    # ours
    def send(self, data: bytes) -> asyncio.Future[tuple[int, str]]:
        assert self.transport is not None
        self.reason, self.status = "", 0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: PostError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()


class _Pool:
    """Connections to one origin."""

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(LIMIT)
        # One timer per pool closes connections idle for KEEPALIVE, not one per connection per request: a
        # timer set and cancelled around every POST was a visible share of a busy flush.
        self._sweep: asyncio.TimerHandle | None = None

    async def connect(self) -> _Connection:
        while self.idle:
            conn = self.idle.pop()  # most recently used first: the least likely to have been closed by the peer
            if not conn.closed:
                return conn
        scheme, host, port = self.origin
        tls = await _tls_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, host, port, ssl=tls, server_hostname=host if tls else None)
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.closed or conn.waiter is not None or len(self.idle) >= LIMIT:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self.idle.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(KEEPALIVE, self._close_idle)

    def _close_idle(self) -> None:
        self._sweep = None
        cutoff = asyncio.get_running_loop().time() - KEEPALIVE
        # `idle` is in the order connections came back, so the ones to close are at its start.
        n = next((i for i, c in enumerate(self.idle) if c.idle_since > cutoff), len(self.idle))
        for conn in self.idle[:n]:
            conn.close()
        del self.idle[:n]
        if self.idle:
            wait = self.idle[0].idle_since + KEEPALIVE - asyncio.get_running_loop().time()
            self._sweep = asyncio.get_running_loop().call_later(max(wait, 0.0), self._close_idle)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in self.idle:
            conn.close()
        self.idle.clear()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, int], _Pool]] = (
    weakref.WeakKeyDictionary()
)


async def post(target: Target, body: bytes, timeout: float) -> tuple[int, str]:
    """POST `body` (JSON) to `target`; returns the status and reason. Raises PostError/PostTimeout."""
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    pool = pools.get(target.origin)
    if pool is None:
        pool = pools[target.origin] = _Pool(target.origin)
    conn: _Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            async with pool.slots:
                try:
                    conn = await pool.connect()
                except OSError as exc:
                    raise PostError(f"cannot connect: {exc.strerror or exc}", connected=False) from None
                try:
                    return await conn.send(b"%s%d\r\n\r\n%s" % (target.head, len(body), body))
                finally:
                    pool.release(conn)
    except TimeoutError:
        # `release` closed the connection: its answer may still come, so it cannot carry another request.
        what = "answer" if conn else "connection"
        raise PostTimeout(f"no {what} within {timeout:g}s", connected=conn is not None) from None


async def close_pools() -> None:
    """Close this loop's idle connections (the daemon's stop, and tests)."""
    for pool in _pools.pop(asyncio.get_running_loop(), {}).values():
        pool.close()


async def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~65 ms of CPU: once, and off the event loop.
    global _tls
    if _tls is None:
        _tls = await asyncio.to_thread(ssl.create_default_context)
    return _tls
