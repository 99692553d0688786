"""Detectors: is a run's feature vector unusual against its baseline, and which feature makes it so.

`mad` (the default) needs nothing beyond the standard library: per feature, the robust z-score
`(x - median) / (1.4826 * MAD)` against the baseline, the modified z-score of Iglewicz and Hoaglin. It is
cheap enough to compute during evaluation.

Any other name is a PyOD model (`knn`, `iforest`, `lof`, `ecod`, ...) from the optional `anomaly` extra.
PyOD is imported only when such a rule is evaluated, never when `sentinel.rules` is. A model is fitted in a
worker thread (`ModelCache`), since the rule engine evaluates synchronously on the event loop; evaluation
uses the last model fitted for that baseline and segment, and asks for a new fit once `refit_every` more
runs were learned or `refit_interval` passed with any new run. Until the first fit finishes a rule has no
verdict. Models are fitted on robustly scaled features (median / MAD per feature) with a fixed
`random_state`, on at most the baseline's bounded samples.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import statistics
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from loguru import logger

from sentinel.anomaly.features import floor

Direction = Literal["slow", "fast", "both"]
BUILTIN = "mad"
PYOD_HINT = "pip install orchestration-sentinel[anomaly]"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RANDOM_STATE = 42
MAD_TO_SIGMA = 1.4826  # MAD * this estimates the standard deviation of normal data


@dataclass(frozen=True, slots=True)
class Stats:
    """A feature's baseline: centre and spread for scores, `low`–`high` (p10–p90) for "usual" in messages."""

    center: float
    scale: float
    low: float
    high: float


def robust_stats(feature: str, values: Sequence[float]) -> Stats:
    ordered = sorted(values)
    center = statistics.median(ordered)
    mad = statistics.median(abs(v - center) for v in ordered)
    scale = max(MAD_TO_SIGMA * mad, floor(feature, center))
    return Stats(center, scale, _quantile(ordered, 0.1), _quantile(ordered, 0.9))


def _quantile(ordered: Sequence[float], q: float) -> float:
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Verdict:
    anomalous: bool
    feature: str  # the feature furthest from usual (in the rule's direction)
    value: float
    z: float  # that feature's robust z-score (signed: > 0 above usual)
    score: float  # what the detector compared with `threshold`: |z| for mad, the model's outlier score for PyOD
    threshold: float
    stats: Stats


def allowed(z: float, direction: Direction) -> bool:
    return direction == "both" or (z > 0 if direction == "slow" else z < 0)


def explain(x: Mapping[str, float], stats: Mapping[str, Stats], direction: Direction) -> tuple[str, float] | None:
    """The feature whose robust z-score is largest in the allowed direction, with that score."""
    best: tuple[str, float] | None = None
    for f, st in stats.items():
        z = (x[f] - st.center) / st.scale
        if allowed(z, direction) and (best is None or abs(z) > abs(best[1])):
            best = (f, z)
    return best


def mad_verdict(
    x: Mapping[str, float], stats: Mapping[str, Stats], threshold: float, direction: Direction
) -> Verdict | None:
    top = explain(x, stats, direction)
    if top is None:
        return None
    f, z = top
    return Verdict(abs(z) > threshold, f, x[f], z, abs(z), threshold, stats[f])


# -- PyOD ------------------------------------------------------------------------------------------------

_AVAILABLE: bool | None = None


def pyod_available() -> bool:
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            _AVAILABLE = importlib.util.find_spec("pyod") is not None
        except (ImportError, ValueError):
            _AVAILABLE = False
    return _AVAILABLE


def pyod_class(name: str) -> type:
    """The PyOD model class called `name` (case-insensitively), from `pyod.models.<name>`."""
    if not NAME.match(name) or name == "base":
        raise LookupError(f"unknown PyOD detector {name!r}")
    try:
        module = importlib.import_module(f"pyod.models.{name}")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "pyod":
            raise LookupError(f"PyOD detector {name!r} needs {exc.name}, which is not installed") from None
        raise LookupError(f"unknown PyOD detector {name!r} (e.g. knn, iforest, lof, ecod, copod, hbos)") from None
    for attr in vars(module).values():
        if isinstance(attr, type) and attr.__name__.lower() == name and attr.__module__ == module.__name__:
            return attr
    raise LookupError(f"unknown PyOD detector {name!r}: pyod.models.{name} has no class of that name")


def detector_problem(name: str) -> str | None:
    """Why a detector name cannot work here, or None: what `sentinel check` reports."""
    if name == BUILTIN:
        return None
    if not pyod_available():
        return f"detector {name!r} needs `{PYOD_HINT}`"
    try:
        pyod_class(name)
    except LookupError as exc:
        return str(exc)
    return None


def check_message(alert: object, name: str) -> str | None:
    """`sentinel check`'s line for a rule's detector, or None when the detector can run here."""
    if name != BUILTIN and not pyod_available():
        return f"rule {alert!r} uses detector {name!r} which needs `{PYOD_HINT}`"
    problem = detector_problem(name)
    return None if problem is None else f"rule {alert!r}: {problem}"


@dataclass(frozen=True)
class FittedModel:
    model: Any
    features: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    newest: int  # learning sequence number of the newest run it was fitted on: how many runs came since
    fitted_at: datetime
    rows: int
    seconds: float  # how long the fit took (wall clock), for the bench and debugging


