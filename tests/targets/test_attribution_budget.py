"""How many samples the int8 error attribution collects: as many as fit its memory bound, never a silent 4."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from mbuild.targets.onnxruntime.runtime import ATTRIBUTION_BYTES, ATTRIBUTION_SAMPLES, attribution_samples


def _relu_chain(path, side: int) -> None:
    """x -> Relu -> Relu -> y on [1, 1, side, side]: one intermediate tensor of side*side floats."""
    shape = [1, 1, side, side]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_a_small_model_gets_every_sample_and_a_large_one_what_fits(tmp_path):
    _relu_chain(tmp_path / "small.onnx", 8)
    assert attribution_samples(tmp_path / "small.onnx") == ATTRIBUTION_SAMPLES
    side = 4096  # 16 M floats per activation: 12 bytes each kept -> ~5 samples fit 1 GiB
    _relu_chain(tmp_path / "large.onnx", side)
    expected = ATTRIBUTION_BYTES // (side * side * 4 * 3)
    assert 1 <= expected < ATTRIBUTION_SAMPLES
    assert attribution_samples(tmp_path / "large.onnx") == expected
