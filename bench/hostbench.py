"""Host measurements shared by the bench tables: ORT latency over repeated runs and agreement with a reference."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _inputs(val: Path) -> dict:
    with np.load(val) as z:
        return {k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("input:")}


def ort_latency(model: Path, val: Path, runs: int = 40, warmup: int = 3) -> list[float]:
    """Per-run wall time (ms), ONNX Runtime CPU, 1 thread, cycling through the validation samples."""
    from mbuild.sources.onnx import session

    sess = session(model)
    inputs = _inputs(val)
    n = len(next(iter(inputs.values())))
    out = []
    for i in range(warmup + runs):
        feed = {k: v[i % n] for k, v in inputs.items()}
        start = time.perf_counter()
        sess.run(None, feed)
        if i >= warmup:
            out.append((time.perf_counter() - start) * 1000)
    return out


def agreement(model: Path, val: Path, ref: Path) -> dict:
    from mbuild.sources.onnx import session

    sess = session(model)
    inputs = _inputs(val)
    with np.load(ref) as z:
        reference = z[z.files[0]]
    n = len(next(iter(inputs.values())))
    outs = np.stack([sess.run(None, {k: v[i] for k, v in inputs.items()})[0] for i in range(n)])
    a, b = reference.reshape(n, -1), outs.reshape(n, -1)
    cos = float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    return {"top1": float(np.mean(a.argmax(1) == b.argmax(1))), "cosine": cos}
