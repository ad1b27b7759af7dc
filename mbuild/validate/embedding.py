"""Embeddings: per-sample cosine (mean and worst) and nearest-neighbour agreement among the validation samples."""
from __future__ import annotations

import numpy as np

from mbuild.validate.metrics import array_axis, sample_cosines


def embedding_metrics(ref: np.ndarray, out: np.ndarray, model_axis: int | None) -> dict:
    """A collapsed embedding (one sample mapped anywhere) shows in the worst cosine and in the neighbours."""
    ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    if model_axis is None:
        r, o = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    else:
        axis = array_axis(model_axis, ref.ndim - 1)
        r = np.moveaxis(ref, axis, -1).reshape(-1, ref.shape[axis])
        o = np.moveaxis(out, axis, -1).reshape(-1, out.shape[axis])
    cos = sample_cosines(r, o)
    result = {"embedding_cosine": float(np.mean(cos)), "embedding_cosine_worst": float(np.min(cos)),
              "worst_sample": int(np.argmin(cos)), "nn_agreement": None}
    if len(r) >= 3:
        result["nn_agreement"] = float(np.mean(_nearest(r) == _nearest(o)))
    return result


def _nearest(x: np.ndarray) -> np.ndarray:
    """Index of each row's most similar other row (cosine similarity)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms == 0, 1.0, norms)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return np.argmax(sims, axis=1)
