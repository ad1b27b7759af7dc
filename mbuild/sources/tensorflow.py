"""TensorFlow/Keras sources: a SavedModel folder (one signature), a ``.keras`` file or a legacy ``.h5`` file.

Keras files load with Keras 3's own ``keras.saving.load_model`` (Keras 2 ``.h5`` files go through
its legacy loader); SavedModels with ``tf.saved_model.load`` and the named signature. Every use
of the model - reference outputs, tf2onnx, TFLiteConverter - goes through one ``tf.function``
whose inputs carry the manifest's names and declared shapes and whose outputs are a dict keyed
by the manifest's output names, so converted models keep those names.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mbuild.errors import BuildError, ManifestError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest

ONNX_OPSET = 17
FLOPS_COUNTER = "tf.profiler (float_operation)"
_LAYOUT_HINT = {4: "Keras image models are channels-last (NHWC): declare shape [N, H, W, C] and layout: NHWC"}


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingDependencyError("tensorflow", "tensorflow", "A TensorFlow source") from None
    return tf


@dataclass
class TFModel:
    """A loaded source: the Keras model or the SavedModel signature, and what was read from where."""

    kind: str  # 'keras' | 'saved_model'
    obj: Any  # keras.Model, or the loaded SavedModel (kept alive for its variables)
    signature: Any = None  # the SavedModel's ConcreteFunction
    path: Path | None = None
    _fn: Any = None


def load(manifest: "Manifest") -> TFModel:
    """The model with its inputs and outputs checked against the manifest's names and shapes."""
    tf = _tf()
    path = manifest.source.model_path
    loc = manifest.positions.of(("source", "tensorflow", "model"))
    if path.is_dir():
        model = _load_saved_model(tf, manifest, path, loc)
    elif path.suffix in (".keras", ".h5", ".hdf5"):
        import keras

        try:
            obj = keras.saving.load_model(str(path), compile=False)
        except Exception as e:  # noqa: BLE001 - any load failure is about the user's file
            raise ManifestError(f"{manifest.rel(path)} cannot be loaded by Keras {keras.__version__}: "
                                f"{type(e).__name__}: {_short(e)}", loc, "source.tensorflow.model") from None
        model = TFModel("keras", obj, path=path)
        _check_keras_io(manifest, obj)
    else:
        raise ManifestError(f"{manifest.rel(path)} is neither a SavedModel folder nor a .keras/.h5 file", loc,
                            "source.tensorflow.model")
    return model


def _load_saved_model(tf, manifest: "Manifest", path: Path, loc) -> TFModel:
    try:
        obj = tf.saved_model.load(str(path))
    except Exception as e:  # noqa: BLE001
        raise ManifestError(f"{manifest.rel(path)} is not a loadable SavedModel: {type(e).__name__}: {_short(e)}",
                            loc, "source.tensorflow.model") from None
    name = manifest.source.signature
    sigs = dict(getattr(obj, "signatures", {}) or {})
    if name not in sigs:
        raise ManifestError(f"{manifest.rel(path)} has no signature {name!r} (it has: {', '.join(sigs) or 'none'}); "
                            "set source.tensorflow.signature", manifest.positions.of(("source", "tensorflow")),
                            "source.tensorflow.signature")
    sig = sigs[name]
    specs = sig.structured_input_signature[1]
    if set(specs) != set(manifest.inputs):
        raise ManifestError(f"signature {name!r} takes inputs {sorted(specs)}, the manifest declares "
                            f"{list(manifest.inputs)}; declare the signature's input names",
                            manifest.positions.of(("inputs",)), "inputs")
    for n, spec in specs.items():
        _check_shape(manifest, n, spec.shape.as_list())
    outs = sig.structured_outputs
    if not isinstance(outs, dict) or set(outs) != {o.tensor_name for o in manifest.outputs.values()}:
        found = sorted(outs) if isinstance(outs, dict) else type(outs).__name__
        raise ManifestError(f"signature {name!r} returns {found}, the manifest declares outputs "
                            f"{list(manifest.outputs)}; declare the signature's output names",
                            manifest.positions.of(("outputs",)), "outputs")
    return TFModel("saved_model", obj, signature=sig, path=path)


