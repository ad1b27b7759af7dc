"""Regression: the error in the output's own units, relative to its declared or observed range."""
from __future__ import annotations

import numpy as np


def regression_metrics(ref: np.ndarray, out: np.ndarray, declared: tuple[float, float] | None) -> dict:
    ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    if declared is not None:
        lo, hi, source = float(declared[0]), float(declared[1]), "declared"
    else:
        lo, hi, source = float(np.min(ref)), float(np.max(ref)), "observed in the reference"
    width = hi - lo
    err = np.abs(out - ref)
    if width <= 0:
        return {"range_error": None, "mean_range_error": None, "range": [lo, hi], "range_source": source}
    return {"range_error": float(np.max(err) / width), "mean_range_error": float(np.mean(err) / width),
            "range": [lo, hi], "range_source": source}
