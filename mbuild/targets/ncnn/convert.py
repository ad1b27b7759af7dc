"""pnnx: PyTorch (traced TorchScript) or the canonical ONNX (ONNX, TensorFlow sources) -> ncnn .param + .bin, fp32 or fp16 weights.

The pnnx executable from the ``pnnx`` wheel is run directly (its Python ``export`` only traces and
then calls it), in the variant's work folder: it writes seven side files (pnnx's own .param/.bin,
two generated Python scripts, a re-exported ONNX) beside the ncnn pair and prints a pass log.
Both go to the task log; only the ncnn .param and .bin are kept.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from mbuild._io import dist_version
from mbuild.errors import BuildError
from mbuild.targets.base import BuildContext

TIMEOUT_S = 900


def pnnx_executable() -> Path:
    try:
        import pnnx
    except ImportError as e:
        raise BuildError("pnnx is not installed; install it with: pip install 'mbuild[ncnn]'") from e
    return Path(pnnx.EXEC_PATH)


def convert(ctx: BuildContext, work: Path, fp16: bool) -> dict:
    """Write ``work/model.ncnn.param`` and ``.bin``; returns the facts (converter, input form, side files)."""
    exe = pnnx_executable()
    work.mkdir(parents=True, exist_ok=True)
    kind = ctx.manifest.source.kind
    if kind == "pytorch":
        model_file, how = _trace(ctx, work), "torch.jit.trace of the PyTorch model"
    else:
        made = "tf2onnx, " if kind == "tensorflow" else ""
        model_file, how = _copy_onnx(ctx.canonical_onnx, work), f"the canonical ONNX ({made}pnnx's ONNX frontend)"
    shapes = ",".join(f"[{','.join(str(d) for d in spec.shape)}]f32" for spec in ctx.manifest.inputs.values())
    cmd = [str(exe), model_file.name, f"inputshape={shapes}", f"fp16={int(fp16)}",
           "ncnnparam=model.ncnn.param", "ncnnbin=model.ncnn.bin"]
    before = {p.name for p in work.iterdir()}
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"pnnx did not finish within {TIMEOUT_S} s") from e
    # pnnx's pass log belongs in the task log (this process's output), not in the report
    sys.stderr.write(f"pnnx {' '.join(cmd[1:])}\n{proc.stdout}{proc.stderr}")
    produced = work / "model.ncnn.param", work / "model.ncnn.bin"
    if proc.returncode != 0 or not all(p.is_file() and p.stat().st_size for p in produced):
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise BuildError(f"pnnx failed on {how} (exit {proc.returncode}): {tail or 'no output'}")
    side = sorted({p.name for p in work.iterdir()} - before - {p.name for p in produced})
    sys.stderr.write(f"pnnx side files (kept out of the bundle, removed with the work folder): {', '.join(side)}\n")
    return {"converter": f"pnnx {dist_version('pnnx')}", "from": how, "fp16_weights": fp16, "side_files": side,
            "command": " ".join(cmd[1:])}


def _trace(ctx: BuildContext, work: Path) -> Path:
    """TorchScript of the source model on one validation sample (pnnx's PyTorch input)."""
    import torch

    from mbuild.sources.pytorch import example_args

    model = ctx.load_source_model().eval()
    args = example_args(ctx.manifest, ctx.validation_inputs(), 0)
    path = work / "model.pt"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; pnnx reads TorchScript only
        try:
            traced = torch.jit.trace(model, args, check_trace=False)
        except Exception as e:  # noqa: BLE001 - the user's model: say what failed, keep the cause
            raise BuildError(f"torch.jit.trace failed (pnnx needs a traceable model): {type(e).__name__}: {e}") from e
        traced.save(str(path))
    return path


def _copy_onnx(src: Path, work: Path) -> Path:
    """The canonical ONNX copied into the work folder, with its external data file if it has one."""
    dst = work / "model.onnx"
    shutil.copyfile(src, dst)
    for data in src.parent.glob(src.name + ".data"):
        shutil.copyfile(data, work / data.name.replace(src.name, dst.name))
    return dst
