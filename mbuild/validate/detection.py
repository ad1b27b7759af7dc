"""Detection: decode the reference's and the variant's boxes, match them, and measure what an app would see.

Both sides are decoded the same way (score threshold, class-wise NMS); variant detections are
matched to reference detections of the same class by IoU. A detection whose score only crosses the
threshold by less than ``score_margin`` is matched against the other side decoded at the lowered
threshold, so boundary jitter is not counted as a lost or invented object. Recall says how many of the
reference's detections survive, precision how many of the variant's are real, box IoU how well
the matched boxes sit, and the per-class score error how far the scores moved where they matter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbuild.validate.metrics import array_axis
from mbuild.validate.semantics import Part

MAX_CANDIDATES = 2000  # per sample and side, by score, before NMS


@dataclass(frozen=True)
class DetectionConfig:
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    match_iou: float = 0.5
    max_detections: int = 300
    score_margin: float = 0.05  # a detection whose score only jitters across the threshold by less counts as kept

    def lowered(self) -> "DetectionConfig":
        from dataclasses import replace

        return replace(self, score_threshold=self.score_threshold - self.score_margin)


def part_values(arrays: dict[str, np.ndarray], part: Part) -> np.ndarray:
    """A part as [samples, candidates, entries] (entries: 4 box coordinates, or one score per class)."""
    arr = np.asarray(arrays[part.output], dtype=np.float64)
    axis = array_axis(part.axis, arr.ndim - 1)
    sl = np.take(arr, np.arange(part.start, part.stop), axis=axis)
    sl = np.moveaxis(sl, axis, -1)
    return sl.reshape(len(arr), -1, part.stop - part.start)


def _activate(scores: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-scores))
    if activation == "softmax":
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return scores


def to_xyxy(boxes: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "cxcywh":
        cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    if fmt == "xywh":
        x, y, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
        return np.stack([x, y, x + w, y + h], axis=-1)
    return boxes


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [n, 4] with every box in ``b`` [m, 4] (xyxy)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    same = np.all(a[:, None, :] == b[None, :, :], axis=-1)  # two identical empty boxes agree
    return np.where(union > 0, inter / np.where(union > 0, union, 1), np.where(same, 1.0, 0.0))


def decode_sample(boxes: np.ndarray, scores: np.ndarray, cfg: DetectionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes xyxy [k, 4], classes [k], scores [k]) kept after threshold and class-wise NMS, best first."""
    cls = scores.argmax(axis=1)
    conf = scores[np.arange(len(scores)), cls]
    keep = np.flatnonzero(conf >= cfg.score_threshold)
    keep = keep[np.argsort(-conf[keep], kind="stable")][:MAX_CANDIDATES]
    chosen: list[int] = []
    suppressed = np.zeros(len(keep), dtype=bool)
    ious = iou_matrix(boxes[keep], boxes[keep])
    for i in range(len(keep)):
        if suppressed[i]:
            continue
        chosen.append(keep[i])
        if len(chosen) >= cfg.max_detections:
            break
        same = cls[keep] == cls[keep[i]]
        suppressed |= same & (ious[i] > cfg.iou_threshold)
    idx = np.asarray(chosen, dtype=int)
    return boxes[idx].reshape(-1, 4), cls[idx], conf[idx]


def match(ref: tuple, out: tuple, match_iou: float) -> list[float]:
    """IoUs of greedy same-class matches, reference detections taken best first."""
    rb, rc, _ = ref
    ob, oc, _ = out
    used = np.zeros(len(ob), dtype=bool)
    ious = iou_matrix(rb, ob)
    matched = []
    for i in range(len(rb)):
        cand = np.flatnonzero((oc == rc[i]) & ~used)
        if not len(cand):
            continue
        j = cand[np.argmax(ious[i, cand])]
        if ious[i, j] >= match_iou:
            used[j] = True
            matched.append(float(ious[i, j]))
    return matched


def detection_metrics(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], parts: dict[str, Part],
                      cfg: DetectionConfig) -> dict:
    """Recall and precision of the reference's detections, mean IoU of matched boxes, worst per-class score error."""
    bp, sp = parts["boxes"], parts["scores"]
    rb = to_xyxy(part_values(ref, bp), bp.format)
    ob = to_xyxy(part_values(out, bp), bp.format)
    rs = _activate(part_values(ref, sp), sp.activation)
    os_ = _activate(part_values(out, sp), sp.activation)
    ref_total = out_total = 0
    ious: list[float] = []
    precise = 0
    low = cfg.lowered()
    for s in range(len(rb)):
        r, o = decode_sample(rb[s], rs[s], cfg), decode_sample(ob[s], os_[s], cfg)
        ref_total += len(r[0])
        out_total += len(o[0])
        # recall: the reference's detections the variant still finds (scores may jitter by score_margin);
        # precision: the variant's detections that the reference also has, the same way round
        ious += match(r, decode_sample(ob[s], os_[s], low), cfg.match_iou)
        precise += len(match(o, decode_sample(rb[s], rs[s], low), cfg.match_iou))
    relevant = (rs >= cfg.score_threshold) | (os_ >= cfg.score_threshold)
    per_class = np.where(relevant, np.abs(os_ - rs), 0.0).max(axis=(0, 1))
    worst = int(np.argmax(per_class)) if per_class.size else None
    return {
        "recall": len(ious) / ref_total if ref_total else None,
        "precision": precise / out_total if out_total else None,
        "box_iou": float(np.mean(ious)) if ious else None,
        "score_error_max": float(per_class[worst]) if worst is not None else None,
        "worst_class": worst,
        "reference_detections": ref_total,
        "variant_detections": out_total,
        "matched": len(ious),
    }
