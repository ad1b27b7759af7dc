"""Tensor metrics (max_abs, mean_abs, rmse, cosine, SNR dB) and task metrics (top-k agreement, accuracy)."""
from __future__ import annotations

import numpy as np


def tensor_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Error of ``out`` against ``ref``; arrays are [samples, ...]."""
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shape {list(out.shape)} differs from the reference {list(ref.shape)}")
    err = out - ref
    r = ref.reshape(len(ref), -1)
    o = out.reshape(len(out), -1)
    dots = np.sum(r * o, axis=1)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
    both_zero = (np.linalg.norm(r, axis=1) == 0) & (np.linalg.norm(o, axis=1) == 0)
    cos = np.where(both_zero, 1.0, dots / np.where(norms == 0, np.inf, norms))
    signal = float(np.sum(ref * ref))
    noise = float(np.sum(err * err))
    snr = float("inf") if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else float("-inf"))
    return {
        "channel_snr_db_min": channel_snr_min(ref, out),
        "max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
        "mean_abs": float(np.mean(np.abs(err))) if err.size else 0.0,
        "rmse": float(np.sqrt(np.mean(err * err))) if err.size else 0.0,
        "cosine": float(np.mean(cos)),
        "cosine_worst": float(np.min(cos)),
        "snr_db": snr,
    }


MAX_CHANNELS = 256


def channel_axis(shape: tuple[int, ...]) -> int | None:
    """The channel axis of a [samples, ...] output, or None when it has none worth splitting.

    Candidates are the first and the last axis of each sample ([N, C] logits, [1, 84, 8400] or
    [1, 8400, 84] detector heads); the shorter one with 2..256 entries wins. Spatial maps such as
    [1, 1, H, W] have no channel axis (per-row SNR of a probability map means nothing).
    """
    per_sample = len(shape) - 1
    if per_sample < 1:
        return None
    first = 1 if per_sample == 1 else 2  # skip the batch axis of [N, ...] outputs
    candidates = {first, len(shape) - 1}
    dims = [(shape[a], a) for a in candidates if 1 < shape[a] <= MAX_CHANNELS]
    return min(dims)[1] if dims else None


def channel_snr_min(ref: np.ndarray, out: np.ndarray) -> float:
    """Worst per-channel SNR (dB): catches an output whose small-range channels were crushed.

    A detector output that concatenates box coordinates in [0, 320] with scores in [0, 1] keeps an
    overall cosine of 0.999 when int8 rounds every score to zero; per channel, the scores' SNR is ~0 dB.
    Channels that are nearly silent in the reference (RMS below 1e-3 of the output's) are left out.
    """
    axis = channel_axis(ref.shape)
    if axis is None:
        return 999.0
    r = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1)
    o = np.moveaxis(out, axis, 0).reshape(ref.shape[axis], -1)
    signal = np.mean(r * r, axis=1)
    noise = np.mean((o - r) ** 2, axis=1)
    loud = signal >= (1e-3 ** 2) * float(np.mean(r * r))
    if not np.any(loud):
        return 999.0
    with np.errstate(divide="ignore"):
        snr = 10 * np.log10(signal[loud] / np.maximum(noise[loud], 1e-30))
    return float(min(np.min(snr), 999.0))


def classification_metrics(ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Top-1/top-5 agreement with the reference; task accuracy of both when labels exist."""
    classes = ref.shape[-1]
    r = np.asarray(ref, dtype=np.float64).reshape(-1, classes)
    o = np.asarray(out, dtype=np.float64).reshape(-1, classes)
    ref_top1 = r.argmax(axis=1)
    out_top1 = o.argmax(axis=1)
    k = min(5, classes)
    out_topk = np.argsort(-o, axis=1)[:, :k]
    result = {
        "top1_agreement": float(np.mean(ref_top1 == out_top1)),
        "top5_agreement": float(np.mean([ref_top1[i] in out_topk[i] for i in range(len(r))])),
    }
    if labels is not None and len(labels) == len(r):
        ref_acc = float(np.mean(ref_top1 == labels)) * 100
        acc = float(np.mean(out_top1 == labels)) * 100
        result.update({"accuracy": acc, "reference_accuracy": ref_acc, "accuracy_drop": ref_acc - acc})
    return result


def compare_outputs(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray], kinds: dict[str, str],
                    labels: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per-output metrics; classification outputs also get agreement and accuracy."""
    result = {}
    for name, ref in reference.items():
        if name not in outputs:
            raise ValueError(f"output {name!r} is missing from the variant's results")
        m = tensor_metrics(ref, outputs[name])
        if kinds.get(name) == "classification":
            m.update(classification_metrics(ref, outputs[name], labels))
        result[name] = {k: _round(v) for k, v in m.items()}
    return result


def _round(v: float) -> float:
    """Six significant digits: keeps reports stable across CPUs' last-bit differences."""
    if not np.isfinite(v) or v == 0:
        return float(v) if np.isfinite(v) else (999.0 if v > 0 else -999.0)
    return float(f"{v:.6g}")
