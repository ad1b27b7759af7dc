"""mbuild vs the same conversions called directly: wall time of each, repeated, and the ratio."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

from _common import ROOT, WORK, doit, fmt, make_project, stats

MANIFEST = """\
mbuild: 1
name: digits-overhead
version: 1.0.0
source:
  pytorch: {model: ../examples/digits/model.py:DigitsCNN, weights: ../examples/digits/weights.pt}
inputs:
  image: {shape: [1, 1, 8, 8], dtype: float32, range: [0, 1], layout: NCHW}
outputs:
  logits: {kind: classification}
data:
  calibration: {npz: ../examples/digits/calib.npz, inputs: {image: x}, limit: 128}
  validation: {npz: ../examples/digits/val.npz, inputs: {image: x}, labels: y}
recipes:
  fp32: {precision: fp32}
  int8: {quantize: {scheme: static, weights: int8, activations: int8, calibration: calibration}}
  int8-dyn: {quantize: {scheme: dynamic, weights: int8}}
targets:
  cpu-fp32: {runtime: onnxruntime, recipe: fp32}
  cpu-int8: {runtime: onnxruntime, recipe: int8}
  cpu: {runtime: onnxruntime, recipe: int8-dyn}
  tflite-fp32: {runtime: tflite, recipe: fp32}
validate:
  int8: {cosine_min: 0.99}
  int8-dyn: {cosine_min: 0.99}
"""


def run(reps: int = 3) -> dict:
    direct, convert_only, full = [], [], []
    for _ in range(reps):
        out = WORK / "direct"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "bench" / "_direct.py"), str(out), str(ROOT)], check=True,
                       capture_output=True)
        direct.append(time.perf_counter() - start)
        project = make_project(WORK / "overhead", manifests=False)
        (project / "manifests").mkdir()
        (project / "manifests" / "digits.yaml").write_text(MANIFEST)
        t1, out1, rc1 = doit(project, "variant")
        t2, out2, rc2 = doit(project)
        if rc1 or rc2:
            raise SystemExit(f"overhead build failed:\n{out1[-2000:]}\n{out2[-2000:]}")
        convert_only.append(t1)
        full.append(t1 + t2)
    d, c, f = stats(direct), stats(convert_only), stats(full)
    return {"direct": d, "convert": c, "full": f, "ratio_convert": c["median"] / d["median"],
            "ratio_full": f["median"] / d["median"]}


def table(r: dict) -> str:
    return "\n".join([
        "| path (digits CNN: ONNX fp32, ORT int8 static + dynamic, TFLite fp32) | wall time | ratio to direct |",
        "|---|---|---|",
        f"| direct: the converter calls in one Python process (bench/_direct.py) | {fmt(r['direct'])} | 1.00 |",
        f"| mbuild `doit variant` (source task + 4 variants, each step its own process) | {fmt(r['convert'])} | "
        f"{r['ratio_convert']:.2f} |",
        f"| mbuild full `doit` (+ checks on the validation set, latency, bundle) | {fmt(r['full'])} | "
        f"{r['ratio_full']:.2f} |",
    ])
