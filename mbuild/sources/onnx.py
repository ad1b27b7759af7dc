"""ONNX sources: the file is the model; ONNX Runtime gives the fp32 reference."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mbuild.errors import BuildError, ManifestError

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest


def load(manifest: "Manifest") -> Path:
    """The source file, after checking it parses and its I/O names match the manifest."""
    import onnx

    path = manifest.source.model_path
    loc = manifest.positions.of(("source", "onnx", "model"))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise ManifestError(f"{manifest.rel(path)} is not a readable ONNX model: {e}", loc, "source.onnx.model") from None
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    outs = [o.name for o in model.graph.output]
    if names != list(manifest.inputs):
        raise ManifestError(f"the ONNX model's inputs are {names}, the manifest declares {list(manifest.inputs)}; "
                            "declare the same names in the same order", manifest.positions.of(("inputs",)), "inputs")
    declared = [o.tensor_name for o in manifest.outputs.values()]
    if outs != declared:
        raise ManifestError(f"the ONNX model's outputs are {outs}, the manifest declares {declared}; "
                            "declare the same names in the same order (quote names holding ':' or '/'; or name the "
                            "model's tensor with 'tensor:')", manifest.positions.of(("outputs",)), "outputs")
    from mbuild.sources.declarations import check_onnx_inputs

    check_onnx_inputs(manifest, model)
    return path


def session(path: Path, providers=("CPUExecutionProvider",), threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=list(providers))
    except Exception as e:
        raise BuildError(f"onnxruntime cannot load {Path(path).name}: {e}") from e


def run_session(sess, inputs: dict[str, np.ndarray], output_names: list[str], *, timed: bool = False):
    """Run every sample; return {output: [samples, ...]} and per-sample latencies (ms)."""
    import time

    count = len(next(iter(inputs.values())))
    collected: dict[str, list] = {n: [] for n in output_names}
    model_outputs = [o.name for o in sess.get_outputs()]
    latencies = []
    for i in range(count):
        feed = {k: np.ascontiguousarray(v[i]) for k, v in inputs.items()}
        start = time.perf_counter()
        result = sess.run(model_outputs, feed)
        elapsed = (time.perf_counter() - start) * 1000
        if i > 0:
            latencies.append(elapsed)
        for n, r in zip(output_names, result):
            collected[n].append(r)
    outputs = {n: np.stack(v) for n, v in collected.items()}
    return (outputs, latencies) if timed else outputs


def run_reference(manifest: "Manifest", model: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = session(model)
    return run_session(sess, inputs, list(manifest.outputs))


def export_onnx(manifest: "Manifest", model: Path, out_path: Path) -> list[str]:
    """The canonical model: a prepared copy (pinned shapes, folded constants, initializers)."""
    from mbuild.sources.onnx_prepare import prepare_onnx

    shapes = {n: s.shape for n, s in manifest.inputs.items()}
    return prepare_onnx(model, out_path, shapes, min_opset=13)


def count_flops(manifest: "Manifest", model: Path) -> int | None:
    from mbuild.analyze import onnx_flops

    return onnx_flops(model, {n: s.shape for n, s in manifest.inputs.items()})


def count_params(model: Path) -> int:
    """Parameters of the model, counting weights held in ``Constant`` nodes and subgraphs too."""
    import tempfile

    from mbuild.analyze import onnx_params
    from mbuild.sources.onnx_prepare import prepare_onnx

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "params.onnx"
        prepare_onnx(model, prepared, None, min_opset=0, simplify=False, safe_names=False)
        return onnx_params(prepared)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {"onnx": md.version("onnx"), "onnxruntime": md.version("onnxruntime")}
