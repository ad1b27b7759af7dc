"""The coreml runtime with real coremltools: packages opened without loading, ANE lint, checks, determinism."""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from mbuild._io import sha256_tree, tree_size
from mbuild.errors import ManifestError
from mbuild.manifest import load_manifest
from mbuild.targets.base import BuildContext
from mbuild.targets.coreml.runtime import CoreMLRuntime

ct = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
EX = REPO / "examples" / "digits"

DIGITS = f"""\
mbuild: 1
name: digits-cnn
version: 1.0.0
author: mbuild tests
description: digit classifier
source:
  pytorch: {{model: {EX}/model.py:DigitsCNN, weights: {EX}/weights.pt}}
inputs:
  image: {{shape: [1, 1, 8, 8], dtype: float32, range: [0, 1]}}
outputs:
  logits: {{kind: classification}}
data:
  calibration: {{npz: {EX}/calib.npz, inputs: {{image: x}}, limit: 16}}
  validation: {{npz: {EX}/val.npz, inputs: {{image: x}}, labels: y, limit: 32}}
recipes:
  fp16: {{precision: fp16}}
  fp32: {{precision: fp32}}
  w8: {{precision: fp16, quantize: {{scheme: weight_only, weights: int8}}}}
  w4: {{precision: fp16, quantize: {{scheme: weight_only, weights: int4, granularity: per_block, block_size: 32,
        allow_partial: true}}}}
  pal4: {{precision: fp16, palettize: {{nbits: 4, mode: kmeans}}}}
  sparse: {{precision: fp16, prune: {{sparsity: 0.5}}}}
targets:
  ios-ane: {{runtime: coreml, compute_units: cpu_and_ne, min_os: "16.0", recipe: fp16}}
  ios-gpu: {{runtime: coreml, compute_units: cpu_and_gpu, min_os: "15.0", recipe: fp32}}
  ios-w8: {{runtime: coreml, compute_units: cpu_and_ne, min_os: "16.0", recipe: w8}}
  ios-w4: {{runtime: coreml, compute_units: all, min_os: "18.0", recipe: w4}}
  ios-pal: {{runtime: coreml, compute_units: all, min_os: "16.0", recipe: pal4}}
  ios-sparse: {{runtime: coreml, compute_units: all, min_os: "17.0", recipe: sparse}}
"""

TOY_MODELS = """\
import torch
from torch import nn


class LstmNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, seq):
        y, _ = self.lstm(seq)
        return self.fc(y[:, -1])


class DilatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, image):
        return self.body(image)


class PReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 16)
        self.act = nn.PReLU(16)

    def forward(self, x):
        return self.act(self.fc(x))
"""

RUNTIME = CoreMLRuntime()


