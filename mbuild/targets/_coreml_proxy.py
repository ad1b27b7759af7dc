"""The proxy estimate for Core ML variants built where Core ML cannot predict (Linux).

It runs the canonical ONNX with ONNX Runtime at the recipe's float precision. It is *not* a
measurement of the Core ML variant: weight compression is not emulated and Core ML's kernels
differ. The runtime string starts with ``proxy:`` so reports keep it apart from measured metrics.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from mbuild.errors import BuildError
from mbuild.targets.base import BuildContext, RunResult

log = logging.getLogger(__name__)


def proxy_run(ctx: BuildContext, inputs: dict[str, np.ndarray]) -> RunResult:
    """Outputs of the canonical ONNX (fp16 copy for fp16 recipes) on ``inputs``; no latency is claimed."""
    from mbuild.sources.onnx import run_session, session

    model = ctx.canonical_onnx
    if not model.is_file():
        raise BuildError(f"coreml proxy: the canonical ONNX {model} is missing; run the source task first")
    how = "fp32"
    if ctx.recipe.precision == "fp16":
        model, how = fp16_copy(model, ctx.work_dir / "proxy_fp16.onnx")
    outputs = run_session(session(model), inputs, list(ctx.manifest.outputs))
    outputs = {k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()}
    compressed = ctx.recipe.quantize or ctx.recipe.palettize or ctx.recipe.prune
    caveat = "; weight compression not emulated" if compressed else ""
    runtime = (f"proxy: onnxruntime {_version('onnxruntime')} CPU on the canonical ONNX at {how}{caveat} "
               f"(not Core ML; estimate only)")
    return RunResult(outputs=outputs, runtime=runtime, latency_ms=[])


def fp16_copy(src: Path, dst: Path) -> tuple[Path, str]:
    """An fp16 copy (float32 I/O kept) by ONNX Runtime's converter; numpy rounding if that fails."""
    import onnx

    model = onnx.load(str(src))
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            converted = convert_float_to_float16(model, keep_io_types=True)
        onnx.save(converted, str(dst))
        return dst, "fp16 (onnxruntime.transformers.float16)"
    except Exception as e:  # noqa: BLE001 - fall back to rounding the weights only
        log.info("fp16 conversion for the proxy failed (%s); rounding weights to fp16 instead", e)
    from onnx import numpy_helper

    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16).astype(np.float32), init.name))
    onnx.save(model, str(dst))
    return dst, "fp32 compute with weights rounded to fp16"


def _version(dist: str) -> str:
    from mbuild._io import dist_version

    return dist_version(dist, missing="unknown")
