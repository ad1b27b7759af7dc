"""Shared base conversions: one convert: task per runtime and conversion path, exact digests.

Two Core ML targets at the same deployment target and precision derive from one ML Program;
changing one target's compression re-runs that target's variant, never the shared conversion.
"""
from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import DIGITS_CPU, executed_tasks, make_project, run_doit

needs_coremltools = pytest.mark.skipif(importlib.util.find_spec("coremltools") is None, reason="needs coremltools")

COREML = DIGITS_CPU.replace("""  int8: {quantize: {scheme: static, calibration: calibration}}
targets:
  cpu-fp32: {runtime: onnxruntime, recipe: fp32}
  cpu-int8: {runtime: onnxruntime, recipe: int8}
""", """  w8: {precision: fp16, quantize: {scheme: weight_only, weights: int8}}
targets:
  ios-ane: {runtime: coreml, compute_units: cpu_and_ne, min_os: "16.0", recipe: fp16}
  ios-w8: {runtime: coreml, compute_units: all, min_os: "16.0", recipe: w8}
""").replace("  int8: {cosine_min: 0.99}\n", "  w8: {cosine_min: 0.99}\n")


@needs_coremltools
def test_core_ml_variants_share_one_conversion_and_a_compression_edit_keeps_it(tmp_path):
    assert "ios-w8" in COREML
    project = make_project(tmp_path / "p", {"digits.yaml": COREML})
    first = run_doit(project, "variant", check=True)
    convert = {t for t in executed_tasks(first.stdout) if t.startswith("convert:")}
    assert convert == {"convert:digits-cnn/coreml-iOS16-fp16"}, first.stdout  # one ML Program for both targets

    manifest = project / "manifests" / "digits.yaml"
    manifest.write_text(manifest.read_text().replace("weights: int8}}", "weights: int8, granularity: per_tensor}}"))
    again = run_doit(project, "variant", check=True)
    assert executed_tasks(again.stdout) == {"variant:digits-cnn/ios-w8"}, again.stdout
    record = (project / "build/digits-cnn/targets/ios-w8/variant/variant.json").read_text()
    assert "per-tensor" in record



def test_a_failed_conversion_only_optional_targets_use_is_recorded_for_their_variants(tmp_path, digits_cpu_project):
    """required: false still means what it says when the shared conversion, not the variant, fails."""
    import json
    import shutil
    import subprocess
    import sys

    project = tmp_path / "p"
    shutil.copytree(digits_cpu_project, project)
    manifest = project / "manifests" / "digits.yaml"
    manifest.write_text(manifest.read_text().replace("recipe: int8}", "recipe: int8, required: false}"))
    (project / "build/digits-cnn/source/model.onnx").write_bytes(b"not an onnx model")

    def step(*args):
        proc = subprocess.run([sys.executable, "-m", "mbuild.actions", *args], cwd=project, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc
        return proc.stdout

    out = step("convert", str(manifest), "onnxruntime-opset13")
    assert "warning: convert:digits-cnn/onnxruntime-opset13 did not succeed (only targets with required: false " \
           "use it: cpu-int8)" in out, out
    out = step("variant", str(manifest), "cpu-int8")
    assert "warning: variant:digits-cnn/cpu-int8 did not succeed (required: false" in out, out
    record = json.loads((project / "build/digits-cnn/targets/cpu-int8/variant/variant.json").read_text())
    assert record["status"] == "not built" and "base conversion onnxruntime-opset13 failed" in record["reason"]