def _context(manifest, target: str, source_dir: Path, out_root: Path) -> BuildContext:
    t = manifest.targets[target]
    return BuildContext(manifest=manifest, target=t, recipe=manifest.recipes[t.recipe], source_dir=source_dir,
                        out_dir=out_root / target, options=RUNTIME.parse_options(t), build_id="build-1234")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits manifest with its source folder (data sets, reference outputs, canonical ONNX)."""
    from mbuild.sources.build import build_source

    root = tmp_path_factory.mktemp("coreml")
    path = root / "digits.yaml"
    path.write_text(DIGITS)
    manifest = load_manifest(path, root=REPO, check_targets=False)
    build_source(manifest, root / "source")
    return manifest, root


@pytest.fixture(scope="module")
def built(digits):
    """Every digits target converted once: name -> (ctx, Variant)."""
    manifest, root = digits
    out = {}
    for name in manifest.targets:
        ctx = _context(manifest, name, root / "source", root / "out")
        out[name] = (ctx, RUNTIME.convert(ctx))
    return out


def _package(built, name) -> Path:
    ctx, variant = built[name]
    return ctx.out_dir / variant.artifact


def _program(path: Path):
    from mbuild.targets.coreml.mil import read_program

    return read_program(path)


def _compute_dtypes(program) -> set[str]:
    return {t.dtype for op in program.ops if op.type in ("conv", "linear", "relu") for t in op.outputs}


# -- structure of the packages ----------------------------------------------------------------------

@pytest.mark.parametrize("name, spec_version, precision", [("ios-ane", 7, "fp16"), ("ios-gpu", 6, "fp32"),
                                                           ("ios-w4", 9, "fp16"), ("ios-sparse", 8, "fp16")])
def test_package_opens_with_declared_target_precision_and_io(built, name, spec_version, precision):
    path = _package(built, name)
    ct.models.MLModel(str(path), skip_model_load=True)  # opens without compiling
    spec = ct.utils.load_spec(str(path))
    assert spec.specificationVersion == spec_version
    assert _compute_dtypes(_program(path)) == {precision}
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "image" and list(inp.type.multiArrayType.shape) == [1, 1, 8, 8]
    assert out.name == "logits" and list(out.type.multiArrayType.shape) == [1, 10]
    assert built[name][1].io["inputs"][0]["dtype"] == "float32"


def test_metadata_carries_build_id_but_no_release_metadata(built):
    """Version, author and description are bundle.json's: a release must not rebuild (and re-sign) every variant."""
    meta = ct.utils.load_spec(str(_package(built, "ios-ane"))).description.metadata
    assert meta.author == "" and meta.versionString == "" and meta.license == ""
    assert meta.shortDescription == "digits-cnn (ios-ane, recipe fp16)"
    assert meta.userDefined["mbuild.build_id"] == "build-1234"
    assert meta.userDefined["mbuild.target"] == "ios-ane"
    assert "mbuild.version" in meta.userDefined
    assert "com.github.apple.coremltools.conversion_date" not in meta.userDefined


def test_variant_reports_frontend_and_float_recipe(built):
    _, variant = built["ios-ane"]
    assert variant.artifact == "model.mlpackage" and variant.format == "mlpackage"
    assert variant.details["frontend"] == "torch.export"
    assert variant.quantization["summary"] == "none (fp16 weights and compute)"
    assert variant.audit["status"] == "not_requested"


# -- weight compression ------------------------------------------------------------------------------

def test_int8_weights_really_compressed(built):
    from mbuild.targets.coreml.mil import compression_ops

    _, variant = built["ios-w8"]
    path = _package(built, "ios-w8")
    assert compression_ops(_program(path)) == {"constexpr_affine_dequantize": 6}
    assert variant.audit["status"] == "full"
    assert set(variant.audit["by_dtype"]) == {"int8"}
    assert variant.quantization["summary"] == "int8 weight-only linear per-channel (symmetric), fp16 compute"
    assert variant.quantization["tool"].startswith("coremltools.optimize.coreml ")
    fp16 = tree_size(_package(built, "ios-ane"))
    assert tree_size(path) < 0.6 * fp16


def test_int4_per_block_and_palettized_and_pruned(built):
    from mbuild.targets.coreml.mil import compression_ops

    fp16 = tree_size(_package(built, "ios-ane"))
    w4 = built["ios-w4"][1]
    assert "constexpr_blockwise_shift_scale" in compression_ops(_program(_package(built, "ios-w4")))
    assert "int4" in w4.audit["by_dtype"]
    assert w4.audit["status"] == "partial"  # the 1-channel first conv cannot be split into blocks of 32
    assert w4.audit["float_left"][0]["elements"] == 32 * 1 * 3 * 3
    pal = built["ios-pal"][1]
    assert set(pal.audit["by_dtype"]) == {"palettized-4bit"} and pal.audit["status"] == "full"
    assert tree_size(_package(built, "ios-pal")) < 0.35 * fp16
    sparse = built["ios-sparse"][1]
    assert compression_ops(_program(_package(built, "ios-sparse"))) == {"constexpr_sparse_to_dense": 6}
    assert set(sparse.audit["by_dtype"]) == {"sparse-float16"}
    assert sparse.quantization["summary"].startswith("50% magnitude pruning")


