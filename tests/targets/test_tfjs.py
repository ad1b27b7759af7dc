"""Runtime ``tfjs`` with the real tensorflowjs converter and a real Node + @tensorflow/tfjs (wasm) run."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from mbuild.manifest import load_manifest  # noqa: E402
from mbuild.sources.build import build_source  # noqa: E402
from mbuild.sources.data import read_labels  # noqa: E402
from mbuild.targets import get_runtime  # noqa: E402
from mbuild.targets.base import BuildContext  # noqa: E402
from mbuild.targets.tfjs import node  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
KERAS = (REPO / "manifests" / "digits-keras.yaml").read_text()
RECIPES = """recipes:
  fp32: {precision: fp32}
  fp16: {precision: fp16}
  uint8: {quantize: {scheme: weight_only, weights: uint8}}
  uint16: {quantize: {scheme: weight_only, weights: uint16}}
  int8: {quantize: {scheme: static, weights: int8, activations: int8, calibration: calibration}}
"""
TARGETS = """targets:
  web-fp32: {runtime: tfjs, recipe: fp32}
  web-fp16: {runtime: tfjs, recipe: fp16, shard_size_bytes: 4096}
  web-uint8: {runtime: tfjs, recipe: uint8}
  web-uint16: {runtime: tfjs, recipe: uint16}
"""


def _needs_tfjs() -> None:
    if shutil.which("node") is None or node.missing():
        pytest.skip(f"the tfjs check cannot run here: {node.missing()}")
    try:
        import importlib.metadata as md

        md.version("tensorflowjs")
    except md.PackageNotFoundError:
        pytest.skip("tensorflowjs is not installed (requirements/tfjs.txt, --no-deps)")


def _manifest_text(targets: str = TARGETS, recipes: str = RECIPES) -> str:
    head = KERAS[:KERAS.index("recipes:")]
    return head + recipes + targets


def _project(tmp: Path, text: str) -> Path:
    from tests.conftest import make_project

    project = make_project(tmp, {"k.yaml": text}, examples=("keras", "digits"))
    shutil.copyfile(REPO / "examples" / "keras" / "model.keras", project / "examples" / "keras" / "model.keras")
    return project


def _ctx(manifest, source_dir: Path, target: str, out: Path) -> BuildContext:
    t = manifest.targets[target]
    return BuildContext(manifest=manifest, target=t, recipe=manifest.recipes[t.recipe], source_dir=source_dir,
                        out_dir=out, options=get_runtime("tfjs").parse_options(t))


@pytest.fixture(scope="module")
def keras_digits(tmp_path_factory):
    _needs_tfjs()
    tmp = tmp_path_factory.mktemp("tfjs")
    project = _project(tmp / "p", _manifest_text())
    manifest = load_manifest(project / "manifests" / "k.yaml")
    build_source(manifest, tmp / "source")
    return manifest, tmp / "source", tmp


@pytest.fixture(scope="module")
def built(keras_digits):
    manifest, source_dir, tmp = keras_digits
    rt = get_runtime("tfjs")
    out = {}
    for target in ("web-fp32", "web-uint8"):
        ctx = _ctx(manifest, source_dir, target, tmp / target)
        variant = rt.convert(ctx)
        artifact = tmp / target / variant.artifact
        out[target] = ctx, variant, artifact, rt.run(ctx, artifact, ctx.validation_inputs())
    return out


def _reference(source_dir: Path) -> np.ndarray:
    ref = np.load(source_dir / "reference.npz")
    return ref[next(k for k in ref.files if k.endswith("logits"))]


def _accuracy(outputs, source_dir: Path) -> float:
    labels = read_labels(source_dir / "data" / "validation.npz")
    return float(np.mean(outputs["logits"].reshape(len(labels), -1).argmax(1) == labels)) * 100


def test_fp32_graph_model_matches_the_reference_in_node_on_wasm(built, keras_digits):
    _, source_dir, _ = keras_digits
    _, variant, artifact, result = built["web-fp32"]
    ref = _reference(source_dir)
    assert result.outputs["logits"].shape == ref.shape
    assert np.abs(result.outputs["logits"] - ref).max() < 1e-4
    assert "wasm backend" in result.runtime and "4.22.0" in result.runtime
    assert len(result.latency_ms) == len(ref)
    names = sorted(p.name for p in artifact.iterdir())
    assert names[-1] == "model.json" and all(n.startswith("group1-shard") for n in names[:-1])
    assert variant.audit["status"] == "not_requested" and list(variant.audit["by_dtype"]) == ["float32"]
    assert [e["key"] for e in variant.io["inputs"]] == ["image"] and variant.io["layout_changes"] == []
    assert [e["key"] for e in variant.io["outputs"]] == ["logits"]
    meta = json.loads((artifact / "model.json").read_text())["userDefinedMetadata"]["mbuild"]
    assert meta["io"]["inputs"] == variant.io["inputs"] and meta["recipe"] == "fp32"


def test_uint8_weights_only_is_recorded_as_such_and_stays_within_a_point(built, keras_digits):
    _, source_dir, _ = keras_digits
    _, fp32_variant, _, fp32 = built["web-fp32"]
    _, variant, artifact, result = built["web-uint8"]
    q = variant.quantization
    assert q["weights_only"] and q["weights"] == "uint8" and "no faster inference" in q["summary"]
    assert variant.audit["status"] == "full" and list(variant.audit["by_dtype"]) == ["uint8"]
    assert variant.details["float_artifact"] == "sibling_fp32.tfjs"
    assert variant.details["bytes"] < 0.4 * fp32_variant.details["bytes"]
    assert abs(_accuracy(result.outputs, source_dir) - _accuracy(fp32.outputs, source_dir)) <= 1.0
    ref = _reference(source_dir)
    cos = float(np.dot(result.outputs["logits"].ravel(), ref.ravel())
                / np.linalg.norm(result.outputs["logits"]) / np.linalg.norm(ref))
    assert cos > 0.999


def test_a_second_conversion_writes_the_same_bytes(built, keras_digits):
    """tensorflowjs writes each node's attr map in an order that changes from run to run (three runs, three
    model.json digests); a rebuild must still give the same artifact, so mbuild sorts model.json's keys."""
    manifest, source_dir, tmp = keras_digits
    _, _, artifact, _ = built["web-fp32"]
    ctx = _ctx(manifest, source_dir, "web-fp32", tmp / "again")
    again = tmp / "again" / get_runtime("tfjs").convert(ctx).artifact
    assert {p.name: p.read_bytes() for p in again.iterdir()} == {p.name: p.read_bytes() for p in artifact.iterdir()}