def fit_model(
    name: str,
    contamination: float,
    features: tuple[str, ...],
    rows: Sequence[Sequence[float]],
    newest: int = -1,
    fitted_at: datetime | None = None,
) -> FittedModel:
    """Fit a PyOD model on robustly scaled rows. CPU-bound and blocking: call it in a worker thread."""
    import time

    import numpy as np

    begin = time.perf_counter()
    _quiet_sklearn()
    cols = list(zip(*rows, strict=True))
    stats = [robust_stats(f, c) for f, c in zip(features, cols, strict=True)]
    center = tuple(s.center for s in stats)
    scale = tuple(s.scale for s in stats)
    data = (np.asarray(rows, dtype=float) - np.asarray(center)) / np.asarray(scale)
    cls = pyod_class(name)
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {"contamination": contamination}
    if "random_state" in params:
        kwargs["random_state"] = RANDOM_STATE
    if "n_neighbors" in params:
        # PyOD's default (5 or 20) is larger than a young baseline: never ask for more neighbours than rows.
        default = params["n_neighbors"].default
        kwargs["n_neighbors"] = max(1, min(int(default), len(rows) - 1))
    model = cls(**kwargs)
    model.fit(data)
    return FittedModel(
        model, features, center, scale, newest, fitted_at or datetime.min, len(rows),
        time.perf_counter() - begin,
    )  # fmt: skip


_SKLEARN_NOISE = r".*sklearn\.utils\.parallel\.delayed.*"


def _quiet_sklearn() -> None:
    # PyOD's IForest calls sklearn's `delayed` without sklearn's `Parallel`, and sklearn warns on every
    # fit and score: noise in the daemon's log that says nothing about the user's pipelines. Checked on
    # every call, since `warnings.catch_warnings` in another thread (PyOD uses it) can restore a filter
    # list from before this one was added.
    import warnings

    if not any(f[0] == "ignore" and f[1] is not None and f[1].pattern == _SKLEARN_NOISE for f in warnings.filters):
        warnings.filterwarnings("ignore", message=_SKLEARN_NOISE, category=UserWarning)


def model_score(fitted: FittedModel, x: Sequence[float]) -> tuple[float, float]:
    """The model's outlier score for one run and its fitted threshold (`contamination` of the training
    scores lie above it): the run is an outlier when the score is above the threshold."""
    import numpy as np

    _quiet_sklearn()
    row = (np.asarray([x], dtype=float) - np.asarray(fitted.center)) / np.asarray(fitted.scale)
    return float(fitted.model.decision_function(row)[0]), float(fitted.model.threshold_)


@dataclass
class _Slot:
    model: FittedModel | None = None
    pending: Future[FittedModel] | None = None
    failed_at: datetime | None = None


class ModelCache:
    """Fitted PyOD models per (rule settings, pipeline, segment), fitted one at a time in a worker thread.

    `get` never blocks: it returns the last model fitted (or None) and, when that one is missing or stale,
    submits a fit whose result a later `get` picks up. Stale means `refit_every` runs were learned since
    (`fresh(newest run the model saw)` counts them), or `refit_interval` passed and at least one was.
    Bounded to `max_models` (least recently used out).
    """

    def __init__(self, max_models: int = 10_000) -> None:
        self.max_models = max_models
        self._slots: OrderedDict[Any, _Slot] = OrderedDict()
        self.failures = 0
        # Fits finished so far, counted from the worker thread: a verdict cached before a fit finished is
        # stale once this moves. (An int += under the GIL; a lost update would only cost a re-score.)
        self.completed = 0

    def get(
        self,
        key: Any,
        *,
        fresh: Callable[[int], int],
        now: datetime,
        refit_every: int,
        refit_interval: timedelta,
        fit: Callable[[], FittedModel],
    ) -> FittedModel | None:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
            while len(self._slots) > self.max_models:
                self._slots.popitem(last=False)
        else:
            self._slots.move_to_end(key)
        if slot.pending is not None and slot.pending.done():
            try:
                slot.model = slot.pending.result()
                slot.failed_at = None
            except Exception as exc:  # a model that cannot fit this data must not stop the other rules
                self.failures += 1
                slot.failed_at = now
                logger.warning("anomaly model fit failed for {}: {}: {}", key, type(exc).__name__, exc)
            slot.pending = None
        m = slot.model
        if slot.failed_at is not None and now - slot.failed_at < refit_interval:
            stale = False  # a fit that failed is tried again after refit_interval, not on every tick
        elif m is None:
            stale = True
        else:
            new = fresh(m.newest)
            stale = new >= refit_every or (new > 0 and now - m.fitted_at >= refit_interval)
        if stale and slot.pending is None:
            slot.pending = _pool().submit(fit)
            slot.pending.add_done_callback(self._done)
        return m

    def _done(self, _future: Future[FittedModel]) -> None:
        self.completed += 1

    def wait(self, timeout: float = 30.0) -> None:
        """Block until every submitted fit has finished (tests, bench, `sentinel test`; never the daemon)."""
        import concurrent.futures

        pending = [s.pending for s in self._slots.values() if s.pending is not None]
        concurrent.futures.wait(pending, timeout=timeout)
        self.completed += 1  # done callbacks may still be on their way: cached verdicts are stale now


_EXECUTOR: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None:
            # One worker for the process: fits are short, and more would only compete with the event loop.
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinel-anomaly-fit")
        return _EXECUTOR