# -- determinism -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ios-ane", "ios-pal"])
def test_two_conversions_give_identical_packages(digits, built, tmp_path, name):
    manifest, root = digits
    again = RUNTIME.convert(_context(manifest, name, root / "source", tmp_path))
    first = _package(built, name)
    second = tmp_path / name / again.artifact
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    assert "Manifest.json" in files and "Data/com.apple.CoreML/weights/weight.bin" in files
    assert sha256_tree(first) == sha256_tree(second)
    ct.models.MLModel(str(second), skip_model_load=True)


# -- ANE lint ----------------------------------------------------------------------------------------

def test_ane_lint_passes_digits(built):
    ctx, variant = built["ios-ane"]
    (result,) = [r for r in RUNTIME.lint(ctx, ctx.out_dir / variant.artifact) if r.name == "ane"]
    assert result.kind == "static estimate" and result.verdict == "clean"
    assert result.coverage == 1.0 and result.ops_total > 10 and result.offenders == []


def test_ane_lint_flags_fp32_and_skips_gpu_targets(built):
    from mbuild.targets.coreml.lint import ane_lint

    ctx, variant = built["ios-gpu"]
    assert RUNTIME.lint(ctx, ctx.out_dir / variant.artifact) == []
    result = ane_lint(_program(ctx.out_dir / variant.artifact))  # the same program judged for the ANE
    assert result.verdict == "unsupported" and "fp32-compute" in result.details["rule_hits"]


TOY = """\
mbuild: 1
name: toy
version: 0.1.0
source:
  pytorch: {{model: models.py:{cls}}}
inputs:
  {inp}: {{shape: {shape}, dtype: float32}}
outputs:
  out: {{}}
recipes:
  fp16: {{precision: fp16}}
targets:
  ane: {{runtime: coreml, compute_units: cpu_and_ne, recipe: fp16}}
"""


def _toy(tmp_path, cls, inp, shape):
    (tmp_path / "models.py").write_text(TOY_MODELS)
    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "toy.yaml"
    path.write_text(TOY.format(cls=cls, inp=inp, shape=shape))
    manifest = load_manifest(path, root=tmp_path)
    ctx = _context(manifest, "ane", tmp_path / "source", tmp_path / "out")
    variant = RUNTIME.convert(ctx)
    return ctx, variant


def _lint(ctx, variant):
    (result,) = [r for r in RUNTIME.lint(ctx, ctx.out_dir / variant.artifact) if r.name == "ane"]
    return result


def test_ane_lint_flags_lstm(tmp_path):
    ctx, variant = _toy(tmp_path, "LstmNet", "seq", [1, 5, 8])
    result = _lint(ctx, variant)
    assert result.verdict in ("partial", "unsupported") and result.coverage < 1.0
    flagged = {o["op"] for o in result.offenders}
    assert "lstm" in flagged
    (lstm,) = [o for o in result.offenders if o["op"] == "lstm"]
    assert lstm["name"] and "recurrent" in lstm["reason"] and "recurrent" in lstm["rules"]


def test_ane_lint_flags_dilated_conv(tmp_path):
    ctx, variant = _toy(tmp_path, "DilatedNet", "image", [1, 3, 16, 16])
    result = _lint(ctx, variant)
    assert [o["op"] for o in result.offenders] == ["conv"]
    assert result.offenders[0]["rules"] == ["dilated-conv"] and result.offenders[0]["name"]
    assert result.verdict == "partial" and 0 < result.coverage < 1


def test_prelu_rank2_converts_and_rewrite_is_exact(tmp_path):
    from mbuild.sources.pytorch import rewrite_prelu

    _, variant = _toy(tmp_path, "PReLUNet", "x", [1, 8])
    assert variant.io["outputs"][0]["name"] == "out"
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.PReLU(16)).eval()
    with torch.no_grad():
        model[1].weight.uniform_(-1, 1)
        x = torch.randn(4, 8)
        before = model(x)
        assert rewrite_prelu(model)
        assert torch.allclose(model(x), before, atol=1e-6)


# -- validate-time refusals ---------------------------------------------------------------------------

