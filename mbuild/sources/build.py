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
    reference = source.run_reference(manifest, model, val_inputs)
    write_outputs(out_dir / "reference.npz", reference)

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
    ref_accuracy = None
    if labels is not None:
        for name, spec in manifest.outputs.items():
            if spec.kind == "classification":
                logits = reference[name].reshape(-1, reference[name].shape[-1])
                if len(labels) == len(logits):
                    ref_accuracy = round(float(np.mean(logits.argmax(1) == labels)) * 100, 4)
                break
    report = {
        "source": manifest.source.kind,
        "model": manifest.raw["source"][manifest.source.kind]["model"],
        "data": data_info,
        "reference_accuracy": ref_accuracy,
        "canonical_onnx": {"notes": notes, "check": canonical_check},
        "analysis": analysis,
        "versions": source.versions(),
    }
    write_json_atomic(out_dir / "analysis.json", analysis)
    write_json_atomic(out_dir / "source.json", report)
    return report


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
