"""The webhook client (sentinel/notify/http1.py) against real local servers: aiohttp for well-behaved
receivers (plain and TLS), raw asyncio servers for the answers real receivers also give (chunked,
close-delimited, interim 1xx, garbage, closing idle connections)."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest
import trustme
from aiohttp import web

from sentinel.notify import http1
from tests.waiting import until

HEADERS = {"Content-Type": "application/json", "User-Agent": "Sentinel/test"}
BODY = orjson.dumps({"receiver": "oncall", "alerts": []})


class Receiver:
    """aiohttp on 127.0.0.1 (optionally TLS): records each request with the client port it came from."""

    def __init__(self, tls: ssl.SSLContext | None = None, delay: float = 0.0) -> None:
        self.tls, self.delay = tls, delay
        self.requests: list[tuple[int, str, dict[str, str], bytes]] = []
        self.open = 0
        self.most_open = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            peer = request.transport.get_extra_info("peername")[1] if request.transport else 0
            self.requests.append((peer, request.path_qs, dict(request.headers), await request.read()))
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.Response(status=202, reason="Queued", text="ok")
        finally:
            self.open -= 1

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    """Start a raw TCP server answering with `answer`; returns its URL."""
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> str:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"

    yield start
    for s in servers:
        s.close()


def target(url: str) -> http1.Target:
    return http1.Target.of(url, HEADERS)


async def test_posts_reuse_one_keep_alive_connection_with_the_right_request() -> None:
    async with Receiver() as r:
        url = f"http://alice:s3cret@127.0.0.1:{r.port}/hooks/a?x=1"
        for _ in range(3):
            assert await http1.post(target(url), BODY, 5) == (202, "Queued")
    ports = {peer for peer, *_ in r.requests}
    assert len(r.requests) == 3 and len(ports) == 1
    _, path, headers, body = r.requests[0]
    assert (path, body) == ("/hooks/a?x=1", BODY)
    assert headers["Host"] == f"127.0.0.1:{r.port}"
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "Sentinel/test"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


async def test_concurrent_posts_use_at_most_limit_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "LIMIT", 4)
    async with Receiver(delay=0.2) as r:  # long enough that all LIMIT connections are open at once
        t = target(f"http://127.0.0.1:{r.port}/h")
        results = await asyncio.gather(*(http1.post(t, BODY, 10) for _ in range(20)))
    assert results == [(202, "Queued")] * 20
    assert r.most_open == 4 and len({peer for peer, *_ in r.requests}) == 4


async def test_idle_connections_close_after_keepalive_and_busy_ones_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE", 0.5)
    async with Receiver(delay=0.1) as r:
        t = target(f"http://127.0.0.1:{r.port}/h")
        await asyncio.gather(*(http1.post(t, BODY, 10) for _ in range(3)))  # three connections, now idle
        pool = http1._pools[asyncio.get_running_loop()][("http", "127.0.0.1", r.port)]
        first = list(pool.idle)
        assert len(first) == 3 and not any(c.closed for c in first)
        await until(lambda: all(c.closed for c in first) and not pool.idle, timeout=10)
        # A connection in use again is not closed under it, and is closed once it has been idle long enough.
        assert await http1.post(t, BODY, 10) == (202, "Queued")
        (again,) = pool.idle
        assert again not in first
        await until(lambda: again.closed and not pool.idle, timeout=10)
    assert len({peer for peer, *_ in r.requests}) == 4


async def test_receiver_closing_idle_connection_costs_nothing(raw: Callable[[Answer], Awaitable[str]]) -> None:
    connections = 0

    async def answer_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        # Keep-alive by HTTP/1.1's default, then closed at once, as a receiver with a short idle timeout does.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    url = await raw(answer_once_then_close)
    assert await http1.post(target(url), BODY, 5) == (200, "OK")
    pool = http1._pools[asyncio.get_running_loop()][("http", "127.0.0.1", int(url.split(":")[2].split("/")[0]))]
    await until(lambda: all(c.closed for c in pool.idle))
    assert await http1.post(target(url), BODY, 5) == (200, "OK")
    assert connections == 2


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\nyes\r\n0\r\n\r\n", id="chunked"
        ),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="interim-1xx"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\nbody until the connection closes", id="close-delimited"),
    ],
)
async def test_answers_real_receivers_give(raw: Callable[[Answer], Awaitable[str]], reply: bytes) -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(reply)
            await writer.drain()
            if b"HTTP/1.0" in reply:
                writer.close()
                return

    url = await raw(answer)
    for _ in range(2):  # a connection that cannot be reused is not
        assert await http1.post(target(url), BODY, 5) == (200, "OK")
    assert len(seen) == 2 and seen[0].endswith(b"\r\n\r\n" + BODY)


async def test_garbage_and_hangups_are_errors_that_say_the_request_left(
    raw: Callable[[Answer], Awaitable[str]],
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    with pytest.raises(http1.PostError, match="invalid HTTP response") as bad:
        await http1.post(target(await raw(garbage)), BODY, 5)
    with pytest.raises(http1.PostError, match="closed the connection before answering") as gone:
        await http1.post(target(await raw(hang_up)), BODY, 5)
    assert bad.value.connected and gone.value.connected


async def test_timeouts_tell_whether_the_request_left(raw: Callable[[Answer], Awaitable[str]]) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    with pytest.raises(http1.PostTimeout, match=r"no answer within 0\.2s") as late:
        await http1.post(target(await raw(never)), BODY, 0.2)
    assert late.value.connected


async def test_refused_connection_did_not_leave() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(http1.PostError, match="cannot connect") as refused:
        await http1.post(target(f"http://127.0.0.1:{port}/h"), BODY, 5)
    assert not refused.value.connected


async def test_https_verifies_the_receiver_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    async with Receiver(tls=server_tls) as r:
        url = f"https://127.0.0.1:{r.port}/secure"
        # The system's CAs do not know this one: refused before anything is sent.
        monkeypatch.setattr(http1, "_tls", None)
        with pytest.raises(http1.PostError, match="certificate verify failed") as untrusted:
            await http1.post(target(url), BODY, 5)
        assert not untrusted.value.connected and r.requests == []
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        monkeypatch.setattr(http1, "_tls", trusted)
        assert await http1.post(target(url), BODY, 5) == (202, "Queued")
    assert (r.requests[0][1], r.requests[0][3]) == ("/secure", BODY)


@pytest.mark.parametrize("url", ["ftp://h/x", "http:///nohost", "not a url"])
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        http1.Target.of(url, HEADERS)


def test_nothing_from_the_url_or_headers_can_add_a_header_line() -> None:
    head = http1.Target.of("https://h.example/a\r\nX-Injected: 1?q=\r\nX-Other: 2", HEADERS).head
    assert b"\r\nX-Injected" not in head and b"\r\nX-Other" not in head
    with pytest.raises(ValueError, match="one line"):
        http1.Target.of("https://h.example/", {"X-Token": "a\r\nX-Injected: 1"})
