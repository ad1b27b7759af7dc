"""Tensor metrics (max_abs, mean_abs, rmse, cosine, SNR dB, per-channel SNR) between a variant and the reference.

Arrays are [samples, *model_shape]. Axes given to these functions are axes of the *array*; callers
translate the manifest's model axes (batch axis included) with :func:`array_axis`.
"""
from __future__ import annotations

import numpy as np

# Identical outputs have an infinite SNR; JSON has no infinity, so it is written as this value (and
# shown as "exact"). It is never used for a metric that does not apply: that is None (n/a).
EXACT_DB = 999.0


def array_axis(model_axis: int, ndim_model: int) -> int:
    """The axis of a [samples, *shape] array that is ``model_axis`` of the model's own shape."""
    return model_axis % ndim_model + 1


def tensor_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Error of ``out`` against ``ref`` over whole samples; arrays are [samples, ...]."""
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shape {list(out.shape)} differs from the reference {list(ref.shape)}")
    err = out - ref
    cos = sample_cosines(ref.reshape(len(ref), -1), out.reshape(len(out), -1))
    signal = float(np.sum(ref * ref))
    noise = float(np.sum(err * err))
    snr = float("inf") if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else float("-inf"))
    return {
        "max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
        "mean_abs": float(np.mean(np.abs(err))) if err.size else 0.0,
        "rmse": float(np.sqrt(np.mean(err * err))) if err.size else 0.0,
        "cosine": float(np.mean(cos)) if cos.size else 1.0,
        "cosine_worst": float(np.min(cos)) if cos.size else 1.0,
        "snr_db": snr,
    }


def sample_cosines(r: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Cosine of each row pair; two all-zero rows agree (1.0), one all-zero row does not (0.0)."""
    rn = np.linalg.norm(r, axis=1)
    on = np.linalg.norm(o, axis=1)
    both_zero = (rn == 0) & (on == 0)
    norms = rn * on
    dots = np.sum(r * o, axis=1)
    return np.where(both_zero, 1.0, dots / np.where(norms == 0, np.inf, norms))


def channel_snr_min(ref: np.ndarray, out: np.ndarray, axis: int | None, floor: float = 1e-3) -> dict:
    """Worst per-channel SNR (dB) along a declared array ``axis``, and which channel it is.

    Every channel is measured: a near-silent channel's signal power is raised to ``floor`` squared
    (an absolute floor in the output's units) instead of being left out, so class scores that live
    near zero still count when quantization rounds them away. ``axis=None`` means the output has no
    declared channel axis: the metric is n/a (None), never a number that reads as perfect.
    """
    if axis is None:
        return {"channel_snr_db_min": None, "worst_channel": None}
    r = np.moveaxis(np.asarray(ref, dtype=np.float64), axis, 0).reshape(ref.shape[axis], -1)
    o = np.moveaxis(np.asarray(out, dtype=np.float64), axis, 0).reshape(ref.shape[axis], -1)
    signal = np.maximum(np.mean(r * r, axis=1), floor * floor)
    noise = np.mean((o - r) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        snr = np.where(noise == 0, EXACT_DB, 10 * np.log10(signal / np.maximum(noise, 1e-300)))
    worst = int(np.argmin(snr))
    return {"channel_snr_db_min": float(min(snr[worst], EXACT_DB)), "worst_channel": worst}


def round_metric(v):
    """Six significant digits (stable across CPUs' last-bit differences); None stays None (n/a)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    v = float(v)
    if not np.isfinite(v):
        return EXACT_DB if v > 0 else -EXACT_DB
    if v == 0:
        return 0.0
    return float(f"{v:.6g}")
