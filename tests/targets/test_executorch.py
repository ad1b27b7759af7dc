"""Runtime ``executorch`` with the real SDK: torch.export, PT2E + XNNPACK quantizer, lowering, the Python runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch.exir")

from mbuild.errors import ManifestError  # noqa: E402
from mbuild.manifest import load_manifest  # noqa: E402
from mbuild.manifest.model import TargetConfig  # noqa: E402
from mbuild.targets import get_runtime  # noqa: E402
from tests.targets._digits import REPO, accuracy, built_source, digits_head, runtime_context  # noqa: E402

RUNTIME = get_runtime("executorch")
HEAD = digits_head()
DIGITS_YAML = HEAD + """\
recipes:
  fp32: {precision: fp32}
  int8: {quantize: {scheme: static, weights: int8, activations: int8, calibration: calibration}}
targets:
  et-fp32: {runtime: executorch, recipe: fp32}
  et-int8: {runtime: executorch, platform: ios, recipe: int8}
  et-vulkan: {runtime: executorch, partitioner: vulkan, recipe: fp32}
  et-coreml: {runtime: executorch, partitioner: coreml, recipe: fp32}
"""


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return built_source(tmp_path_factory.mktemp("digits"), DIGITS_YAML)


def _build(digits, target: str, out: Path):
    manifest, source_dir = digits
    ctx = runtime_context(manifest, source_dir, target, out)
    variant = RUNTIME.convert(ctx)
    return ctx, variant, out / variant.artifact


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    """fp32 and static int8 XNNPACK programs of the digits model, run on the validation set."""
    out = tmp_path_factory.mktemp("variants")
    result = {}
    for target in ("et-fp32", "et-int8"):
        ctx, variant, artifact = _build(digits, target, out / target)
        result[target] = (ctx, variant, artifact, RUNTIME.run(ctx, artifact, ctx.validation_inputs()))
    return result


# -- convert + run -----------------------------------------------------------------------------------

def test_fp32_matches_reference_and_int8_within_one_point_at_under_30_percent(built, digits):
    _, source_dir = digits
    ctx, _, fp32_path, fp32 = built["et-fp32"]
    _, _, int8_path, int8 = built["et-int8"]
    reference = ctx.reference_outputs()["logits"]
    assert fp32.outputs["logits"].shape == reference.shape == (360, 1, 10)
    assert np.abs(fp32.outputs["logits"] - reference).max() < 1e-4
    assert accuracy(fp32.outputs, source_dir) > 95
    assert abs(accuracy(int8.outputs, source_dir) - accuracy(fp32.outputs, source_dir)) <= 1.0
    assert int8_path.stat().st_size <= 0.30 * fp32_path.stat().st_size
    assert len(int8.latency_ms) == 359 and "XnnpackBackend" in int8.runtime and "executorch 1.5" in int8.runtime


def test_quantization_and_audit_state_what_was_applied(built):
    _, variant, artifact, _ = built["et-int8"]
    q = variant.quantization
    assert q["summary"].startswith("int8 static per-channel W8A8 (XNNPACK quantizer")
    assert q["calibration_samples"] == 200 and "calibrated on 200 samples" in q["summary"]
    assert variant.audit["status"] == "full" and variant.audit["quantized_tensors"] == 6
    assert variant.details["float_artifact"] == "sibling_fp32.pte"
    assert (artifact.parent / "sibling_fp32.pte").stat().st_size == variant.details["float_bytes"]
    fp32 = built["et-fp32"][1]
    assert fp32.quantization["summary"] == "none (fp32)" and fp32.format == "pte"
    assert fp32.io["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32"}]


@pytest.mark.slow  # two PT2E + lowering runs: ~10-40 s on the 2-core build machine
def test_lowering_is_byte_identical(tmp_path):
    import torch

    from mbuild.targets.executorch import lower

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 4))
    example = (torch.rand(1, 3, 8, 8),)
    first, second = (lower.lower(lower.quantize_static(module.eval(), example, [example] * 4), "xnnpack")[1]
                     for _ in range(2))
    assert first == second


def test_other_batch_size_is_refused_by_the_static_program(built):
    from mbuild.errors import BuildError

    ctx, _, artifact, _ = built["et-fp32"]
    batch = {"image": np.zeros((1, 2, 1, 8, 8), dtype=np.float32)}
    with pytest.raises(BuildError, match="execute failed on sample 0"):
        RUNTIME.run(ctx, artifact, batch)


# -- lint: the delegation report ---------------------------------------------------------------------

def test_digits_is_fully_delegated(built):
    for target in ("et-fp32", "et-int8"):
        ctx, _, artifact, _ = built[target]
        (report,) = RUNTIME.lint(ctx, artifact)
        assert (report.name, report.verdict, report.coverage, report.offenders) == ("executorch_xnnpack", "clean",
                                                                                     1.0, [])
        assert report.details["delegate_calls"] == {"XnnpackBackend": 1} and "flag" not in report.details
    # quantize/dequantize pairs are folded into XNNPACK's integer kernels: not counted as ops of their own
    (int8,) = RUNTIME.lint(*built["et-int8"][::2])
    assert not any(op.startswith("quantized_decomposed") for op in int8.details["delegates"][0]["op_types"])


def _lower_tiny(module, tmp_path: Path, shape=(1, 3, 8, 8)):
    import torch

    from mbuild.targets.executorch import lower
    from mbuild.targets.executorch.delegation import delegation_lint

    example = (torch.rand(*shape),)
    summary, data = lower.lower(lower.export(module.eval(), example), "xnnpack")
    path = tmp_path / "m.pte"
    path.write_bytes(data)
    return path, example, delegation_lint(path, summary, "xnnpack")


def test_op_xnnpack_does_not_take_is_named_and_runs_on_portable_kernels(tmp_path):
    import torch

    from mbuild.targets.executorch.program import run_program

    class ConvCumsum(torch.nn.Module):  # XNNPACK has no cumsum: it stays on a portable kernel
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)

        def forward(self, x):
            return torch.cumsum(self.conv(x), dim=1)

    module = ConvCumsum().eval()
    path, example, report = _lower_tiny(module, tmp_path)
    assert report.verdict == "partial" and [o["op"] for o in report.offenders] == ["aten.cumsum"]
    assert report.details["portable_kernel_calls"] == {"aten.cumsum": 1}
    assert report.details["delegated_ops"] == 1 and report.coverage == 0.5
    assert "flag" not in report.details  # the convolution (the compute) is delegated
    outputs, _ = run_program(path, {"x": example[0].numpy()[None]}, ["x"], ["y"])
    np.testing.assert_allclose(outputs["y"][0], module(example[0]).detach().numpy(), atol=1e-5)


def test_mostly_portable_program_is_flagged(tmp_path):
    import torch

    class MostlyPortable(torch.nn.Module):  # a 1x1 conv, then elementwise work XNNPACK does not take
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 1)

        def forward(self, x):
            y = self.conv(x)
            return torch.cumsum(torch.erf(y), dim=3)

    _, _, report = _lower_tiny(MostlyPortable(), tmp_path, shape=(1, 1, 16, 16))
    assert report.details["portable_compute_share"] > 0.5
    assert "portable kernels" in report.details["flag"] and "aten.cumsum" in report.details["flag"]
    assert {o["op"] for o in report.offenders} >= {"aten.cumsum"}
    from mbuild.steps import lint_flags

    assert lint_flags([report.to_dict()]) == [f"executorch_xnnpack: {report.details['flag']}"]  # a variant warning


# -- partitioners that lower here but cannot run here ------------------------------------------------

def _assert_skipped(digits, target: str, tmp_path: Path, backend: str):
    ctx, variant, artifact = _build(digits, target, tmp_path / target)
    result = RUNTIME.run(ctx, artifact, ctx.validation_inputs())
    assert result.outputs is None and backend in result.skipped_reason
    assert "does not register" in result.skipped_reason and "XnnpackBackend" in result.skipped_reason
    (report,) = RUNTIME.lint(ctx, artifact)
    assert report.details["delegate_calls"] == {backend: 1}
    return ctx, variant


def test_vulkan_program_lowers_and_its_check_is_skipped_never_passed(digits, tmp_path):
    from mbuild.steps import check_variant

    ctx, variant = _assert_skipped(digits, "et-vulkan", tmp_path, "VulkanBackend")
    assert RUNTIME.requirements(ctx.manifest, ctx.target) == {"platform": "android", "accelerator": "gpu",
                                                              "min_api": 24}
    report = check_variant(ctx, {"artifact": variant.artifact, "details": variant.details}, measure=False)
    assert report["validation"]["status"] == "skipped" and "VulkanBackend" in report["validation"]["reason"]


@pytest.mark.slow
def test_coreml_program_lowers_and_its_validation_is_skipped(digits, tmp_path):
    pytest.importorskip("coremltools")
    ctx, _ = _assert_skipped(digits, "et-coreml", tmp_path, "CoreMLBackend")
    assert RUNTIME.requirements(ctx.manifest, ctx.target)["platform"] == "ios"


# -- requirements and validate-time refusals ---------------------------------------------------------

def test_requirements_for_android_and_ios():
    def req(**options):
        return RUNTIME.requirements(None, TargetConfig(name="t", runtime="executorch", recipe="fp32", options=options))

    assert req() == {"platform": "android", "accelerator": "cpu", "min_api": 23}
    assert req(platform="ios") == {"platform": "ios", "accelerator": "cpu", "min_os": "17.0"}
    assert req(partitioner="coreml", min_os="18.0") == {"platform": "ios", "accelerator": "cpu", "min_os": "18.0"}
    assert req(min_api=30)["min_api"] == 30


def test_select_places_executorch_variants_by_platform():
    from mbuild.bundle.select import make_device_properties, select

    def variant(vid, **options):
        return {"id": vid, "validation": {"status": "passed"}, "requirements": RUNTIME.requirements(
            None, TargetConfig(name=vid, runtime="executorch", recipe="fp32", options=options))}

    bundle = {"variants": [variant("et-ios", platform="ios"), variant("et-android"),
                           {"id": "cpu", "requirements": {"platform": "any"}}],
              "selection": {"order": ["et-ios", "et-android", "cpu"], "fallback": "cpu"}}
    assert select(bundle, make_device_properties("ios", os_version="17.4")).variant_id == "et-ios"
    assert select(bundle, make_device_properties("ios", os_version="16.7")).variant_id == "cpu"
    assert select(bundle, make_device_properties("android", api_level=34)).variant_id == "et-android"
    old = select(bundle, make_device_properties("android", api_level=22))
    assert old.variant_id == "cpu" and "needs Android API >= 23" in old.to_text()


def _refusal(tmp_path, recipe: str, target: str, head: str = HEAD) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(head + f"recipes:\n  r: {recipe}\ntargets:\n  t: {target}\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path, root=REPO)
    return str(err.value)


@pytest.mark.parametrize("recipe, words", [
    ("{precision: fp16}", ["fp16", "executorch"]),
    ("{quantize: {scheme: dynamic, weights: int8}}", ["int8-dynamic"]),
    ("{quantize: {scheme: weight_only, weights: int8}}", ["weight-only-int8"]),
    ("{palettize: {nbits: 4}}", ["palettize"]),
    ("{quantize: {scheme: static, weights: int8, activations: int8, method: entropy, calibration: calibration}}",
     ["min/max"]),
])
def test_unsupported_recipes_are_refused_with_the_reason(tmp_path, recipe, words):
    msg = _refusal(tmp_path, recipe, "{runtime: executorch, recipe: r}")
    assert "targets.t" in msg and all(w in msg for w in words), msg


def test_int8_with_another_partitioner_is_refused(tmp_path):
    msg = _refusal(tmp_path, "{quantize: {scheme: static, weights: int8, activations: int8, calibration: calibration}}",
                   "{runtime: executorch, partitioner: vulkan, recipe: r}")
    assert "XNNPACK quantizer" in msg and "vulkan" in msg


@pytest.mark.parametrize("target, words", [
    ("{runtime: executorch, partitioner: coreml, platform: android, recipe: r}", ["coreml", "ios"]),
    ("{runtime: executorch, partitioner: vulkan, min_api: 23, recipe: r}", ["API 24"]),
    ("{runtime: executorch, platform: ios, min_api: 30, recipe: r}", ["min_os"]),
    ("{runtime: executorch, partitoner: vulkan, recipe: r}", ["partitoner"]),
])
def test_bad_target_options_are_refused(tmp_path, target, words):
    msg = _refusal(tmp_path, "{precision: fp32}", target)
    assert all(w in msg for w in words), msg


def test_onnx_source_is_refused(tmp_path):
    head = (f"mbuild: 1\nname: d\nversion: 1.0.0\nsource:\n  onnx: {{model: {REPO}/examples/digits-onnx/digits_cnn.onnx}}\n"
            "inputs:\n  input: {shape: [1, 1, 8, 8]}\noutputs:\n  logits: {}\n")
    msg = _refusal(tmp_path, "{precision: fp32}", "{runtime: executorch, recipe: r}", head=head)
    assert "executorch" in msg and "onnx source" in msg and "onnxruntime" in msg


def test_prelu_after_linear_is_kept_off_xnnpack_and_runs_on_portable_kernels(tmp_path):
    """ExecuTorch 1.5's XNNPACK channels-last pass asserts on a 2-D prelu (MTCNN's ONet): lowering must not fail."""
    import torch

    from mbuild.targets.executorch.program import run_program

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.PReLU(4), torch.nn.Flatten(),
                                 torch.nn.Linear(144, 8), torch.nn.PReLU(8)).eval()
    path, example, report = _lower_tiny(module, tmp_path)
    assert [k["op"] for k in report.details["kept_off_delegate"]] == ["aten.prelu"]  # the 2-D one only
    assert "2-D input" in report.details["kept_off_delegate"][0]["why"]
    assert report.verdict == "partial" and report.details["portable_kernel_calls"]  # the 2-D prelu, decomposed
    assert "aten.prelu" in report.details["delegates"][0]["op_types"]  # the 4-D one stays delegated
    outputs, _ = run_program(path, {"x": example[0].numpy()[None]}, ["x"], ["y"])
    np.testing.assert_allclose(outputs["y"][0], module(example[0]).detach().numpy(), atol=1e-5)


def test_lowering_failure_names_the_innermost_cause():
    from mbuild.targets.executorch.lower import failure_text

    try:
        try:
            raise AssertionError("Attempting to convert non-NHWC compatible node to NHWC")
        except AssertionError as inner:
            raise Exception("An error occurred when running the 'ChannelsLastTaggedReshapePass' pass") from inner
    except Exception as e:  # noqa: BLE001
        text = failure_text(e)
    assert text.startswith("Exception: An error occurred when running the 'ChannelsLastTaggedReshapePass'")
    assert text.endswith("(caused by AssertionError: Attempting to convert non-NHWC compatible node to NHWC)")


@pytest.mark.slow  # coremltools' import and two Core ML lowerings: ~80 s on the 2-core build machine
def test_coreml_partition_of_prelu_after_linear_lowers_with_the_prelu_rewritten():
    """Core ML takes a per-channel prelu on 4-D inputs only: the 2-D one is rewritten, as the coreml runtime does."""
    pytest.importorskip("coremltools")
    import torch

    from mbuild.targets.executorch import lower

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 8), torch.nn.PReLU(8)).eval()
    with torch.no_grad():
        module[2].weight.copy_(torch.linspace(0.1, 0.4, 8))  # per-channel slopes (all equal ones would convert)
    expected = module(torch.ones(1, 3, 4, 4)).detach()
    program, delegation, data, notes = lower.export_and_lower(module, (torch.rand(1, 3, 4, 4),), "coreml", "17.0")
    assert len(notes) == 1 and notes[0].startswith("rewrote nn.PReLU as relu(x) - w * relu(-x)") and "prelu" in notes[0]
    assert [d["backend"] for d in delegation["delegates"]] == ["CoreMLBackend"] and delegation["portable_ops"] == 0
    assert data[4:8] == b"ET12"  # a .pte (flatbuffer identifier)
    torch.testing.assert_close(module(torch.ones(1, 3, 4, 4)).detach(), expected)  # the rewrite is the same function
