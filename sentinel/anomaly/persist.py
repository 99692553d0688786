"""Baselines survive a restart: each pipeline's learned runs are saved to the store and loaded back.

The history a restart restores holds the last 100 runs of a pipeline, while a baseline holds up to 1,000;
without this, anomaly rules would judge against a tenth of what they knew the minute before. A pipeline's
baselines are one row (columns as base64 of their doubles, ~90 KB at 1,000 runs), written when they changed
and at most every `SAVE_EVERY` (and on stop), encoded off the event loop. The ids of the runs already learned
are saved with them, so the runs the restored history still holds are not learned twice.
"""

from __future__ import annotations

import asyncio
import base64
from array import array
from datetime import datetime, timedelta
from typing import Any

import orjson
from loguru import logger

from sentinel.anomaly.baseline import Baseline, BaselineStore, PipelineBaselines, store_for
from sentinel.anomaly.features import FEATURES
from sentinel.observe.history import History
from sentinel.store import Store

NS = "anomaly_baselines"
SAVE_EVERY = timedelta(minutes=5)
CHUNK = 64  # pipelines copied per turn of the event loop
_SEP = "\x1f"


def _col(a: array[Any]) -> str:
    return base64.b64encode(a.tobytes()).decode()


def _array(kind: str, text: str) -> array[Any]:
    a = array(kind)
    a.frombytes(base64.b64decode(text))
    return a


def dump_baseline(b: Baseline) -> dict[str, Any]:
    return {
        "max_samples": b.max_samples,
        "version": b.version,
        "generation": b.generation,
        "next_seq": b.next_seq,
        "head": b.head,
        "at": _col(b.at),
        "seq": _col(b.seq),
        "cols": {f: _col(c) for f, c in b.cols.items()},
    }


def load_baseline(d: dict[str, Any]) -> Baseline:
    b = Baseline(int(d["max_samples"]))
    b.version, b.generation, b.next_seq = d["version"], int(d["generation"]), int(d["next_seq"])
    b.at, b.seq = _array("d", d["at"]), _array("q", d["seq"])
    n = len(b.at)
    # A feature added since the row was written has no values yet: NaN is "this run lacks it".
    b.cols = {f: _array("d", d["cols"][f]) if f in d["cols"] else array("d", [float("nan")] * n) for f in FEATURES}
    if len(b.seq) != n or any(len(c) != n for c in b.cols.values()) or n > b.max_samples:
        raise ValueError("columns of different lengths")
    b.head = int(d["head"]) if n == b.max_samples else 0
    return b


def dump_pipeline(pb: PipelineBaselines) -> dict[str, Any]:
    return {
        "runs": dump_baseline(pb.runs),
        "tasks": {name: dump_baseline(b) for name, b in pb.tasks.items()},
        "learn_tasks": pb.learn_tasks,
        "learned": list(pb.learned),
    }


def load_pipeline(d: dict[str, Any], max_samples: int) -> PipelineBaselines:
    pb = PipelineBaselines(max_samples)
    pb.runs = load_baseline(d["runs"])
    pb.tasks = {name: load_baseline(t) for name, t in d["tasks"].items()}
    pb.learn_tasks = bool(d["learn_tasks"])
    pb.learned = dict.fromkeys(d["learned"])
    return pb


def _signature(pb: PipelineBaselines) -> tuple[int, ...]:
    return (pb.runs.generation, len(pb.tasks), sum(b.generation for b in pb.tasks.values()))


class BaselinePersistence:
    """Loads the baselines of a daemon's history at start; saves the changed ones now and then, and on stop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._saved: dict[tuple[str, str], tuple[int, ...]] = {}
        self._next_save: datetime | None = None

    async def load(self, history: History) -> int:
        baselines = store_for(history)
        rows = await self.store.all(NS)
        loaded, broken = await asyncio.to_thread(_decode, rows, baselines.max_samples)  # ~0.5 ms a pipeline
        for (source, pipeline), pb in loaded.items():
            baselines.pipelines[(source, pipeline)] = pb
            self._saved[(source, pipeline)] = _signature(pb)
        if broken:
            await self.store.put_many(NS, {}, delete=broken)
        return len(baselines.pipelines)

    async def save(self, history: History, now: datetime, force: bool = False) -> int:
        """Write the baselines that changed since they were last written; at most every SAVE_EVERY unless
        `force`. Returns how many pipelines were written."""
        if not force and self._next_save is not None and now < self._next_save:
            return 0
        self._next_save = now + SAVE_EVERY
        baselines: BaselineStore = store_for(history)
        changed = {k: pb for k, pb in baselines.pipelines.items() if self._saved.get(k) != _signature(pb)}
        if not changed:
            return 0
        signatures = {k: _signature(pb) for k, pb in changed.items()}
        rows: dict[str, bytes] = {}
        items = list(changed.items())
        for i in range(0, len(items), CHUNK):
            # Copied on the loop a chunk at a time (1,000 full pipelines at once held it for ~80 ms), encoded
            # off it: base64 and JSON of ~90 KB a pipeline.
            copies = _snapshot(dict(items[i : i + CHUNK]))
            rows |= await asyncio.to_thread(_encode, copies)
        await self.store.write_many({NS: rows})  # bytes: stored as encoded, nothing serialized on the loop
        self._saved.update(signatures)
        return len(rows)


def _decode(rows: dict[str, Any], max_samples: int) -> tuple[dict[tuple[str, str], PipelineBaselines], list[str]]:
    loaded: dict[tuple[str, str], PipelineBaselines] = {}
    broken: list[str] = []
    for key, d in rows.items():
        source, _, pipeline = key.partition(_SEP)
        try:
            loaded[(source, pipeline)] = load_pipeline(d, max_samples)
        except (KeyError, TypeError, ValueError) as exc:  # an unreadable row: learn that pipeline afresh
            logger.warning("anomaly baseline of {}/{} not restored: {}", source, pipeline, exc)
            broken.append(key)
    return loaded, broken


def _encode(copies: dict[tuple[str, str], PipelineBaselines]) -> dict[str, bytes]:
    return {f"{s}{_SEP}{p}": orjson.dumps(dump_pipeline(pb)) for (s, p), pb in copies.items()}


def _copy(b: Baseline) -> Baseline:
    c = Baseline(b.max_samples)
    c.version, c.generation, c.next_seq, c.head = b.version, b.generation, b.next_seq, b.head
    c.at, c.seq, c.cols = b.at[:], b.seq[:], {f: col[:] for f, col in b.cols.items()}
    return c


def _snapshot(changed: dict[tuple[str, str], PipelineBaselines]) -> dict[tuple[str, str], PipelineBaselines]:
    """Copies made on the loop: the loop keeps learning while a worker thread encodes them."""
    out: dict[tuple[str, str], PipelineBaselines] = {}
    for key, pb in changed.items():
        c = PipelineBaselines(pb.max_samples)
        c.runs, c.tasks = _copy(pb.runs), {name: _copy(b) for name, b in pb.tasks.items()}
        c.learn_tasks, c.learned = pb.learn_tasks, dict(pb.learned)
        out[key] = c
    return out
