"""Anomaly detection over run features: what `when: anomaly` learns from and judges with.

- `features`: the numbers a finished run is described by (duration, start delay, ...).
- `baseline`: per-pipeline bounded samples of those numbers, segmented and reset on a new version.
- `detectors`: the built-in robust z-score (`mad`, pure Python) and PyOD models (optional extra,
  imported lazily, fitted off the event loop).
- `evalset`: a labelled synthetic history to measure detectors with (`bench/anomaly.py`).
"""