def test_fp16_and_the_shard_size(keras_digits):
    manifest, source_dir, tmp = keras_digits
    rt = get_runtime("tfjs")
    ctx = _ctx(manifest, source_dir, "web-fp16", tmp / "web-fp16")
    variant = rt.convert(ctx)
    model = json.loads((tmp / "web-fp16" / variant.artifact / "model.json").read_text())
    paths = [p for g in model["weightsManifest"] for p in g["paths"]]
    assert len(paths) == variant.details["shards"] > 1  # 4096-byte shards
    assert all((tmp / "web-fp16" / variant.artifact / p).stat().st_size <= 4096 for p in paths)
    assert list(variant.audit["by_dtype"]) == ["float16"] and variant.quantization["weights"] == "float16"
    result = rt.run(ctx, tmp / "web-fp16" / variant.artifact, {k: v[:20] for k, v in ctx.validation_inputs().items()})
    assert np.abs(result.outputs["logits"] - _reference(source_dir)[:20]).max() < 0.05


def test_requirements_and_options():
    from mbuild.manifest.model import TargetConfig

    rt = get_runtime("tfjs")
    assert rt.requirements(None, TargetConfig(name="w", runtime="tfjs", recipe="x")) == {"platform": "web",
                                                                                          "accelerator": "cpu"}
    with pytest.raises(ValueError, match="did you mean 'shard_size_bytes'"):
        rt.parse_options(TargetConfig(name="b", runtime="tfjs", recipe="x", options={"shard_size": 1}))


