"""Garbage-collector settings for the long-running daemon (not for tests or one-shot commands).

CPython collects its youngest generation every 700 container allocations. Intake and delivery allocate
several tracked objects per alert (label tuples, alerts, payload dicts), almost none of them in cycles, so
on a burst of 10,000 alerts the default spent ~15% of the daemon's CPU in collections that freed nothing
(measured with bench/alert_pipeline.py: 1.05 CPU-s with the defaults, 0.9 with the youngest threshold at
10,000). Python 3.13 raised its own default for the same reason. What startup built (modules, config) lives
as long as the process: freezing it keeps full collections from walking it again and again.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def tune_for_daemon() -> None:
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
