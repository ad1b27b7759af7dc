"""Shared base conversions: one convert: task per runtime and conversion path, exact digests.

Two Core ML targets at the same deployment target and precision derive from one ML Program;
changing one target's compression re-runs that target's variant, never the shared conversion.
"""
from __future__ import annotations

import pytest

from tests.conftest import DIGITS_CPU, executed_tasks, make_project, run_doit

pytest.importorskip("coremltools")

COREML = DIGITS_CPU.replace("""  int8: {quantize: {scheme: static, calibration: calibration}}
targets:
  cpu-fp32: {runtime: onnxruntime, recipe: fp32}
  cpu-int8: {runtime: onnxruntime, recipe: int8}
""", """  int8: {quantize: {scheme: static, calibration: calibration}}
  w8: {precision: fp16, quantize: {scheme: weight_only, weights: int8}}
targets:
  ios-ane: {runtime: coreml, compute_units: cpu_and_ne, min_os: "16.0", recipe: fp16}
  ios-w8: {runtime: coreml, compute_units: all, min_os: "16.0", recipe: w8}
  cpu-fp32: {runtime: onnxruntime, recipe: fp32}
  cpu-int8: {runtime: onnxruntime, recipe: int8}
""")


def test_core_ml_variants_share_one_conversion_and_a_compression_edit_keeps_it(tmp_path):
    assert "ios-w8" in COREML
    project = make_project(tmp_path / "p", {"digits.yaml": COREML})
    first = run_doit(project, "variant", check=True)
    convert = {t for t in executed_tasks(first.stdout) if t.startswith("convert:")}
    assert convert == {"convert:digits-cnn/coreml-iOS16-fp16", "convert:digits-cnn/onnxruntime-prepared",
                       "convert:digits-cnn/onnxruntime-opset13"}, first.stdout

    manifest = project / "manifests" / "digits.yaml"
    manifest.write_text(manifest.read_text().replace("weights: int8}}", "weights: int8, granularity: per_tensor}}"))
    again = run_doit(project, "variant", check=True)
    assert executed_tasks(again.stdout) == {"variant:digits-cnn/ios-w8"}, again.stdout
    record = (project / "build/digits-cnn/targets/ios-w8/variant/variant.json").read_text()
    assert "per-tensor" in record
