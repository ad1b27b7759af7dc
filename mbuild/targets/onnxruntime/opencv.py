"""OpenCV DNN as a second consumer of an onnxruntime variant's .onnx (``also_check: [opencv]``).

Apps that ship one .onnx often load it with OpenCV rather than ONNX Runtime. Running the same
file through ``cv2.dnn`` on the validation set says whether that second consumer agrees with the
source reference, measured with the same metrics and tolerance as the target's own check. The
result is a finding beside the check, never its verdict: a model OpenCV cannot read is recorded
with the reason, and the target's own check still stands on ONNX Runtime's numbers.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from mbuild.targets.base import BuildContext

DIST = "opencv-python-headless"
UNREADABLE = "unreadable"  # OpenCV could not read or run the model: a finding, with the reason
# OpenCV's message prefix: 'OpenCV(5.0.0) /io/opencv/modules/dnn/src/x.cpp:449: error: (-215:Assertion failed) '
_PREFIX = re.compile(r"OpenCV\([^)]*\) \S+:\d+: error: \(-?\d+:([^)]*)\) ")
_FUNCTION = re.compile(r" in function '[^']*'")


def check_with_opencv(ctx: "BuildContext", artifact: Path, inputs: dict[str, "np.ndarray"],
                      ort_outputs: dict[str, "np.ndarray"] | None = None) -> dict:
    """Run ``artifact`` through cv2.dnn on ``inputs`` and judge it against the reference (a report entry)."""
    from mbuild._io import dist_version

    version = dist_version(DIST)
    try:
        import cv2
    except ImportError:
        return {"status": "skipped", "runtime": "opencv (not installed)",
                "reason": f"{DIST} is not installed; install it with: pip install 'mbuild[opencv]'"}
    missing = _missing_external_data(artifact)
    if missing:
        return {"status": UNREADABLE, "runtime": f"opencv {version}", "stage": "read",
                "reason": f"its external data file {missing} is not beside {artifact.name}"}
    names = list(ctx.manifest.outputs)
    attempts = []
    with _silent(cv2):
        for engine_name in ("default", "classic"):
            engine = cv2.dnn.ENGINE_AUTO if engine_name == "default" else cv2.dnn.ENGINE_CLASSIC
            stage = "read"
            try:
                net = cv2.dnn.readNetFromONNX(str(artifact), engine=engine)
                stage = "run"
                outputs, latencies = _run(net, inputs, names)
            except cv2.error as e:
                attempts.append({"engine": engine_name, "stage": stage, "reason": one_line(e)})
                continue
            break
        else:
            last = attempts[-1]
            return {"status": UNREADABLE, "runtime": f"opencv {version} (cv2.dnn)", "stage": last["stage"],
                    "reason": f"OpenCV {version} cannot {last['stage']} it: {last['reason']}",
                    "attempts": attempts}
    entry = {"runtime": f"opencv {version} (cv2.dnn, {engine_name} engine, CPU)", "engine": engine_name}
    if attempts:
        entry["engine_note"] = (f"the default engine could not {attempts[0]['stage']} it "
                                f"({attempts[0]['reason']}); the classic engine did")
    from mbuild.validate.second_opinion import judge

    entry.update(judge(ctx, outputs))
    import statistics

    entry["median_ms"] = round(statistics.median(latencies), 4) if latencies else None
    if ort_outputs is not None:
        from mbuild.validate.metrics import tensor_metrics

        entry["vs_onnxruntime"] = {n: {"max_abs": float(f"{tensor_metrics(ort_outputs[n], outputs[n])['max_abs']:.3g}")}
                                   for n in names if n in ort_outputs}
    return entry


def _run(net, inputs: dict[str, "np.ndarray"], names: list[str]) -> tuple[dict[str, "np.ndarray"], list[float]]:
    """One forward per sample (the manifest's shapes, batch included); outputs stacked as [samples, *shape]."""
    import numpy as np

    count = len(next(iter(inputs.values())))
    collected: dict[str, list] = {n: [] for n in names}
    latencies = []
    for i in range(count):
        for name, values in inputs.items():
            net.setInput(np.ascontiguousarray(values[i]), name)
        start = time.perf_counter()
        produced = net.forward(names)
        latencies.append((time.perf_counter() - start) * 1000)
        for name, value in zip(names, produced):
            collected[name].append(np.asarray(value))
    return {n: np.stack(v) for n, v in collected.items()}, latencies[1:]


def one_line(error: Exception) -> str:
    """OpenCV's multi-line error as one line: the innermost message, without file paths and function names."""
    text = getattr(error, "err", "") or str(error)
    lines = [ln.strip().lstrip(">").strip() for ln in str(text).splitlines()]
    lines = [ln for ln in lines if ln]
    line = lines[-1] if lines else str(error).strip().splitlines()[-1]
    def kind(match) -> str:  # keep 'Assertion failed', drop 'Unspecified error'
        return "" if match.group(1) == "Unspecified error" else f"{match.group(1).lower()}: "

    return _FUNCTION.sub("", _PREFIX.sub(kind, line)).strip()


def _missing_external_data(path: Path) -> str | None:
    """The first external data file the model names that is not beside it (OpenCV then misreports the cause)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if location and not (path.parent / location).exists():
                return location
    return None


class _silent:
    """OpenCV logs parser errors to stderr itself; the report carries the reason instead."""

    def __init__(self, cv2):
        self.logging = cv2.utils.logging

    def __enter__(self):
        self.level = self.logging.getLogLevel()
        self.logging.setLogLevel(self.logging.LOG_LEVEL_SILENT)

    def __exit__(self, *exc):
        self.logging.setLogLevel(self.level)
