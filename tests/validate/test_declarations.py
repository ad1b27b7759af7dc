"""Output declarations are checked against the real model at source: time; any tensor name works."""
from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import make_project, run_doit

TWO_HEADS = '''\
import torch


class TwoHeads(torch.nn.Module):
    """Class logits and a box, in that order."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Linear(64, 32)
        self.cls = torch.nn.Linear(32, 10)
        self.box = torch.nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.trunk(x.flatten(1)))
        return self.cls(h), self.box(h)
'''

MANIFEST = '''\
mbuild: 1
name: heads
version: 1.0.0
source:
  pytorch: {{model: ../examples/heads/model.py:TwoHeads}}
inputs:
  image: {{shape: [1, 1, 8, 8], range: [0, 1]}}
outputs:
{outputs}
data:
  validation: {{npz: ../examples/digits/val.npz, inputs: {{image: x}}, labels: y, limit: 64}}
recipes:
  fp32: {{precision: fp32}}
targets:
  cpu: {{runtime: onnxruntime, recipe: fp32}}
'''


def _heads_project(tmp_path, outputs: str, labels_lines: int | None = None):
    project = make_project(tmp_path, {"heads.yaml": MANIFEST.format(outputs=outputs)})
    (project / "examples" / "heads").mkdir(parents=True)
    (project / "examples" / "heads" / "model.py").write_text(TWO_HEADS)
    if labels_lines is not None:
        (project / "examples" / "heads" / "labels.txt").write_text("".join(f"digit {i}\n" for i in range(labels_lines)))
    return project


def _one_error_line(proc) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("error: ") and "manifests/heads.yaml" in line]
    assert lines, out
    return lines[0]


def test_outputs_declared_in_the_wrong_order_are_a_manifest_error(tmp_path):
    outputs = "  box: {kind: regression}\n  logits: {kind: classification}"
    line = _one_error_line(run_doit(_heads_project(tmp_path, outputs)))
    assert re.search(r"manifests/heads\.yaml:10:\d+: outputs\.logits", line), line
    assert "class axis has 4 entries" in line and "model's order" in line


def test_a_wrong_class_count_in_labels_is_a_manifest_error(tmp_path):
    outputs = "  logits: {kind: classification, labels: ../examples/heads/labels.txt}\n  box: {kind: regression}"
    line = _one_error_line(run_doit(_heads_project(tmp_path, outputs, labels_lines=9)))
    assert re.search(r"manifests/heads\.yaml:9:\d+: outputs\.logits\.labels", line), line
    assert "9 label(s)" in line and "10 entries" in line


def test_a_declared_shape_is_checked_and_labels_ship_in_the_bundle(tmp_path):
    outputs = ("  logits: {kind: classification, labels: ../examples/heads/labels.txt, shape: [1, 10]}\n"
               "  box: {kind: regression, shape: [1, 5]}")
    line = _one_error_line(run_doit(_heads_project(tmp_path / "bad", outputs, labels_lines=10)))
    assert "outputs.box.shape" in line and "[1, 4]" in line
    good = outputs.replace("[1, 5]", "[1, 4]")
    project = _heads_project(tmp_path / "good", good, labels_lines=10)
    run_doit(project, check=True)
    with zipfile.ZipFile(project / "dist/heads-1.0.0.mbundle") as zf:
        doc = json.loads(zf.read("bundle.json"))
        labels = zf.read("labels/logits.txt").decode()
    assert labels.splitlines()[3] == "digit 3"
    logits = next(o for o in doc["outputs"] if o["name"] == "logits")
    assert logits["labels"] == "labels/logits.txt" and logits["classes"] == 10 and logits["axis"] == 1
    metrics = doc["variants"][0]["validation"]["metrics"]
    assert set(metrics) == {"logits", "box"} and metrics["box"]["range_error"] is not None


def _paddle_style_model(path):
    """An ONNX model whose tensor names hold '/' and ':' (as Paddle and TensorFlow exports do)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (16, 8)).astype(np.float32), "fc.w")
    nodes = [helper.make_node("MatMul", ["x:0", "fc.w"], ["h"], name="fc"),
             helper.make_node("Softmax", ["h"], ["save_infer_model/scale_0.tmp_1"], axis=-1, name="softmax")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x:0", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("save_infer_model/scale_0.tmp_1", TensorProto.FLOAT, [1, 8])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))


def test_tensor_names_with_slash_and_colon_work_quoted_or_aliased(tmp_path):
    text = '''\
mbuild: 1
name: paddle
version: 1.0.0
source:
  onnx: {model: ../examples/p/model.onnx}
inputs:
  "x:0": {shape: [1, 16], range: [-1, 1]}
outputs:
  "save_infer_model/scale_0.tmp_1": {kind: classification}
recipes:
  fp32: {precision: fp32}
targets:
  cpu: {runtime: onnxruntime, recipe: fp32}
'''
    aliased = text.replace('"save_infer_model/scale_0.tmp_1": {kind: classification}',
                           'probs: {kind: classification, tensor: "save_infer_model/scale_0.tmp_1"}').replace(
                               "name: paddle", "name: paddle-alias")
    project = make_project(tmp_path, {"paddle.yaml": text, "alias.yaml": aliased}, examples=())
    (project / "examples" / "p").mkdir(parents=True)
    _paddle_style_model(project / "examples" / "p" / "model.onnx")
    run_doit(project, check=True)
    with zipfile.ZipFile(project / "dist/paddle-1.0.0.mbundle") as zf:
        doc = json.loads(zf.read("bundle.json"))
    (out,) = doc["outputs"]
    assert out["name"] == "save_infer_model/scale_0.tmp_1" and out["safe_name"] == "save_infer_model_scale_0_tmp_1"
    assert doc["variants"][0]["validation"]["status"] == "passed"
    with zipfile.ZipFile(project / "dist/paddle-alias-1.0.0.mbundle") as zf:
        (out,) = json.loads(zf.read("bundle.json"))["outputs"]
    assert out["name"] == "probs" and out["tensor"] == "save_infer_model/scale_0.tmp_1"
