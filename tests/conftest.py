"""Shared test hooks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sentinel.notify.http1 import close_pools
from tests.sink import WebhookSink


@pytest.fixture(autouse=True)
async def _close_webhook_pool() -> AsyncIterator[None]:
    # Webhooks share one keep-alive pool per event loop; a test that sends without a daemon closes it here.
    yield
    await close_pools()


@pytest.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    """A real webhook sink on 127.0.0.1 (tests/sink.py); a module may define its own `sink` instead."""
    s = await WebhookSink().start()
    yield s
    await s.stop()