def _check_keras_io(manifest: "Manifest", model) -> None:
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != len(manifest.inputs):
        raise ManifestError(f"the Keras model takes {len(inputs)} input(s), the manifest declares "
                            f"{len(manifest.inputs)} ({', '.join(manifest.inputs)})",
                            manifest.positions.of(("inputs",)), "inputs")
    for name, tensor in zip(_keras_input_order(manifest, model), inputs):
        _check_shape(manifest, name, list(tensor.shape))


def _keras_input_order(manifest: "Manifest", model) -> list[str]:
    """Manifest input names in the model's input order: by name when they match, else by position."""
    names = [getattr(t, "name", "").split(":")[0] for t in model.inputs]
    return names if set(names) == set(manifest.inputs) else list(manifest.inputs)


def _check_shape(manifest: "Manifest", name: str, model_shape: list) -> None:
    declared = list(manifest.inputs[name].shape)
    if len(model_shape) == len(declared) and all(m in (None, -1) or m == d for m, d in zip(model_shape, declared)):
        return
    shown = [d if d not in (None, -1) else "?" for d in model_shape]
    hint = _LAYOUT_HINT.get(len(declared), "declare the shape the model takes")
    raise ManifestError(f"input {name!r}: the model takes shape {shown}, the manifest declares {declared}; {hint}",
                        manifest.positions.of(("inputs", name, "shape")), f"inputs.{name}.shape")


def specs(manifest: "Manifest") -> list:
    """TensorSpecs named after the manifest's inputs, in manifest order, with the declared shapes."""
    tf = _tf()
    return [tf.TensorSpec(list(s.shape), tf.as_dtype(s.dtype), name=n) for n, s in manifest.inputs.items()]


def function(manifest: "Manifest", model: TFModel):
    """The model as a ``tf.function`` over the declared inputs returning ``{output name: tensor}``."""
    if model._fn is not None:
        return model._fn
    tf = _tf()
    in_names, out_names = list(manifest.inputs), list(manifest.outputs)

    if model.kind == "saved_model":
        tensor_of = {n: manifest.outputs[n].tensor_name for n in out_names}

        def call(*args):  # a signature returns a dict: outputs are matched by name, never by position
            result = model.signature(**dict(zip(in_names, args)))
            return {n: result[tensor_of[n]] for n in out_names}
    else:
        keras_order = _keras_input_order(manifest, model.obj)

        def call(*args):
            feed = dict(zip(in_names, args))
            x = feed[keras_order[0]] if len(keras_order) == 1 else [feed[n] for n in keras_order]
            return _name_outputs(manifest, model.obj(x, training=False))

    model._fn = tf.function(call, input_signature=specs(manifest), autograph=False)
    return model._fn


def _name_outputs(manifest: "Manifest", result) -> dict:
    names = list(manifest.outputs)
    tensors = {n: o.tensor_name for n, o in manifest.outputs.items()}
    if isinstance(result, dict) and set(result) == set(tensors.values()):
        return {n: result[tensors[n]] for n in names}
    flat = list(result.values()) if isinstance(result, dict) else (
        list(result) if isinstance(result, (list, tuple)) else [result])
    if len(flat) != len(names):
        raise ManifestError(f"the model returns {len(flat)} output(s) but the manifest declares {len(names)} "
                            f"({', '.join(names)})", manifest.positions.of(("outputs",)), "outputs")
    return dict(zip(names, flat))


