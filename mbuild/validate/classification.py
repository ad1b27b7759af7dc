"""Classification and segmentation: agreement of the predicted class with the reference, along the class axis."""
from __future__ import annotations

import numpy as np

from mbuild.validate.metrics import array_axis


def _rows(arr: np.ndarray, axis: int) -> np.ndarray:
    """[samples, *shape] -> [rows, classes] with the class axis last (one row per sample and position)."""
    a = np.moveaxis(np.asarray(arr, dtype=np.float64), axis, -1)
    return a.reshape(-1, a.shape[-1])


def default_margin(ref: np.ndarray, model_axis: int) -> float:
    """5% of the reference's median spread along the class axis (logits and probabilities alike)."""
    r = _rows(ref, array_axis(model_axis, ref.ndim - 1))
    return float(0.05 * np.median(r.max(axis=1) - r.min(axis=1)))


def classification_metrics(ref: np.ndarray, out: np.ndarray, model_axis: int, labels: np.ndarray | None = None,
                           margin: float | None = None) -> dict:
    """Top-1/top-5 agreement (all samples and confident ones), and task accuracy when labels exist.

    A sample is confident when the reference's top-1 beats its top-2 by at least ``margin`` in the
    output's units; near-ties (0.244 vs 0.235 on a photo with none of the classes in it) flip under
    any rounding and say nothing about the variant.
    """
    axis = array_axis(model_axis, ref.ndim - 1)
    r, o = _rows(ref, axis), _rows(out, axis)
    classes = r.shape[1]
    ref_top1, out_top1 = r.argmax(axis=1), o.argmax(axis=1)
    k = min(5, classes)
    out_topk = np.argsort(-o, axis=1)[:, :k]
    ordered = np.sort(r, axis=1)
    ref_margin = ordered[:, -1] - ordered[:, -2]
    margin = default_margin(ref, model_axis) if margin is None else float(margin)
    confident = ref_margin >= margin
    agree = ref_top1 == out_top1
    result = {
        "top1_agreement": float(np.mean(agree)),
        "top5_agreement": float(np.mean(np.any(out_topk == ref_top1[:, None], axis=1))),
        "top1_agreement_confident": float(np.mean(agree[confident])) if confident.any() else None,
        "confident_samples": int(confident.sum()),
        "margin": margin,
    }
    if labels is not None and len(labels) == len(r):
        ref_acc = float(np.mean(ref_top1 == labels)) * 100
        acc = float(np.mean(out_top1 == labels)) * 100
        result.update({"accuracy": acc, "reference_accuracy": ref_acc, "accuracy_drop": ref_acc - acc})
    return result


def segmentation_metrics(ref: np.ndarray, out: np.ndarray, model_axis: int | None, threshold: float = 0.5,
                         activation: str = "none") -> dict:
    """Mask IoU and pixel agreement of the reference's and the variant's masks.

    With a class axis of 2 or more entries, each position takes its argmax class and the IoU is
    reported per class present in either mask (mean and worst); otherwise the map is binary at
    ``threshold`` after ``activation``.
    """
    ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    multi = model_axis is not None and ref.shape[array_axis(model_axis, ref.ndim - 1)] > 1
    if multi:
        axis = array_axis(model_axis, ref.ndim - 1)
        rm, om = np.argmax(ref, axis=axis), np.argmax(out, axis=axis)
        classes = ref.shape[axis]
    else:
        act = _activation(activation)
        rm, om = (act(ref) >= threshold).astype(int), (act(out) >= threshold).astype(int)
        classes = 2
    ious = []
    first = 1 if not multi else 0  # a binary map: the foreground's IoU only
    for c in range(first, classes):
        inter = np.sum((rm == c) & (om == c))
        union = np.sum((rm == c) | (om == c))
        if union:
            ious.append(inter / union)
    return {"mask_iou": float(np.mean(ious)) if ious else None,
            "mask_iou_worst": float(np.min(ious)) if ious else None,
            "pixel_agreement": float(np.mean(rm == om))}


def _activation(name: str):
    if name == "sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if name == "softmax":
        raise ValueError("softmax needs a class axis; declare 'axis:' for a multi-class map")
    return lambda x: x