def _refusal(tmp_path, recipe: str, target: str, source: str | None = None) -> str:
    text = DIGITS.split("recipes:")[0] if source is None else source
    text += f"recipes:\n  r: {recipe}\ntargets:\n  t: {target}\n"
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as err:
        load_manifest(path, root=REPO)
    return str(err.value)


@pytest.mark.skipif(platform.system() == "Darwin", reason="static activation quantization is allowed on macOS")
def test_static_activation_quantization_refused_off_macos(tmp_path):
    msg = _refusal(tmp_path, "{quantize: {scheme: static, calibration: calibration}}",
                   '{runtime: coreml, min_os: "17.0", recipe: r}')
    assert "macOS" in msg and "targets.t" in msg and "weight_only" in msg


def test_dynamic_int8_refused_naming_what_works(tmp_path):
    msg = _refusal(tmp_path, "{quantize: {scheme: dynamic}}", "{runtime: coreml, recipe: r}")
    assert "int8-dynamic" in msg or "dynamic" in msg
    assert "palettize" in msg


def test_int4_needs_ios18(tmp_path):
    msg = _refusal(tmp_path, "{quantize: {scheme: weight_only, weights: int4}}",
                   '{runtime: coreml, min_os: "17.0", recipe: r}')
    assert "iOS 18" in msg and 'min_os to "18.0"' in msg


def test_onnx_source_refused_for_coreml(tmp_path):
    pytest.importorskip("mbuild.targets.tflite.runtime")
    source = (f"mbuild: 1\nname: d\nversion: 1.0.0\nsource:\n  onnx: {{model: {REPO}/examples/digits-onnx/digits_cnn.onnx}}\n"
              "inputs:\n  input: {shape: [1, 1, 8, 8]}\noutputs:\n  logits: {}\n")
    msg = _refusal(tmp_path, "{precision: fp16}", "{runtime: coreml, recipe: r}", source=source)
    assert "coreml" in msg and "onnx" in msg and "onnxruntime" in msg


def test_requirements():
    from mbuild.manifest.model import TargetConfig

    target = TargetConfig(name="t", runtime="coreml", recipe="fp16",
                          options={"compute_units": "cpu_and_ne", "min_os": "16"})
    req = RUNTIME.requirements(None, target)
    assert req == {"platform": "ios", "min_os": "16.0", "accelerator": "ane", "compute_units": "cpu_and_ne",
                   "deployment_target": "iOS16"}


# -- run / proxy -------------------------------------------------------------------------------------

@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML predicts on macOS")
def test_run_is_skipped_off_macos_and_proxy_is_labelled(built):
    ctx, variant = built["ios-w8"]
    inputs = ctx.validation_inputs()
    result = RUNTIME.run(ctx, ctx.out_dir / variant.artifact, inputs)
    assert result.outputs is None and result.runtime == "coreml"
    assert result.skipped_reason == "Core ML prediction needs macOS; this build ran on Linux"
    proxy = RUNTIME.proxy(ctx, inputs)
    assert proxy.runtime.startswith("proxy:") and "decompressed weight tensor(s)" in proxy.runtime
    ref = ctx.reference_outputs()["logits"]
    assert proxy.outputs["logits"].shape == ref.shape
    assert np.mean(proxy.outputs["logits"].argmax(-1) == ref.argmax(-1)) > 0.95


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction needs macOS")
def test_macos_prediction_matches_reference(built):
    ctx, variant = built["ios-ane"]
    inputs = ctx.validation_inputs()
    result = RUNTIME.run(ctx, ctx.out_dir / variant.artifact, inputs)
    ref = ctx.reference_outputs()["logits"]
    assert result.skipped_reason is None and result.outputs["logits"].shape == ref.shape
    a, b = result.outputs["logits"].ravel(), ref.ravel()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999
    assert len(result.latency_ms) == len(ref) - 1


# -- input types ---------------------------------------------------------------------------------------

IO_TOY = """\
mbuild: 1
name: toy
version: 0.1.0
source:
  pytorch: {model: models.py:DilatedNet}
inputs:
  image: {shape: [1, 3, 16, 16], dtype: float32, IMAGE}
outputs:
  out: {}
recipes:
  fp16: {precision: fp16}
targets:
  ane: {runtime: coreml, compute_units: cpu_and_ne, min_os: "17.0", recipe: fp16}
"""


