"""ONNX graph preparation before quantizing or handing a model to another converter.

Converters and quantizers exit 0 on graphs they do not really understand: weights held
in ``Constant`` nodes are skipped by quantizers, symbolic shapes make onnx2tf guess, old
opsets rule out per-channel QDQ, some converters reject names with ``/`` or ``@``, and
onnx2tf fails on recurrent ops it maps onto Keras RNN layers (those can be unrolled, see
``onnx_recurrent``). Each fix applied is returned as a sentence for the variant's report.
"""
from __future__ import annotations

import re
from pathlib import Path

from mbuild.errors import BuildError

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def prepare_onnx(src: Path, dst: Path, input_shapes: dict[str, tuple[int, ...]] | None = None, *,
                 min_opset: int = 13, simplify: bool = True, safe_names: bool = True,
                 for_onnx2tf: bool = False) -> list[str]:
    """Write a prepared copy of ``src`` to ``dst``; return the changes made.

    ``for_onnx2tf`` also unrolls LSTM/GRU/RNN nodes with a static sequence length into primitive
    ops and drops Slice axes that keep everything: onnx2tf mis-converts both and exits 0.
    """
    import onnx

    model = onnx.load(str(src))
    changes: list[str] = []
    changes += _drop_initializer_inputs(model)
    changes += _constants_to_initializers(model.graph)
    if input_shapes:
        changes += _pin_shapes(model, input_shapes)
    opset = _default_opset(model)
    if opset < min_opset:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, min_opset)
        except Exception as e:
            raise BuildError(f"graph preparation: cannot upgrade opset {opset} to {min_opset}: {e}") from e
        changes.append(f"upgraded opset {opset} -> {min_opset}")
    if simplify:
        changes += _simplify(model_ref := [model])
        model = model_ref[0]
        changes += _constants_to_initializers(model.graph)
    if safe_names:
        changes += _safe_names(model.graph)
    if for_onnx2tf:
        from mbuild.sources.onnx_recurrent import lower_recurrent

        changes += lower_recurrent(model)
        changes += _trim_slices(model.graph)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - shape inference is best effort
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return changes


