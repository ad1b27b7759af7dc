"""Small ONNX models that reproduce the ways int8 goes wrong on real networks (built with onnx.helper)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="mbuild-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _io(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp_weights(rng, sizes):
    return [(rng.normal(0, 1 / np.sqrt(a), (a, b)), rng.normal(0, 0.1, b)) for a, b in zip(sizes, sizes[1:])]


def constant_weights_model() -> onnx.ModelProto:
    """Weights in ``Constant`` nodes, as some exporters write them: quantizers skip them silently."""
    rng = np.random.default_rng(0)
    nodes, prev = [], "x"
    for i, (w, b) in enumerate(mlp_weights(rng, [16, 64, 64, 10])):
        nodes.append(helper.make_node("Constant", [], [f"w{i}"], value=_init(f"w{i}c", w)))
        nodes.append(helper.make_node("Constant", [], [f"b{i}"], value=_init(f"b{i}c", b)))
        out = "y" if i == 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if i == 2 else f"g{i}"], name=f"fc{i}"))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out], name=f"relu{i}"))
        prev = out
    return _model(nodes, [_io("x", [1, 16])], [_io("y", [1, 10])])


def subgraph_weights_model() -> onnx.ModelProto:
    """The weights sit inside the branches of an ``If`` whose condition depends on the input."""
    rng = np.random.default_rng(1)
    ((w_a, _),), ((w_b, _),) = mlp_weights(rng, [16, 64]), mlp_weights(rng, [16, 64])

    def branch(name, w):
        return helper.make_graph([helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_y"])], name, [],
                                 [_io(f"{name}_y", [1, 64])], [_init(f"{name}_w", w)])

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["h"], then_branch=branch("then", w_a), else_branch=branch("else", w_b)),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    return _model(nodes, [_io("x", [1, 16])], [_io("y", [1, 64])], [_init("zero", 0.0)])


def boxes_and_scores_model() -> onnx.ModelProto:
    """One output concatenating box coordinates in [0, 320] with class scores in [0, 1], like a detector head."""
    rng = np.random.default_rng(2)
    (w1, b1), = mlp_weights(rng, [16, 32])
    (wb, bb), = mlp_weights(rng, [32, 4])
    (ws, bs), = mlp_weights(rng, [32, 20])
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], name="trunk"),
        helper.make_node("Relu", ["g1"], ["h"], name="trunk_relu"),
        helper.make_node("Gemm", ["h", "wb", "bb"], ["gb"], name="box_fc"),
        helper.make_node("Sigmoid", ["gb"], ["sb"], name="box_sigmoid"),
        helper.make_node("Mul", ["sb", "img"], ["boxes"], name="box_scale"),
        helper.make_node("Gemm", ["h", "ws", "bs"], ["gs"], name="score_fc"),
        helper.make_node("Sigmoid", ["gs"], ["scores"], name="score_sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1, name="head_concat"),
    ]
    inits = [_init("w1", w1), _init("b1", b1), _init("wb", wb), _init("bb", bb), _init("ws", ws * 3),
             _init("bs", bs), _init("img", 320.0)]
    return _model(nodes, [_io("x", [1, 16])], [_io("y", [1, 24])], inits)


def two_outlier_layers_model() -> onnx.ModelProto:
    """Six dense layers; two of them produce one huge activation channel that ruins per-tensor int8 ranges."""
    rng = np.random.default_rng(3)
    layers = mlp_weights(rng, [32, 64, 64, 64, 64, 64, 10])
    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(layers):
        w, b = w.copy(), b.copy()
        if i in (1, 3):  # these layers emit an outlier channel ...
            w[:, 0] *= 300.0
            b[0] = 300.0
        if i in (2, 4):  # ... which the next layer scales back down, so the float model is well behaved
            w[0, :] /= 300.0
        inits += [_init(f"w{i}", w), _init(f"b{i}", b)]
        last = i == len(layers) - 1
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], ["y" if last else f"g{i}"], name=f"fc{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"], name=f"relu{i}"))
            prev = f"h{i}"
    return _model(nodes, [_io("x", [1, 32])], [_io("y", [1, 10])], inits)
