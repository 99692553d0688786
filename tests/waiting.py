"""Polling with a deadline, the one way tests wait for something a daemon does (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(
    cond: Callable[[], Any], timeout: float = 15.0, what: str = "the condition", every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)
