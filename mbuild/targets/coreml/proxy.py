"""The proxy estimate for Core ML variants built where Core ML cannot predict (Linux).

It runs the canonical ONNX with ONNX Runtime at the recipe's float precision. When the variant
compresses its weights (linear quantization, palettization, pruning), the package's own
compressed weights are decompressed (coremltools materializes each ``constexpr_*`` op) and put
into the ONNX copy in place of the float weights they came from, so the estimate carries the
compression error. If a compressed weight cannot be placed, no estimate is shown at all: a proxy
that ignores the compression would read as a measurement of a model that does not ship.
It is still *not* a measurement: Core ML's kernels differ. The runtime string starts with
``proxy:`` so reports keep it apart from measured metrics.
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mbuild.errors import BuildError
from mbuild.targets.base import BuildContext, RunResult

log = logging.getLogger(__name__)

MATCH_ERROR_MAX = 0.9  # relative distance past which a same-shape float weight is another tensor (unrelated: ~1.4)


class ProxyUnavailable(Exception):
    """The proxy cannot represent this variant faithfully; the message says why."""


def proxy_run(ctx: BuildContext, inputs: dict[str, np.ndarray], package: Path | None = None) -> RunResult:
    """Outputs of the canonical ONNX (with the package's decompressed weights, fp16 copy for fp16 recipes)."""
    from mbuild.sources.onnx import run_session, session

    model = ctx.canonical_onnx
    if not model.is_file():
        raise BuildError(f"coreml proxy: the canonical ONNX {model} is missing; run the source task first")
    compressed = ctx.recipe.quantize or ctx.recipe.palettize or ctx.recipe.prune
    how = "fp32"
    emulated = ""
    # Scratch outside the variant folder: a check must not change what the variant step wrote (its outputs are
    # checked as intact), and coremltools rewrites the Manifest.json of a package it opens, so it gets a copy.
    with tempfile.TemporaryDirectory(prefix="mbuild-proxy-") as tmp:
        scratch = Path(tmp)
        if compressed:
            copy = scratch / "model.mlpackage"
            shutil.copytree(package or ctx.out_dir / "model.mlpackage", copy)
            model, placed = with_package_weights(model, copy, scratch / "proxy_weights.onnx")
            emulated = f" with the package's {placed} decompressed weight tensor(s) in place of the float ones"
        if ctx.recipe.precision == "fp16":
            model, how = fp16_copy(model, scratch / "proxy_fp16.onnx")
        outputs = run_session(session(model), inputs, list(ctx.manifest.outputs))
    outputs = {k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()}
    runtime = (f"proxy: onnxruntime {_version('onnxruntime')} CPU on the canonical ONNX at {how}{emulated} "
               f"(not Core ML; estimate only)")
    return RunResult(outputs=outputs, runtime=runtime, latency_ms=[])


def decompressed_weights(package: Path) -> list[tuple[str, np.ndarray]]:
    """Every compressed weight of the package, decompressed by coremltools itself (name, dense array)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_program

    spec = ct.utils.load_spec(str(package))
    weights_dir = Path(package) / "Data" / "com.apple.CoreML" / "weights"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        program = load_program(spec, spec.specificationVersion, str(weights_dir))
    out = []
    for op in program.functions["main"].operations:
        if op.op_type.startswith("constexpr_") and op.op_type != "constexpr_cast":
            out.append((op.name, np.asarray(op.materialized_val_inference(), dtype=np.float32)))
    return out


def with_package_weights(src: Path, package: Path, dst: Path) -> tuple[Path, int]:
    """A copy of ``src`` whose float weights are replaced by the package's decompressed ones (matched by shape
    and value); raises ProxyUnavailable when one cannot be placed."""
    import onnx
    from onnx import numpy_helper

    dense = decompressed_weights(package)
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    floats = {n: numpy_helper.to_array(i) for n, i in inits.items() if i.data_type == onnx.TensorProto.FLOAT}
    used: set[str] = set()
    for name, w in dense:
        best, best_err = None, np.inf
        for iname, arr in floats.items():
            if iname in used:
                continue
            cand = arr if arr.shape == w.shape else (arr.T if arr.ndim == 2 and arr.T.shape == w.shape else None)
            if cand is None:
                continue
            err = float(np.linalg.norm(cand - w) / max(np.linalg.norm(cand), 1e-12))
            if err < best_err:
                best, best_err = iname, err
        if best is None or best_err > MATCH_ERROR_MAX:
            raise ProxyUnavailable(f"the package's compressed weight {name} {list(w.shape)} has no counterpart in the "
                                   "canonical ONNX, so the proxy cannot carry the compression")
        used.add(best)
        arr = floats[best]
        value = w if arr.shape == w.shape else w.T
        inits[best].CopyFrom(numpy_helper.from_array(value.astype(np.float32), best))
    onnx.save(model, str(dst))
    return dst, len(dense)


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
