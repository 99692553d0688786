"""Garbage-collector settings for the long-running daemon and the backtest (not for tests).

CPython collects its youngest generation every 700 container allocations. Intake and delivery allocate
several tracked objects per alert (label tuples, alerts, payload dicts), almost none of them in cycles, so
on a burst of 10,000 alerts the default spent ~15% of the daemon's CPU in collections that freed nothing
(measured with bench/alert_pipeline.py: 1.05 CPU-s with the defaults, 0.9 with the youngest threshold at
10,000). Python 3.13 raised its own default for the same reason. What startup built (modules, config) lives
as long as the process: freezing it keeps full collections from walking it again and again.

A backtest is the same story at a larger scale: hundreds of thousands of runs read, then snapshots of each
replayed, all acyclic and all kept to the end. With the defaults a 30-day, 1,000-pipeline backtest spent a
sixth of its time collecting (bench/backtest.py: 62-66 s with the defaults, 51-52 s tuned).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000


def tune_for_daemon() -> None:
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


@contextmanager
def tuned_for_batch() -> Iterator[None]:
    """The daemon's young-generation threshold for a one-shot command, restored on the way out (tests run
    commands in-process)."""
    old = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # unfreeze() thaws everything: only undo a freeze of our own
    if freeze:
        gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        if freeze:
            gc.unfreeze()
