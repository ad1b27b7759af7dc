"""The ``source:`` task: data sets, fp32 reference outputs, canonical ONNX (checked) and analysis."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mbuild._io import atomic_path, write_json_atomic
from mbuild.errors import BuildError
from mbuild.sources import get_source
from mbuild.sources.data import prepare_dataset, write_dataset, write_outputs

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest

log = logging.getLogger(__name__)

CANONICAL_COSINE_MIN = 0.9999


def used_datasets(manifest: "Manifest") -> list[str]:
    """Validation plus every calibration set a recipe names."""
    names = ["validation"]
    for recipe in manifest.recipes.values():
        q = recipe.quantize
        if q and q.calibration and q.calibration not in names:
            names.append(q.calibration)
    return names


def build_source(manifest: "Manifest", out_dir: Path) -> dict:
    """Write everything the variants start from into ``out_dir``; returns the source report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source = get_source(manifest.source.kind)
    data_info = {}
    arrays = {}
    for name in used_datasets(manifest):
        inputs, labels, info = prepare_dataset(manifest, manifest.data[name])
        write_dataset(out_dir / "data" / f"{name}.npz", inputs, labels)
        data_info[name] = info
        arrays[name] = (inputs, labels)
        log.info("data set %s: %s samples (%s)", name, info["samples"], info["kind"])

    model = source.load(manifest)
    val_inputs, labels = arrays["validation"]
    reference = _run_reference(manifest, source, model, val_inputs)
    from mbuild.sources.declarations import check_outputs

    semantics = check_outputs(manifest, reference, labels)
    streams = reference_streams(manifest, source, model, val_inputs)
    write_outputs(out_dir / "reference.npz", reference, streams)

    with atomic_path(out_dir / "model.onnx") as tmp:
        notes = source.export_onnx(manifest, model, tmp)
        canonical_check = _check_canonical(manifest, tmp, val_inputs, reference)

    from mbuild.analyze import memory_estimate, onnx_flops, onnx_op_counts

    shapes = {n: s.shape for n, s in manifest.inputs.items()}
    flops = source.count_flops(manifest, model)
    analysis = {
        "params": source.count_params(model),
        "flops": flops,
        "flops_counter": getattr(source, "FLOPS_COUNTER", None) or (
            "torch.utils.flop_counter" if manifest.source.kind == "pytorch" else "onnx-tool"),
        "flops_onnx_tool": onnx_flops(out_dir / "model.onnx", shapes),
        "memory": memory_estimate(out_dir / "model.onnx", shapes),
        "ops": onnx_op_counts(out_dir / "model.onnx"),
    }
    ref_accuracy = _reference_accuracy(manifest, reference, labels)
    from mbuild.sources.declarations import chance_warning

    warning = chance_warning(manifest, ref_accuracy, semantics)
    if warning:
        print(warning)
    report = {
        "source": manifest.source.kind,
        "model": manifest.raw["source"][manifest.source.kind]["model"],
        "data": data_info,
        "reference_accuracy": ref_accuracy,
        "outputs": semantics,
        "stream_steps": len(next(iter(streams.values()))) if streams else None,
        "canonical_onnx": {"notes": notes, "check": canonical_check},
        "weights": source.weights_report(manifest) if hasattr(source, "weights_report") else None,
        "analysis": analysis,
        "versions": source.versions(),
    }
    if any(r.precision == "fp16" for r in manifest.recipes.values()):
        analysis["fp16_range"] = _fp16_range(out_dir / "model.onnx", arrays)
    write_json_atomic(out_dir / "analysis.json", analysis)
    write_json_atomic(out_dir / "source.json", report)
    return report


def _fp16_range(onnx_path: Path, arrays: dict) -> dict:
    """Activations outside fp16's range on validation and calibration samples (a diagnostic, never fatal)."""
    from mbuild.analyze.fp16_range import fp16_range

    inputs = {}
    for name in arrays:
        for k, v in arrays[name][0].items():
            inputs[k] = np.concatenate([inputs[k], v[:8]]) if k in inputs else v[:8]
    try:
        return fp16_range(onnx_path, inputs)
    except Exception as e:  # noqa: BLE001 - the range scan is advisory; say why it is missing
        log.warning("fp16 range scan skipped: %s", e)
        return {"overflow": [], "underflow": [], "note": f"not measured: {type(e).__name__}: {e}"}


def _run_reference(manifest: "Manifest", source, model, inputs) -> dict[str, np.ndarray]:
    """The source's outputs; a model that cannot run on the declared inputs is a manifest error there."""
    from mbuild.errors import ManifestError, MbuildError

    try:
        return source.run_reference(manifest, model, inputs)
    except MbuildError:
        raise
    except Exception as e:  # noqa: BLE001 - the framework's own error, located at the declared inputs
        shapes = ", ".join(f"{n} {list(s.shape)} {s.dtype}" for n, s in manifest.inputs.items())
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ManifestError(f"the model does not run on the declared inputs ({shapes}): {type(e).__name__}: {first}",
                            manifest.positions.of(("inputs",)), "inputs") from None


def _reference_accuracy(manifest: "Manifest", reference, labels) -> float | None:
    """Top-1 accuracy of the source on the labelled validation set (first classification output, its class axis)."""
    if labels is None:
        return None
    from mbuild.validate.classification import _rows
    from mbuild.validate.metrics import array_axis
    from mbuild.validate.semantics import resolve

    for name, spec in manifest.outputs.items():
        if spec.kind == "classification":
            ref = reference[name]
            res = resolve(spec, {n: tuple(a.shape[1:]) for n, a in reference.items()})
            rows = _rows(ref, array_axis(res.axis, ref.ndim - 1))
            if len(labels) == len(rows):
                return round(float(np.mean(rows.argmax(1) == labels)) * 100, 4)
            return None
    return None


def reference_streams(manifest: "Manifest", source, model, inputs) -> dict[str, np.ndarray]:
    """The source run over the validation samples as one stream, feeding back its own state (if it has any)."""
    from mbuild.validate.stream import run_stream

    feedback = {n: s.state_input for n, s in manifest.outputs.items() if s.state_input}
    if not feedback:
        return {}
    return run_stream(lambda feed: source.run_reference(manifest, model, feed), inputs, feedback)


def _check_canonical(manifest: "Manifest", onnx_path: Path, inputs, reference) -> dict:
    """The canonical ONNX must reproduce the source before any runtime starts from it."""
    from mbuild.sources.onnx import run_session, session
    from mbuild.validate.metrics import tensor_metrics

    try:
        sess = session(onnx_path)
    except BuildError as e:
        raise BuildError(f"graph preparation (pinned input shapes, folded constants) produced a canonical ONNX "
                         f"that {e}") from e
    outputs = run_session(sess, inputs, list(manifest.outputs))
    result = {}
    for name, ref in reference.items():
        m = tensor_metrics(ref, outputs[name])
        result[name] = {"cosine": round(m["cosine"], 8), "max_abs": float(f"{m['max_abs']:.3g}")}
        if m["cosine"] < CANONICAL_COSINE_MIN:
            keep = onnx_path.parent.parent / "model.rejected.onnx"
            shutil.copyfile(onnx_path, keep)
            raise BuildError(
                f"the canonical ONNX export does not reproduce the {manifest.source.kind} source: output {name!r} "
                f"cosine {m['cosine']:.6f} < {CANONICAL_COSINE_MIN} (max_abs {m['max_abs']:.3g}); "
                f"the export is kept at {keep} for inspection")
    return result