def test_impossible_recipes_are_refused_before_any_sdk():
    from mbuild.manifest.model import InputSpec, QuantizeConfig, RecipeConfig

    rt = get_runtime("tfjs")

    class Manifest:
        inputs = {"x": InputSpec(name="x", shape=(1, 8), dtype="float32")}

    assert rt.check_target(Manifest, None, RecipeConfig(name="ok", quantize=QuantizeConfig("weight_only", "uint8"))) is None
    assert "quantizes weights only" in rt.check_target(Manifest, None, RecipeConfig(
        name="s", quantize=QuantizeConfig("static", "int8", "int8")))
    assert "uint8 or uint16" in rt.check_target(Manifest, None, RecipeConfig(
        name="w", quantize=QuantizeConfig("weight_only", "int8")))
    assert "palettized" in rt.check_target(Manifest, None, RecipeConfig(name="p", palettize={"nbits": 4}))
    Manifest.inputs = {"ids": InputSpec(name="ids", shape=(1, 16), dtype="int64")}
    assert "float32 or int32" in rt.check_target(Manifest, None, RecipeConfig(name="fp32"))


def _validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    project = _project(tmp_path, text)
    return subprocess.run([sys.executable, "-m", "mbuild", "validate", "manifests/k.yaml"], capture_output=True,
                          text=True, cwd=project, timeout=120)


def test_validate_accepts_the_recipes_and_refuses_static_int8(tmp_path):
    ok = _validate(tmp_path / "ok", _manifest_text())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = _validate(tmp_path / "int8", _manifest_text("targets:\n  web: {runtime: tfjs, recipe: int8}\n"))
    message = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "Traceback" not in message
    assert "targets.web" in message and "tfjs quantizes weights only" in message


@pytest.mark.slow
def test_pytorch_source_through_onnx2tfs_saved_model(tmp_path):
    """PyTorch (NCHW) -> canonical ONNX -> onnx2tf's SavedModel (NHWC) -> tfjs: run() transposes, matches."""
    _needs_tfjs()
    from tests.conftest import DIGITS_CPU, make_project

    head, _, tail = DIGITS_CPU.partition("targets:\n")
    text = head + "targets:\n  web: {runtime: tfjs, recipe: fp32}\n" + tail[tail.index("validate:"):]
    project = make_project(tmp_path / "p", {"m.yaml": text})
    manifest = load_manifest(project / "manifests" / "m.yaml")
    build_source(manifest, tmp_path / "source")
    ctx = _ctx(manifest, tmp_path / "source", "web", tmp_path / "v")
    variant = get_runtime("tfjs").convert(ctx)
    assert "onnx2tf" in variant.details["converter"]["from"]
    (change,) = variant.io["layout_changes"]
    assert (change["side"], change["from"], change["to"], change["perm"]) == ("input", [1, 1, 8, 8], [1, 8, 8, 1],
                                                                             [0, 2, 3, 1])
    result = get_runtime("tfjs").run(ctx, tmp_path / "v" / variant.artifact, ctx.validation_inputs())
    assert np.abs(result.outputs["logits"] - _reference(tmp_path / "source")).max() < 1e-4


@pytest.mark.slow
def test_doit_builds_checks_bundles_and_selects_tfjs_for_the_web(tmp_path):
    """The real doit (warm workers, check step, bundle schema) with tfjs targets; `mbuild select --platform web`."""
    _needs_tfjs()
    from tests.conftest import run_doit, run_mbuild

    targets = ("targets:\n  cpu-fp32: {runtime: onnxruntime, recipe: fp32}\n"
               "  web-fp32: {runtime: tfjs, recipe: fp32}\n  web-uint8: {runtime: tfjs, recipe: uint8}\n"
               "select:\n  order: [web-uint8, web-fp32, cpu-fp32]\n  fallback: cpu-fp32\n")
    project = _project(tmp_path, _manifest_text(targets))
    proc = run_doit(project, check=True, timeout=1500)
    assert "check:digits-keras/web-uint8" in proc.stdout
    bundle = project / "dist" / "digits-keras-1.0.0.mbundle"
    shown = run_mbuild("inspect", str(bundle), cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert "web-uint8: accelerator=cpu, platform=web" in shown.stdout
    web = run_mbuild("select", str(bundle), "--platform", "web", cwd=project)
    assert web.returncode == 0 and "web-uint8" in web.stdout.splitlines()[0], web.stdout + web.stderr
    android = run_mbuild("select", str(bundle), "--platform", "android", "--api", "34", cwd=project)
    assert "cpu-fp32" in android.stdout.splitlines()[0], android.stdout