def run_reference(manifest: "Manifest", model: TFModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fp32 outputs of the source on every sample, through the same function the converters see."""
    tf = _tf()
    fn = function(manifest, model)
    count = len(next(iter(inputs.values())))
    collected: dict[str, list] = {n: [] for n in manifest.outputs}
    for i in range(count):
        args = [tf.constant(np.ascontiguousarray(inputs[n][i])) for n in manifest.inputs]
        try:
            result = fn(*args)
        except ManifestError:
            raise
        except Exception as e:  # noqa: BLE001 - the model failed on the declared inputs
            raise BuildError(f"TensorFlow: running the source model failed: {type(e).__name__}: {_short(e)}") from e
        for n in manifest.outputs:
            collected[n].append(result[n].numpy())
    return {n: np.stack(v) for n, v in collected.items()}


def export_onnx(manifest: "Manifest", model: TFModel, out_path: Path) -> list[str]:
    """Canonical ONNX through tf2onnx (inputs/outputs named as in the manifest), then the usual preparation."""
    try:
        import tf2onnx
    except ImportError:
        raise MissingDependencyError("tf2onnx", "tensorflow", "Exporting TensorFlow models to ONNX") from None
    import onnx

    from mbuild.sources.onnx_prepare import prepare_onnx

    fn = function(manifest, model)
    unsupported = _Collector()
    logging.getLogger("tf2onnx").addHandler(unsupported)
    try:
        frozen = _frozen_if_capturing(manifest, fn)
        if frozen is None:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs(manifest), opset=ONNX_OPSET)
        else:
            graph_def, in_names, out_names = frozen
            proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=list(in_names), output_names=list(out_names),
                                                      opset=ONNX_OPSET)
            _rename_io(proto, {**in_names, **out_names})
    except Exception as e:  # noqa: BLE001 - tf2onnx raises anything; name the ops it reported
        raise BuildError(f"tf2onnx: conversion failed{unsupported.suffix()}: {type(e).__name__}: {_short(e)}") from e
    finally:
        logging.getLogger("tf2onnx").removeHandler(unsupported)
    if unsupported.ops:
        raise BuildError(f"tf2onnx: no ONNX equivalent for TensorFlow op(s) {', '.join(sorted(unsupported.ops))}")
    by_name = {o.name: o for o in proto.graph.output}
    missing = [n for n in manifest.outputs if n not in by_name]
    if missing or [i.name for i in proto.graph.input] != list(manifest.inputs):
        raise BuildError(f"tf2onnx named the graph's inputs {[i.name for i in proto.graph.input]} and outputs "
                         f"{list(by_name)}; expected {list(manifest.inputs)} and {list(manifest.outputs)}")
    ordered = [by_name[n] for n in manifest.outputs]
    del proto.graph.output[:]
    proto.graph.output.extend(ordered)
    shapes = {n: s.shape for n, s in manifest.inputs.items()}
    with tempfile.TemporaryDirectory(prefix="tf2onnx.", dir=Path(out_path).parent) as tmp:
        raw = Path(tmp) / "tf2onnx.onnx"
        onnx.save(proto, str(raw))
        notes = prepare_onnx(raw, out_path, shapes, min_opset=13)
    return [f"exported with tf2onnx {tf2onnx.__version__} (opset {ONNX_OPSET}) from the "
            f"{'Keras model' if model.kind == 'keras' else 'SavedModel signature ' + repr(manifest.source.signature)}"
            ] + notes


def _frozen_if_capturing(manifest: "Manifest", fn):
    """For a function that captures non-variable tensors (constants a SavedModel restores as captures): its frozen
    GraphDef with {graph tensor: manifest name} for inputs and outputs; None when nothing but variables is captured.

    tf2onnx's ``from_function`` turns such captures into extra graph inputs ('5757:0'); freezing folds them
    (and the variables) into constants, so the ONNX graph takes only the declared inputs.
    """
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = fn.get_concrete_function()
    captured = [t for t in concrete.captured_inputs if t.dtype != tf.resource]
    if not captured:
        return None
    frozen = convert_variables_to_constants_v2(concrete)
    if len(frozen.inputs) != len(manifest.inputs):
        raise BuildError(f"freezing the TensorFlow function left {len(frozen.inputs)} graph inputs, the manifest "
                         f"declares {len(manifest.inputs)}")
    in_names = {t.name: n for t, n in zip(frozen.inputs, manifest.inputs)}
    structured = concrete.structured_outputs  # a dict: its flattened order (sorted keys) is the outputs' order
    keys = sorted(structured) if isinstance(structured, dict) else []
    if set(keys) != set(manifest.outputs) or len(frozen.outputs) != len(keys):
        raise BuildError(f"the frozen TensorFlow function returns {keys}, expected {list(manifest.outputs)}")
    out_names = {t.name: k for t, k in zip(frozen.outputs, keys)}
    return frozen.graph.as_graph_def(), in_names, out_names


def _rename_io(proto, names: dict[str, str]) -> None:
    """Rename graph tensors (inputs, outputs and every use of them) to the manifest's names."""
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name in names:
            value.name = names[value.name]
    for node in proto.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]


