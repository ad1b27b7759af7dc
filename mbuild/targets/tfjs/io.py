"""The graph model's I/O contract: manifest names -> signature keys, and the layout changes onnx2tf made.

A SavedModel from a Keras source carries the manifest's names and shapes. One from onnx2tf (PyTorch and
ONNX sources) names inputs after the canonical ONNX's inputs and outputs ``output_0``.. in order, and
takes and gives 3-5-D tensors channels-last; the plan says where ``run`` and apps transpose. It is
stored in model.json's ``userDefinedMetadata.mbuild`` (tfjs's own field for app metadata), so
``run`` reads it back from the artifact and an app finds it there.
"""
from __future__ import annotations

from mbuild.errors import BuildError


def _dims(sig_entry: dict) -> list[int]:
    return [int(d.get("size", -1)) for d in sig_entry.get("tensorShape", {}).get("dim", [])]


def _fits(model_shape: list[int], shape: list[int]) -> bool:
    return len(model_shape) == len(shape) and all(m in (-1, s) for m, s in zip(model_shape, shape))


def _channels_last(shape: list[int]) -> tuple[list[int], list[int]]:
    """The perm that moves axis 1 last (NCHW -> NHWC) and the shape it gives."""
    perm = [0, *range(2, len(shape)), 1]
    return perm, [shape[p] for p in perm]


def _match(side: str, name: str, model_shape: list[int], shape: list[int]) -> list[int] | None:
    """None if the model takes the shape as declared, else the channels-last perm it takes it in."""
    if _fits(model_shape, shape):
        return None
    if 3 <= len(shape) <= 5:
        perm, moved = _channels_last(shape)
        if _fits(model_shape, moved):
            return perm
    raise BuildError(f"tfjs: the graph model's {side} for {name!r} has shape {model_shape}, which is neither the "
                     f"declared {shape} nor its channels-last form")


def plan_io(manifest, signature: dict, output_shapes: dict[str, tuple]) -> dict:
    """Manifest inputs/outputs -> signature keys, shapes and perms (``output_shapes``: per sample, from the reference)."""
    sig_in, sig_out = signature.get("inputs", {}), signature.get("outputs", {})
    if len(sig_in) != len(manifest.inputs) or len(sig_out) != len(manifest.outputs):
        raise BuildError(f"tfjs: the graph model has {len(sig_in)} input(s) and {len(sig_out)} output(s); the manifest "
                         f"declares {len(manifest.inputs)} and {len(manifest.outputs)}")
    inputs = []
    in_keys = list(sig_in)
    for i, (name, spec) in enumerate(manifest.inputs.items()):
        key = name if name in sig_in else in_keys[i]
        model_shape = _dims(sig_in[key])
        inputs.append({"name": name, "key": key, "shape": list(spec.shape), "model_shape": model_shape,
                       "perm": _match("input", name, model_shape, list(spec.shape))})
    outputs = []
    if set(manifest.outputs) <= set(sig_out):
        out_keys = list(manifest.outputs)
    else:  # onnx2tf's output_0, output_1, ..: in the ONNX model's output order (output_10 after output_9)
        out_keys = sorted(sig_out, key=lambda k: (len(k), k))
    for name, key in zip(manifest.outputs, out_keys):
        model_shape = _dims(sig_out[key])
        shape = list(output_shapes[name])
        outputs.append({"name": name, "key": key, "shape": shape, "model_shape": model_shape,
                        "perm": _match("output", name, model_shape, shape)})
    return {"inputs": inputs, "outputs": outputs}


def layout_changes(plan: dict) -> list[dict]:
    return [{"side": side[:-1], "tensor": e["name"], "from": e["shape"], "to": e["model_shape"], "perm": e["perm"]}
            for side in ("inputs", "outputs") for e in plan[side] if e["perm"]]


def to_model(plan: dict, inputs: dict) -> dict:
    """Inputs keyed by signature key, transposed where the model takes them channels-last."""
    import numpy as np

    out = {}
    for e in plan["inputs"]:
        x = inputs[e["name"]]
        out[e["key"]] = np.transpose(x, [0, *(p + 1 for p in e["perm"])]) if e["perm"] else x
    return out


def from_model(plan: dict, produced: dict) -> dict:
    """Outputs keyed by manifest name in the declared layout (channels-last ones transposed back)."""
    import numpy as np

    out = {}
    for e in plan["outputs"]:
        y = produced[e["key"]]
        if e["perm"]:
            inverse = list(np.argsort(e["perm"]))
            y = np.transpose(y, [0, *(int(p) + 1 for p in inverse)])
        out[e["name"]] = y.reshape(len(y), *e["shape"]) if y[0].size == int(np.prod(e["shape"])) else y
    return out
