"""Recurrent state over a stream: the model runs step after step, each step fed the state it produced.

Per-sample checks feed every step the reference's own state, so a variant whose state drifts a
little each step looks perfect there; over a stream the error compounds, as it does on a device.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mbuild.validate.metrics import sample_cosines

STREAM_STEPS_MAX = 64


def run_stream(step: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], inputs: dict[str, np.ndarray],
               feedback: dict[str, str], steps: int | None = None) -> dict[str, np.ndarray]:
    """Outputs over ``steps`` consecutive samples, ``feedback`` (output -> input) fed from the previous step.

    ``step`` runs one sample: it takes {input: array of shape [1, *shape]} and returns
    {output: array [1, *shape]}. The first step uses the data set's own state inputs.
    """
    count = len(next(iter(inputs.values())))
    steps = min(count, steps or STREAM_STEPS_MAX)
    collected: dict[str, list] = {}
    carried: dict[str, np.ndarray] = {}
    for i in range(steps):
        feed = {k: v[i:i + 1] for k, v in inputs.items()}
        for inp, value in carried.items():
            feed[inp] = value.astype(feed[inp].dtype, copy=False).reshape(feed[inp].shape)
        result = step(feed)
        for name, value in result.items():
            collected.setdefault(name, []).append(np.asarray(value)[0])
        carried = {inp: np.asarray(result[out]) for out, inp in feedback.items()}
    return {k: np.stack(v) for k, v in collected.items()}


def stream_metrics(ref: np.ndarray, out: np.ndarray) -> dict:
    """Worst and last per-step cosine and the largest error over the stream."""
    r = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    o = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
    cos = sample_cosines(r, o)
    return {"stream_cosine": float(np.min(cos)), "stream_cosine_final": float(cos[-1]),
            "stream_worst_step": int(np.argmin(cos)), "stream_max_abs": float(np.max(np.abs(o - r))),
            "stream_steps": len(r)}
