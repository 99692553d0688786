"""A clock that runs faster than real time, so the demo shows a trading afternoon in a few minutes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sentinel.clock import utc


class SimClock:
    """Simulated time: `start` plus `speed` times the real seconds elapsed since construction.

    `real` is the real-time source (seconds, any origin); tests inject one they move by hand. `now()` and
    `monotonic()` move in step, as with FrozenClock, so intervals measured either way agree.
    """

    def __init__(
        self,
        start: datetime,
        speed: float = 1.0,
        real: Callable[[], float] = time.monotonic,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock needs a timezone-aware start")
        _check_speed(speed)
        self._real = real
        self._speed = speed
        # Anchors: at real time `_real0` the sim was at `_sim0` and had run `_mono0` sim-seconds.
        self._real0 = real()
        self._sim0 = utc(start)
        self._mono0 = 0.0

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        return self._sim0 + timedelta(seconds=self._elapsed())

    def monotonic(self) -> float:
        return self._mono0 + self._elapsed()

    def set_speed(self, speed: float) -> None:
        """Change speed without a jump: re-anchor at the current instant first."""
        _check_speed(speed)
        elapsed = self._elapsed()
        self._sim0 += timedelta(seconds=elapsed)
        self._mono0 += elapsed
        self._real0 = self._real()
        self._speed = speed

    def real_seconds(self, sim_seconds: float) -> float:
        """How long to really sleep for `sim_seconds` of simulated time to pass."""
        return sim_seconds / self._speed

    def _elapsed(self) -> float:
        return (self._real() - self._real0) * self._speed


def _check_speed(speed: float) -> None:
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
