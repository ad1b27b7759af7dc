"""The fp16 range scan names the activations an fp16 GPU/ANE would overflow or flush."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mbuild.analyze.fp16_range import fp16_range


def test_overflow_and_underflow_are_named(tmp_path):
    big = numpy_helper.from_array(np.array(3e5, dtype=np.float32), "big")
    tiny = numpy_helper.from_array(np.array(1e-7, dtype=np.float32), "tiny")
    nodes = [helper.make_node("Mul", ["x", "big"], ["blown_up"], name="scale_up"),
             helper.make_node("Mul", ["x", "tiny"], ["vanishing"], name="scale_down"),
             helper.make_node("Add", ["blown_up", "vanishing"], ["y"], name="sum")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [big, tiny])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    x = np.random.default_rng(0).uniform(0.5, 1.0, (4, 1, 8)).astype(np.float32)
    found = fp16_range(path, {"x": x})
    assert {t["tensor"] for t in found["overflow"]} == {"blown_up", "y"} and found["overflow"][0]["max_abs"] > 65504
    assert [t["tensor"] for t in found["underflow"]] == ["vanishing"]
    assert found["checked_tensors"] == 3 and not path.with_name("m.fp16range.onnx").exists()