def _io_toy(tmp_path, extra: str):
    (tmp_path / "models.py").write_text(TOY_MODELS)
    path = tmp_path / "toy.yaml"
    path.write_text(IO_TOY.replace("IMAGE", extra))
    manifest = load_manifest(path, root=tmp_path)
    ctx = _context(manifest, "ane", tmp_path / "source", tmp_path / "out")
    variant = RUNTIME.convert(ctx)
    return ct.utils.load_spec(str(ctx.out_dir / variant.artifact)), variant


def test_image_input_with_scale_and_bias(tmp_path):
    spec, variant = _io_toy(tmp_path, "image: {color: RGB, scale: 0.00392156862745098, bias: [-0.5, -0.5, -0.5]}")
    (inp,) = spec.description.input
    assert inp.type.WhichOneof("Type") == "imageType"
    assert (inp.type.imageType.width, inp.type.imageType.height) == (16, 16)
    ops = {op.type for op in _ops(spec)}
    assert {"mul", "add"} <= ops  # ML Programs apply scale and bias as ops (DilatedNet itself has neither)
    assert variant.io["inputs"][0]["type"] == "image"
    assert variant.io["inputs"][0]["preprocessing"]["scale"] == pytest.approx(1 / 255)


def test_enumerated_shapes(tmp_path):
    spec, variant = _io_toy(tmp_path, "shapes: [[1, 3, 32, 32], [1, 3, 24, 24]]")
    (inp,) = spec.description.input
    shapes = [list(s.shape) for s in inp.type.multiArrayType.enumeratedShapes.shapes]
    assert [1, 3, 16, 16] in shapes and [1, 3, 32, 32] in shapes and [1, 3, 24, 24] in shapes
    assert variant.io["inputs"][0]["shapes"] == shapes
    from mbuild.targets.coreml.lint import ane_lint
    from mbuild.targets.coreml.mil import program_from_spec

    result = ane_lint(program_from_spec(spec))
    assert "dynamic-shape" not in result.details["rule_hits"]  # enumerated shapes are not range shapes


def _ops(spec):
    fn = spec.mlProgram.functions["main"]
    return fn.block_specializations[fn.opset].operations


def test_weight_census_decides_the_recorded_precision(tmp_path):
    """Core ML keeps LSTM weights in float32 under fp16 compute precision: the census says so, and flags it."""
    from dataclasses import asdict

    from mbuild.recipes.census import apply_census

    ctx, variant = _toy(tmp_path, "LstmNet", "seq", [1, 5, 8])
    record = asdict(variant)
    flags = apply_census(record, ctx.recipe)
    census = record["quantization"]["weights_census"]
    assert census["float32"]["share"] > 0.9 and record["quantization"]["weights"] == "float32"
    assert record["quantization"]["weights_stated_by_converter"] == "float16"
    assert flags and "float32" in flags[0] and "lstm" in flags[0]
    assert "float32" in record["quantization"]["summary"]
    assert sum(v["tensors"] for v in census.values()) == variant.audit["weight_tensors"]


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML predicts on macOS")
def test_proxy_carries_the_packages_compression(built):
    """A pruned package's proxy shows the pruning error; a plain fp16 one does not (the proxy used to ignore both)."""
    from mbuild.validate import compare_outputs

    cosines = {}
    for name in ("ios-ane", "ios-sparse", "ios-pal"):
        ctx, _ = built[name]
        proxy = RUNTIME.proxy(ctx, ctx.validation_inputs())
        cosines[name] = compare_outputs(ctx.reference_outputs(), proxy.outputs, ctx.manifest.outputs)["logits"]["cosine"]
    assert cosines["ios-ane"] > 0.9999
    assert cosines["ios-sparse"] < 0.99  # 50% magnitude pruning, decompressed from the package itself
    assert cosines["ios-pal"] < cosines["ios-ane"]
