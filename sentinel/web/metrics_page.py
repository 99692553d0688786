"""GET /metrics as a stream: the page is rendered chunk by chunk in a worker thread and written as it comes.

At 10,000 pipelines the page is tens of MB. Rendering it in one piece holds the GIL for one long join and
encode, and writing it in one piece hands the transport one huge buffer; chunks of ~64 KB keep every step
short, so the event loop keeps running between them (and the client starts receiving at once). gzip, when
the scraper accepts it (Prometheus does), is done per chunk in the same thread; zlib releases the GIL.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from loguru import logger
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sentinel.metrics import Metrics, next_chunk


def accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() != "gzip":
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


async def metrics_response(request: web.Request, metrics: Metrics) -> web.StreamResponse:
    gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    headers = {"Content-Type": CONTENT_TYPE_LATEST}
    if gzip:
        headers["Content-Encoding"] = "gzip"
    resp = web.StreamResponse(headers=headers)
    if request.method == "HEAD":
        await resp.prepare(request)
        return resp
    chunks = metrics.page(gzip=gzip)
    # The first chunk before the headers: a render that fails at once is a 500, not a truncated 200.
    chunk = await asyncio.to_thread(next_chunk, chunks)
    await resp.prepare(request)
    try:
        while chunk is not None:
            await resp.write(chunk)
            chunk = await asyncio.to_thread(next_chunk, chunks)
        await resp.write_eof()
    except ConnectionResetError:
        # The scraper gave up (its scrape_timeout) or went away: nothing to answer, nothing to report.
        logger.debug("metrics scrape aborted by the client {}", request.remote)
    return resp
