"""Runtime ``ncnn`` with the real pnnx and ncnn: convert, run, lint, refusals."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

from mbuild.manifest import load_manifest  # noqa: E402
from mbuild.sources.build import build_source  # noqa: E402
from mbuild.targets import get_runtime  # noqa: E402
from tests.targets._digits import (  # noqa: E402
    ONNX_SOURCE,
    PYTORCH_SOURCE,
    REPO,
    accuracy,
    build_and_run,
    built_source,
    digits_yaml,
    reference_logits,
    runtime_context,
)

TARGETS = """android-vulkan: {runtime: ncnn, recipe: fp16}
  android-cpu: {runtime: ncnn, device: cpu, recipe: fp32}"""


def _project(tmp: Path, source: str, targets: str = TARGETS):
    return built_source(tmp, digits_yaml(targets, source))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return _project(tmp_path_factory.mktemp("digits-ncnn"), PYTORCH_SOURCE)


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    manifest, source_dir = digits
    out = tmp_path_factory.mktemp("ncnn-variants")
    return {t: build_and_run(manifest, source_dir, t, out / t) for t in ("android-cpu", "android-vulkan")}


def test_pytorch_digits_fp32_and_fp16_match_the_reference(built, digits):
    _, source_dir = digits
    ref_logits = reference_logits(source_dir)
    _, _, fp32_dir, fp32 = built["android-cpu"]
    _, _, fp16_dir, fp16 = built["android-vulkan"]
    assert fp32.outputs["logits"].shape == ref_logits.shape == (360, 1, 10)
    assert np.abs(fp32.outputs["logits"] - ref_logits).max() < 1e-4  # fp16 arithmetic off: fp32 all the way
    assert np.abs(fp16.outputs["logits"] - ref_logits).max() < 0.05
    assert abs(accuracy(fp16.outputs, source_dir) - accuracy(fp32.outputs, source_dir)) <= 1.0
    assert "fp16 storage/packed/arithmetic off" in fp32.runtime and len(fp32.latency_ms) == 359
    assert sorted(p.name for p in fp32_dir.iterdir()) == ["model.bin", "model.param"]  # no pnnx side files
    assert (fp16_dir / "model.bin").stat().st_size < 0.55 * (fp32_dir / "model.bin").stat().st_size


def test_what_was_applied_is_measured_from_the_bin(built):
    _, fp16, _, _ = built["android-vulkan"]
    _, fp32, _, _ = built["android-cpu"]
    assert list(fp16.audit["by_dtype"]) == ["float16"] and list(fp32.audit["by_dtype"]) == ["float32"]
    assert fp16.audit["weight_tensors"] == 6 and fp16.quantization["weights"] == "float16"
    assert fp16.quantization["tool"].startswith("pnnx ") and fp16.details["float_artifact"] == "sibling_fp32.ncnn"
    assert fp16.details["float_bytes"] > fp16.details["bytes"]
    side = fp16.details["converter"]["side_files"]
    assert "model.pnnx.param" in side and "model_ncnn.py" in side


def test_conversion_is_byte_identical(digits, built, tmp_path):
    manifest, source_dir = digits
    again = get_runtime("ncnn").convert(runtime_context(manifest, source_dir, "android-vulkan", tmp_path / "again"))
    first = built["android-vulkan"][2]
    for name in ("model.param", "model.bin"):
        assert (tmp_path / "again" / again.artifact / name).read_bytes() == (first / name).read_bytes()


def test_blob_names_and_the_dropped_batch_axis_map_to_the_manifest(built):
    _, variant, _, _ = built["android-cpu"]
    (inp,), (out,) = variant.io["inputs"], variant.io["outputs"]
    assert (inp["name"], inp["blob"], inp["shape"], inp["blob_shape"]) == ("image", "in0", [1, 1, 8, 8], [1, 8, 8])
    assert (out["name"], out["blob"], out["shape"], out["blob_shape"]) == ("logits", "out0", [1, 10], [10])
    assert {c["side"] for c in variant.io["layout_changes"]} == {"input", "output"}


def test_device_defaults_run_is_recorded_and_judged(built, digits):
    ctx, _, artifact, result = built["android-vulkan"]
    rt = get_runtime("ncnn")
    inputs = {k: v[:40] for k, v in ctx.validation_inputs().items()}
    first = {k: v[:40] for k, v in result.outputs.items()}
    entry = rt.also_check(ctx, artifact, inputs, first)["device_defaults"]
    assert entry["status"] in ("passed", "failed") and entry["metrics"]["logits"]["cosine"] > 0.999
    assert set(entry["options"]) == {"use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"}
    assert "device defaults" in entry["runtime"] and entry["vs_fp32_compute"]["logits"]["max_abs"] < 0.05


def test_vulkan_lint_clean_for_the_cnn_and_cpu_targets_have_none(built):
    ctx, _, artifact, _ = built["android-vulkan"]
    (lint,) = get_runtime("ncnn").lint(ctx, artifact)
    assert (lint.name, lint.verdict, lint.coverage, lint.offenders) == ("ncnn_vulkan", "clean", 1.0, [])
    assert lint.ops_total == 9 and lint.kind == "static estimate"
    ctx, _, artifact, _ = built["android-cpu"]
    assert get_runtime("ncnn").lint(ctx, artifact) == []


def test_vulkan_lint_names_a_layer_without_a_vulkan_kernel(tmp_path):
    import torch

    from mbuild.targets.ncnn.convert import pnnx_executable
    from mbuild.targets.ncnn.lint import vulkan_lint
    from mbuild.targets.ncnn.model import weight_census

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
            self.head = torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's tracer warnings
        torch.jit.trace(Recurrent().eval(), torch.zeros(1, 5, 8)).save(str(tmp_path / "r.pt"))
    subprocess.run([str(pnnx_executable()), "r.pt", "inputshape=[1,5,8]f32"], cwd=tmp_path, check=True,
                   capture_output=True)
    lint = vulkan_lint(tmp_path / "r.ncnn.param")
    assert lint.verdict == "partial" and 0 < lint.coverage < 1
    assert [o["op"] for o in lint.offenders] == ["LSTM"]
    census, why = weight_census(tmp_path / "r.ncnn.param", tmp_path / "r.ncnn.bin")
    assert census == [] and "LSTM" in why  # not guessed: said why it was not measured


def test_onnx_source_through_the_pnnx_cli(tmp_path):
    manifest, source_dir = _project(tmp_path, ONNX_SOURCE, "android-cpu: {runtime: ncnn, device: cpu, recipe: fp32}")
    _, variant, _, result = build_and_run(manifest, source_dir, "android-cpu", tmp_path / "v")
    assert "canonical ONNX" in variant.details["converter"]["from"]
    ref_logits = reference_logits(source_dir)
    assert np.abs(result.outputs["logits"] - ref_logits).max() < 1e-4


def test_requirements_and_options():
    from mbuild.manifest.model import TargetConfig

    rt = get_runtime("ncnn")
    vulkan = TargetConfig(name="v", runtime="ncnn", recipe="x")
    cpu = TargetConfig(name="c", runtime="ncnn", recipe="x", options={"device": "cpu", "max_api": 34})
    assert rt.requirements(None, vulkan) == {"platform": "android", "min_api": 24, "max_api": None, "accelerator": "gpu"}
    assert rt.requirements(None, cpu) == {"platform": "android", "min_api": 21, "max_api": 34, "accelerator": "cpu"}
    with pytest.raises(ValueError, match="did you mean 'device'"):
        rt.parse_options(TargetConfig(name="b", runtime="ncnn", recipe="x", options={"devices": "cpu"}))
    with pytest.raises(ValueError, match="above max_api"):
        rt.parse_options(TargetConfig(name="b", runtime="ncnn", recipe="x", options={"min_api": 30, "max_api": 26}))


def _validate(tmp_path, targets: str) -> subprocess.CompletedProcess:
    from tests.conftest import DIGITS_CPU, make_project

    head, _, tail = DIGITS_CPU.partition("targets:\n")
    text = head + "targets:\n" + targets + "\n" + tail[tail.index("validate:"):]
    project = make_project(tmp_path, {"m.yaml": text})
    return subprocess.run([sys.executable, "-m", "mbuild", "validate", "manifests/m.yaml"], capture_output=True,
                          text=True, cwd=project, timeout=120)


def test_int8_is_refused_at_validate_with_the_reason(tmp_path):
    proc = _validate(tmp_path, "  android: {runtime: ncnn, recipe: int8}")
    message = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "Traceback" not in message
    assert "targets.android" in message and "no ncnn quantization tool ships here" in message
    assert "ncnn2table/ncnn2int8 are not in the ncnn wheel" in message
    assert _validate(tmp_path / "ok", "  android: {runtime: ncnn, recipe: fp16}").returncode == 0


def test_other_impossible_manifests_are_refused_before_any_sdk():
    from mbuild.manifest.model import InputSpec, RecipeConfig

    rt = get_runtime("ncnn")

    class Manifest:
        inputs = {"ids": InputSpec(name="ids", shape=(1, 16), dtype="int64")}

    fp32 = RecipeConfig(name="fp32")
    assert "float32 inputs only" in rt.check_target(Manifest, None, fp32)
    Manifest.inputs = {"x": InputSpec(name="x", shape=(4, 3, 8, 8), dtype="float32")}
    assert "no batch axis" in rt.check_target(Manifest, None, fp32)
    assert "palettize" in rt.check_target(Manifest, None, RecipeConfig(name="p", palettize={"nbits": 4}))


@pytest.mark.slow
def test_doit_builds_ncnn_and_the_opencv_second_opinion_into_the_bundle(tmp_path):
    """The real doit (warm workers, task digests, bundle schema) with an ncnn target and also_check: [opencv]."""
    from tests.conftest import DIGITS_CPU, make_project, run_doit, run_mbuild

    head, _, tail = DIGITS_CPU.partition("targets:\n")
    targets = ("targets:\n  cpu-fp32: {runtime: onnxruntime, recipe: fp32, also_check: [opencv]}\n"
               "  cpu-fp16: {runtime: onnxruntime, recipe: fp16, also_check: [opencv]}\n"
               "  android-ncnn: {runtime: ncnn, recipe: fp16}\n")
    project = make_project(tmp_path, {"digits.yaml": head + targets + tail[tail.index("validate:"):]})
    proc = run_doit(project, check=True)
    assert "check:digits-cnn/cpu-fp16: also checked with opencv: unreadable (OpenCV" in proc.stdout
    assert "check:digits-cnn/android-ncnn: also checked with device_defaults: passed" in proc.stdout
    shown = run_mbuild("inspect", "dist/digits-cnn-1.0.0.mbundle", cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert "cpu-fp32 (also checked with opencv): passed" in shown.stdout
    assert "android-ncnn: accelerator=gpu, min_api=24, platform=android" in shown.stdout
    assert "android-ncnn: ncnn_vulkan clean 100%" in shown.stdout


@pytest.mark.slow
def test_keras_source_through_the_canonical_onnx(tmp_path):
    """TensorFlow sources go through tf2onnx's canonical ONNX (NHWC input): pnnx reads it, ncnn matches."""
    import shutil

    manifest_text = (REPO / "manifests" / "digits-keras.yaml").read_text()
    text = manifest_text[:manifest_text.index("targets:")] + "targets:\n  android: {runtime: ncnn, device: cpu, recipe: fp32}\n"
    from tests.conftest import make_project

    project = make_project(tmp_path / "p", {"k.yaml": text}, examples=("keras",))
    shutil.copyfile(REPO / "examples" / "keras" / "model.keras", project / "examples" / "keras" / "model.keras")
    manifest = load_manifest(project / "manifests" / "k.yaml")
    build_source(manifest, tmp_path / "source")
    _, variant, _, result = build_and_run(manifest, tmp_path / "source", "android", tmp_path / "v")
    assert "tf2onnx" in variant.details["converter"]["from"]
    assert variant.io["inputs"][0]["blob_shape"] == [8, 8, 1]
    ref_logits = reference_logits(tmp_path / "source")
    assert np.abs(result.outputs["logits"] - ref_logits).max() < 1e-4
