"""What the per-runtime tests share: the digits CNN manifest, its built source, a runtime's context, one build.

Manifests use absolute example paths, so one written anywhere loads with ``root=REPO``; builds call the
runtime directly (no doit), the way each runtime's own tests exercise convert, run and lint.
"""
from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO

DIGITS = REPO / "examples" / "digits"
PYTORCH_SOURCE = f"pytorch: {{model: {DIGITS}/model.py:DigitsCNN, weights: {DIGITS}/weights.pt}}"
ONNX_SOURCE = f"onnx: {{model: {REPO}/examples/digits-onnx/digits_cnn.onnx}}"
RECIPES = """\
recipes:
  fp32: {precision: fp32}
  fp16: {precision: fp16}
  int8: {quantize: {scheme: static, weights: int8, activations: int8, calibration: calibration}}
  int8-dyn: {quantize: {scheme: dynamic, weights: int8}}
"""


def digits_head(source: str = PYTORCH_SOURCE) -> str:
    """Everything of the digits manifest before its recipes: source, I/O and the real data sets."""
    return f"""\
mbuild: 1
name: digits-cnn
version: 1.0.0
source:
  {source}
inputs:
  image: {{shape: [1, 1, 8, 8], dtype: float32, range: [0, 1]}}
outputs:
  logits: {{kind: classification}}
data:
  calibration: {{npz: {DIGITS}/calib.npz, inputs: {{image: x}}}}
  validation: {{npz: {DIGITS}/val.npz, inputs: {{image: x}}, labels: y}}
"""


def digits_yaml(targets: str, source: str = PYTORCH_SOURCE) -> str:
    """The digits manifest with the shared recipes and ``targets`` (lines after the first indented by two)."""
    return digits_head(source) + RECIPES + f"targets:\n  {targets}\n"


def built_source(tmp: Path, text: str):
    """(manifest, source folder): the manifest written to ``tmp`` and its source step run into tmp/source."""
    from mbuild.manifest import load_manifest
    from mbuild.sources.build import build_source

    path = tmp / "digits.yaml"
    path.write_text(text)
    manifest = load_manifest(path, root=REPO)
    build_source(manifest, tmp / "source")
    return manifest, tmp / "source"


def runtime_context(manifest, source_dir: Path, target: str, out: Path):
    """The BuildContext a step would give ``target``'s runtime (no shared base folder: it converts its own)."""
    from mbuild.targets import get_runtime
    from mbuild.targets.base import BuildContext

    t = manifest.targets[target]
    return BuildContext(manifest=manifest, target=t, recipe=manifest.recipes[t.recipe], source_dir=source_dir,
                        out_dir=out, options=get_runtime(t.runtime).parse_options(t))


def build_and_run(manifest, source_dir: Path, target: str, out: Path):
    """(ctx, variant, artifact, run result on the validation set) of one target, converted into ``out``."""
    from mbuild.targets import get_runtime

    rt = get_runtime(manifest.targets[target].runtime)
    ctx = runtime_context(manifest, source_dir, target, out)
    variant = rt.convert(ctx)
    artifact = out / variant.artifact
    return ctx, variant, artifact, rt.run(ctx, artifact, ctx.validation_inputs())


def accuracy(outputs: dict, source_dir: Path) -> float:
    """Top-1 accuracy in percent of ``outputs['logits']`` against the validation labels."""
    import numpy as np

    from mbuild.sources.data import read_labels

    labels = read_labels(source_dir / "data" / "validation.npz")
    return float(np.mean(outputs["logits"].reshape(len(labels), -1).argmax(1) == labels)) * 100


def reference_logits(source_dir: Path):
    """The source model's logits on the validation set, as the source step recorded them."""
    import numpy as np

    ref = np.load(source_dir / "reference.npz")
    return ref[next(k for k in ref.files if k.endswith("logits"))]
