"""Model analysis: FLOPs/MACs (onnx-tool, or PyTorch's own counter for PyTorch sources), params, memory, ops."""
from __future__ import annotations

import contextlib
import io
from collections import Counter
from pathlib import Path

import numpy as np


def _profile(path: Path, shapes: dict[str, tuple[int, ...]]):
    import onnx_tool

    with contextlib.redirect_stdout(io.StringIO()):
        model = onnx_tool.Model(str(path))
        graph = model.graph
        graph.shape_infer({n: np.zeros(s, dtype=np.float32) for n, s in shapes.items()})
        graph.profile()
    return graph


def onnx_flops(path: Path, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """FLOPs (2 per multiply-add) from onnx-tool's MAC count."""
    try:
        graph = _profile(path, shapes)
    except Exception:  # noqa: BLE001 - a profile we cannot make is reported as unknown, not guessed
        return None
    macs = graph.macs[0] if isinstance(graph.macs, (list, tuple)) else graph.macs
    return int(2 * macs) or None  # 0 means onnx-tool could not see the work (e.g. inside If/Loop): unknown


def iter_graphs(graph):
    """An ONNX graph and every subgraph (If/Loop/Scan bodies) inside it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == attr.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_graphs(sub)


def onnx_params(path: Path) -> int:
    """Elements of every initializer, subgraphs (If/Loop bodies) included."""
    import onnx

    model = onnx.load(str(path))
    return int(sum(int(np.prod(i.dims)) for g in iter_graphs(model.graph) for i in g.initializer))


def memory_estimate(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict:
    """Weights bytes plus the largest live set of activations of one op (inputs + outputs), in bytes."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    weights = sum(_tensor_bytes(i) for i in model.graph.initializer)
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001
        pass
    sizes: dict[str, int] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        sizes[vi.name] = _value_bytes(vi, shapes)
    inits = {i.name for i in model.graph.initializer}
    peak = 0
    for node in model.graph.node:
        live = sum(sizes.get(t, 0) for t in list(node.input) + list(node.output) if t and t not in inits)
        peak = max(peak, live)
    return {"weights_bytes": int(weights), "peak_activation_bytes": int(peak), "total_bytes": int(weights + peak),
            "method": "weights + largest single-op activation set (static estimate)"}


_ELEM = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2, 21: 1, 22: 1}


def _tensor_bytes(t) -> int:
    if t.raw_data:
        return len(t.raw_data)
    return int(np.prod(t.dims)) * _ELEM.get(t.data_type, 4)


def _value_bytes(vi, shapes) -> int:
    tt = vi.type.tensor_type
    if vi.name in shapes:
        dims = shapes[vi.name]
    else:
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
    return int(np.prod(dims)) * _ELEM.get(tt.elem_type, 4) if dims is not None else 0


def onnx_op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path))
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))