class _Collector(logging.Handler):
    """Collects the TensorFlow op types tf2onnx reports as unsupported (it logs them, then goes on)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.ops: set[str] = set()

    def emit(self, record):
        import re

        msg = record.getMessage()
        for m in re.finditer(r"Tensorflow op \[[^\]]*: (\w+)\] is not supported", msg):
            self.ops.add(m.group(1))
        m = re.search(r"Unsupported ops: Counter\(\{(.*)\}\)", msg)
        if m:
            self.ops.update(re.findall(r"'(\w+)'", m.group(1)))

    def suffix(self) -> str:
        return f" (unsupported TensorFlow op(s): {', '.join(sorted(self.ops))})" if self.ops else ""


def tflite_converter(manifest: "Manifest", model: TFModel, work_dir: Path):
    """``tf.lite.TFLiteConverter`` on a SavedModel whose signature carries the manifest's names.

    A SavedModel source converts from its own folder and signature. A Keras model is first
    written by Keras' ``ExportArchive`` (which tracks its variables): converting the traced
    function directly leaves Keras 3 variables as uninitialized resources (NaN outputs).
    """
    tf = _tf()
    folder, signature = saved_model_for(manifest, model, work_dir)
    return tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=[signature])


def saved_model_for(manifest: "Manifest", model: TFModel, work_dir: Path) -> tuple[Path, str]:
    """A SavedModel folder and signature key whose inputs and outputs carry the manifest's names.

    A SavedModel source is its own folder and signature; a Keras model is written by Keras'
    ``ExportArchive`` into ``work_dir/keras_export`` (converters that read SavedModels take it).
    """
    if model.kind == "saved_model":
        return Path(model.path), manifest.source.signature
    import keras

    folder = Path(work_dir) / "keras_export"
    archive = keras.export.ExportArchive()
    archive.track(model.obj)
    archive.add_endpoint("serving_default", function(manifest, model).python_function, input_signature=specs(manifest))
    archive.write_out(str(folder), verbose=False)
    return folder, "serving_default"


def count_flops(manifest: "Manifest", model: TFModel) -> int | None:
    """FLOPs of one forward pass by TensorFlow's profiler on the traced graph (2 per multiply-add)."""
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    try:  # frozen, so calls into the SavedModel's functions are inlined and counted
        graph = convert_variables_to_constants_v2(function(manifest, model).get_concrete_function()).graph
        prof = tf.compat.v1.profiler.profile(graph=graph, options=opts)
    except Exception:  # noqa: BLE001 - FLOPs are informative; the analysis also has onnx-tool's count
        return None
    return int(prof.total_float_ops) if prof is not None else None


def count_params(model: TFModel) -> int:
    if model.kind == "keras":
        return int(model.obj.count_params())
    return int(sum(int(np.prod(v.shape)) for v in model.signature.variables))


def versions() -> dict[str, str]:
    from mbuild._io import dist_versions

    return dist_versions(("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"))


def _short(e: BaseException, limit: int = 600) -> str:
    text = " ".join(str(e).split())
    return text[:limit] + ("..." if len(text) > limit else "")