def _default_opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def _drop_initializer_inputs(model) -> list[str]:
    """Old exporters list initializers as graph inputs; quantizers then treat weights as inputs."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
        return [f"removed {dropped} initializer(s) listed as graph inputs"]
    return []


def _constants_to_initializers(graph) -> list[str]:
    """Turn ``Constant`` nodes into initializers, here and in subgraphs (weights quantizers can see)."""
    moved = _move_constants(graph)
    return [f"turned {moved} Constant node(s) into initializers"] if moved else []


def _move_constants(graph) -> int:
    from onnx import TensorProto, numpy_helper

    np = _np()
    moved = 0
    kept = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                moved += _move_constants(attr.g)
            elif attr.type == attr.GRAPHS:
                moved += sum(_move_constants(g) for g in attr.graphs)
        tensor = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            attr = {a.name: a for a in node.attribute}
            if "value" in attr:
                tensor = attr["value"].t
            elif "value_float" in attr:
                tensor = numpy_helper.from_array(np.array(attr["value_float"].f, dtype="float32"))
            elif "value_floats" in attr:
                tensor = numpy_helper.from_array(np.array(list(attr["value_floats"].floats), dtype="float32"))
            elif "value_int" in attr:
                tensor = numpy_helper.from_array(np.array(attr["value_int"].i, dtype="int64"))
            elif "value_ints" in attr:
                tensor = numpy_helper.from_array(np.array(list(attr["value_ints"].ints), dtype="int64"))
        if tensor is None:
            kept.append(node)
            continue
        init = TensorProto()
        init.CopyFrom(tensor)
        init.name = node.output[0]
        graph.initializer.append(init)
        moved += 1
    if moved:
        del graph.node[:]
        graph.node.extend(kept)
    return moved


def _trim_slices(graph) -> list[str]:
    """Drop Slice axes that keep everything (start 0, end past the end, step 1), here and in subgraphs.

    onnxslim merges neighbouring Slices into one with such axes; onnx2tf then cuts the wrong
    axis of the merged Slice and exits 0 with an empty tensor (Silero VAD's STFT).
    """
    trimmed = _trim_slices_in(graph, {})
    return [f"dropped axes that keep everything from {trimmed} Slice node(s)"] if trimmed else []


def _trim_slices_in(graph, outer: dict) -> int:
    from onnx import numpy_helper

    np = _np()
    consts = {**outer, **{i.name: i for i in graph.initializer}}
    trimmed = 0
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == attr.GRAPH else list(attr.graphs)):
                trimmed += _trim_slices_in(sub, consts)
        if node.op_type != "Slice" or node.domain not in ("", "ai.onnx") or len(node.input) < 3:
            continue
        names = list(node.input[1:]) + [""] * (5 - len(node.input))
        if any(n and n not in consts for n in names):
            continue
        starts, ends = (numpy_helper.to_array(consts[n]).astype(np.int64) for n in names[:2])
        axes = numpy_helper.to_array(consts[names[2]]) if names[2] else np.arange(len(starts))
        steps = numpy_helper.to_array(consts[names[3]]) if names[3] else np.ones_like(starts)
        keep = [k for k in range(len(starts)) if not (starts[k] == 0 and ends[k] >= 2**31 - 1 and steps[k] == 1)]
        if len(keep) == len(starts):
            continue
        trimmed += 1
        if not keep:
            node.op_type = "Identity"
            del node.input[1:]
            continue
        new_inputs = []
        for tag, values in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps)):
            name = f"{node.output[0]}_{tag}"
            while name in consts:
                name += "_"
            tensor = numpy_helper.from_array(np.asarray(values)[keep].astype(np.int64), name)
            graph.initializer.append(tensor)
            consts[name] = tensor
            new_inputs.append(tensor.name)
        del node.input[1:]
        node.input.extend(new_inputs)
    return trimmed


def _np():
    import numpy

    return numpy


def _pin_shapes(model, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    changes = []
    for inp in model.graph.input:
        if inp.name not in shapes:
            continue
        want = shapes[inp.name]
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != len(want):
            raise BuildError(f"graph preparation: input {inp.name!r} has rank {len(dims)} in the ONNX model but the "
                             f"manifest declares shape {list(want)}")
        pinned = []
        for d, w in zip(dims, want):
            if d.HasField("dim_value") and d.dim_value > 0:
                if d.dim_value != w:
                    raise BuildError(f"graph preparation: input {inp.name!r} has static shape "
                                     f"{[x.dim_value for x in dims]} but the manifest declares {list(want)}")
            else:
                pinned.append(d.dim_param or "?")
                d.ClearField("dim_param")
                d.dim_value = w
        if pinned:
            changes.append(f"pinned input {inp.name!r} dims {pinned} to {list(want)}")
    return changes


def _simplify(model_ref: list) -> list[str]:
    import onnxslim

    before = len(model_ref[0].graph.node)
    try:
        model_ref[0] = onnxslim.slim(model_ref[0])
    except Exception as e:  # noqa: BLE001 - simplification is an optimization, not a requirement
        return [f"onnxslim could not simplify the graph ({type(e).__name__}); kept it as is"]
    after = len(model_ref[0].graph.node)
    return [f"simplified with onnxslim: {before} -> {after} nodes (constants and shape subgraphs folded)"]


def _safe_names(graph) -> list[str]:
    """Rename nodes and inner tensors whose names hold characters some converters reject.

    Subgraphs (If/Loop bodies) read outer tensors by name, so renames apply to every graph at once;
    only the model's own inputs and outputs keep their names (the manifest's contract).
    """
    from mbuild.analyze import iter_graphs

    graphs = list(iter_graphs(graph))
    io_names = {v.name for v in list(graph.input) + list(graph.output)}
    taken: set[str] = set()
    for g in graphs:
        taken |= {n.name for n in g.node} | {t for n in g.node for t in list(n.input) + list(n.output)}
        taken |= {i.name for i in g.initializer} | {v.name for v in list(g.input) + list(g.output)}
    renames: dict[str, str] = {}

    def fresh(name: str) -> str:
        base = _SAFE.sub("_", name).strip("_") or "t"
        candidate, i = base, 1
        while candidate in taken:
            candidate, i = f"{base}_{i}", i + 1
        taken.add(candidate)
        return candidate

    for name in sorted(taken):
        if name and _SAFE.search(name) and name not in io_names:
            renames[name] = fresh(name)
    if not renames:
        return []
    for g in graphs:
        for node in g.node:
            if node.name in renames:
                node.name = renames[node.name]
            for i, t in enumerate(node.input):
                if t in renames:
                    node.input[i] = renames[t]
            for i, t in enumerate(node.output):
                if t in renames:
                    node.output[i] = renames[t]
        values = list(g.initializer) + list(g.value_info)
        if g is not graph:  # a subgraph's formal inputs/outputs are inner names too
            values += list(g.input) + list(g.output)
        for v in values:
            if v.name in renames:
                v.name = renames[v.name]
    return [f"renamed {len(renames)} node/tensor name(s) with characters converters reject (e.g. '/', '@', ':')"]
