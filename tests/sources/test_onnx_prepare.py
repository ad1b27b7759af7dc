"""Graph preparation keeps models runnable: renames reach the subgraphs that read outer tensors."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mbuild.sources.onnx_prepare import prepare_onnx


def _branch(name: str, k: float):
    return helper.make_graph(
        [helper.make_node("Mul", ["enc/h", f"{name}/k"], [f"{name}/y"])], name, [],
        [helper.make_tensor_value_info(f"{name}/y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(k, np.float32), f"{name}/k")])


def test_safe_names_reach_subgraphs(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["enc/h"]), helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=_branch("then", 2.0), else_branch=_branch("else", 3.0))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "a.onnx"))
    changes = prepare_onnx(tmp_path / "a.onnx", tmp_path / "b.onnx", {"x": (1, 4)}, simplify=False)
    assert any(c.startswith("renamed 5 ") for c in changes), changes
    prepared = onnx.load(str(tmp_path / "b.onnx"))
    names = {t for n in prepared.graph.node for t in list(n.input) + list(n.output)}
    assert not any("/" in t for t in names)
    x = np.array([[1, -2, 3, 4]], np.float32)
    for f in ("a.onnx", "b.onnx"):
        out = ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_array_equal(out, [[2, 0, 6, 8]])


def _slice_model(starts, ends, axes):
    big = np.iinfo(np.int64).max
    arrays = {"starts": starts, "ends": [big if e is None else e for e in ends], "axes": axes}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in arrays.items()]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_slice_axes_that_keep_everything_are_dropped_for_onnx2tf(tmp_path):
    """onnxslim merges Slices into one with no-op axes, which onnx2tf mis-converts to an empty tensor."""
    x = np.random.default_rng(0).normal(size=(1, 4, 6)).astype(np.float32)
    for starts, ends, axes, kept in (([0, 1, 0], [None, 3, None], [0, 1, 2], [1]), ([0, 0], [None, None], [0, 2], None)):
        onnx.save(_slice_model(starts, ends, axes), str(tmp_path / "a.onnx"))
        changes = prepare_onnx(tmp_path / "a.onnx", tmp_path / "b.onnx", {"x": (1, 4, 6)}, simplify=False,
                               for_onnx2tf=True)
        assert "dropped axes that keep everything from 1 Slice node(s)" in changes, changes
        prepared = onnx.load(str(tmp_path / "b.onnx"))
        inits = {i.name: numpy_helper.to_array(i) for i in prepared.graph.initializer}
        node = prepared.graph.node[0]
        if kept is None:
            assert node.op_type == "Identity"
        else:
            assert node.op_type == "Slice" and inits[node.input[3]].tolist() == kept
        want, got = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                     for f in ("a.onnx", "b.onnx"))
        np.testing.assert_array_equal(want, got)
