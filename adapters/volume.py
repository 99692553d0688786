"""A successful run's data volume (`volume:` of a source): which runs to ask about, parsing what comes back.

Schedulers hand the number back in many shapes: a JSON number, the same number as a string (Prefect
artifacts are JSON-encoded text, Airflow 2 stringifies XComs), or a JSON string holding it. Anything else
(a dict, a sentence, NaN) is no volume rather than a guess.
"""

from __future__ import annotations

import fnmatch
import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import orjson

from sentinel.model import RunState, RunUpdate, VolumeSpec

MAX_TEXT = 64  # longer text is no number anyone pushed on purpose
MEMO_SIZE = 2048  # runs whose volume was read; bounds memory, the oldest are forgotten first


def parse_volume(value: Any, _depth: int = 0) -> float | None:
    """A finite number from what the scheduler stored, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or _depth > 1:
        return None
    text = value.strip()
    if not text or len(text) > MAX_TEXT:
        return None
    if text[:2] in ("b'", 'b"') and text[-1:] == text[1]:
        text = text[2:-1]  # the repr of bytes, as an old Airflow may stringify a raw XCom
    try:
        return parse_volume(float(text), _depth + 1)
    except ValueError:
        pass
    try:
        return parse_volume(orjson.loads(text), _depth + 1)
    except orjson.JSONDecodeError:
        return None


class VolumeMemo:
    """Which runs want a volume, and each run's volume once read: a run is asked about at most once."""

    def __init__(self, spec: VolumeSpec) -> None:
        self.spec = spec
        self._seen: OrderedDict[Hashable, float | None] = OrderedDict()

    def wants(self, run: RunUpdate) -> bool:
        if run.state is not RunState.SUCCESS:
            return False
        return any(fnmatch.fnmatchcase(run.pipeline, p) for p in self.spec.pipelines)

    @staticmethod
    def key(run: RunUpdate) -> Hashable:
        # ended_at too: a cleared and re-run DAG run ends again, and may have pushed another number.
        return (run.pipeline, run.run_id, run.ended_at)

    def known(self, run: RunUpdate) -> bool:
        return self.key(run) in self._seen

    def remember(self, run: RunUpdate, volume: float | None) -> None:
        self._seen[self.key(run)] = volume
        self._seen.move_to_end(self.key(run))
        while len(self._seen) > MEMO_SIZE:
            self._seen.popitem(last=False)

    def apply(self, run: RunUpdate) -> RunUpdate:
        volume = self._seen.get(self.key(run))
        return run if volume is None else run.model_copy(update={"volume": volume})
