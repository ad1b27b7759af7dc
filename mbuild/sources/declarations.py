"""Check the manifest's input and output declarations against the real model at ``source:`` time.

A declaration that does not fit (outputs in the wrong order, a class axis that is not there, a
labels file with the wrong number of lines, a state output of another shape than its input) is a
manifest error at the output's file:line:col, before any variant is built on top of it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mbuild.errors import ManifestError
from mbuild.manifest._yaml import dotted

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest

log = logging.getLogger(__name__)


def _error(manifest: "Manifest", output: str, message: str, field: tuple = ()) -> ManifestError:
    key = ("outputs", output) + tuple(field)
    loc = manifest.positions.of(key) or manifest.positions.of(("outputs", output), key=True)
    return ManifestError(message, loc, dotted(key))


def read_labels_file(path) -> list[str]:
    """One label a line; a trailing newline does not make an empty label (a line holding a space does count)."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def check_outputs(manifest: "Manifest", reference: dict[str, np.ndarray], labels: np.ndarray | None) -> dict:
    """Raise ManifestError for a declaration the model contradicts; return the resolved semantics for reports."""
    from mbuild.validate.semantics import DeclarationError, resolve_all

    shapes = {n: tuple(a.shape[1:]) for n, a in reference.items()}
    for name, spec in manifest.outputs.items():
        arr = reference[name]
        if spec.shape is not None and tuple(spec.shape) != shapes[name]:
            raise _error(manifest, name, f"the model returns shape {list(shapes[name])} for this output, the manifest "
                                         f"declares {list(spec.shape)} (are the outputs declared in the model's order?)",
                         ("shape",))
        if spec.dtype is not None and np.dtype(spec.dtype) != arr.dtype:
            raise _error(manifest, name, f"the model returns {arr.dtype} for this output, the manifest declares "
                                         f"{spec.dtype}", ("dtype",))
        if spec.state_input is not None:
            want = manifest.inputs[spec.state_input].shape
            if tuple(want) != shapes[name]:
                raise _error(manifest, name, f"this state output has shape {list(shapes[name])} but feeds input "
                                             f"{spec.state_input!r} of shape {list(want)}", ("state", "input"))
    try:
        resolved = resolve_all(manifest.outputs, shapes)
    except DeclarationError as e:
        raise _error(manifest, e.output, str(e), e.field) from None
    summary = {}
    for name, res in resolved.items():
        spec = manifest.outputs[name]
        entry = {"kind": res.kind, "shape": list(res.shape), "dtype": str(reference[name].dtype), "axis": res.axis}
        classes = res.classes if res.kind in ("classification", "segmentation", "sequence") else None
        if res.kind == "detection":
            scores = res.parts["scores"]
            classes = scores.stop - scores.start
            entry["parts"] = {p.name: {"output": p.output, "axis": p.axis, "range": [p.start, p.stop]}
                              for p in res.parts.values()}
        if classes is not None:
            entry["classes"] = classes
        if spec.labels is not None:
            names = read_labels_file(spec.labels)
            if classes is not None and len(names) != classes:
                raise _error(manifest, name, f"{manifest.rel(spec.labels)} has {len(names)} label(s) but the model's "
                                             f"class axis has {classes} entries (shape {list(res.shape)})", ("labels",))
            entry["labels"] = len(names)
        summary[name] = entry
    _check_data_labels(manifest, reference, resolved, labels)
    return summary


def _check_data_labels(manifest: "Manifest", reference, resolved, labels: np.ndarray | None) -> None:
    """Data-set labels must index the class axis; a reference accuracy below chance is reported."""
    if labels is None:
        return
    name = next((n for n, s in manifest.outputs.items() if s.kind == "classification"), None)
    if name is None:
        return
    classes = resolved[name].classes
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise _error(manifest, name, f"the validation labels go from {int(labels.min())} to {int(labels.max())}, but "
                                     f"this output's class axis has {classes} entries (shape {list(resolved[name].shape)}); "
                                     "are the outputs declared in the model's order?", ("kind",))


def chance_warning(manifest: "Manifest", accuracy: float | None, summary: dict) -> str | None:
    """A line when the source itself scores at or below chance on labelled data (outputs in the wrong order?)."""
    if accuracy is None:
        return None
    name = next((n for n, s in manifest.outputs.items() if s.kind == "classification"), None)
    classes = summary.get(name, {}).get("classes") if name else None
    if not classes:
        return None
    chance = 100.0 / classes
    if accuracy <= 1.5 * chance:
        return (f"warning: source:{manifest.name}: the source model's accuracy on the validation labels is "
                f"{accuracy:.1f}%, near chance ({chance:.1f}% for {classes} classes); check that the labels match the "
                f"data and that outputs are declared in the model's order")
    return None


def check_onnx_inputs(manifest: "Manifest", model) -> None:
    """Declared input shapes and dtypes against an ONNX graph's static dimensions and element types."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in inits or value.name not in manifest.inputs:
            continue
        spec = manifest.inputs[value.name]
        tt = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        loc = manifest.positions.of(("inputs", value.name, "shape")) or manifest.positions.of(("inputs", value.name))
        if tt.HasField("shape") and (len(dims) != len(spec.shape) or any(
                d is not None and d > 0 and d != s for d, s in zip(dims, spec.shape))):
            shown = [d if d else "?" for d in dims]
            raise ManifestError(f"the ONNX model takes shape {shown} for input {value.name!r}, the manifest declares "
                                f"{list(spec.shape)}", loc, f"inputs.{value.name}.shape")
        if tt.elem_type:
            have = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            if have != spec.dtype:
                raise ManifestError(f"the ONNX model takes {have} for input {value.name!r}, the manifest declares "
                                    f"{spec.dtype}", manifest.positions.of(("inputs", value.name, "dtype"))
                                    or manifest.positions.of(("inputs", value.name)), f"inputs.{value.name}.dtype")
