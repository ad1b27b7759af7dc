"""A SavedModel as it comes: dict outputs in another order than declared, constants captured by the signature.

tf2onnx used to make the three captured constants graph inputs ('5757:0', ...) and the export was refused.
Now the function is frozen first (captures folded into constants), the ONNX graph takes only the declared
input, its outputs carry the manifest's names in the manifest's order, and it computes what TensorFlow does.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import make_project

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

MAKE = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
            self.c1 = tf.constant(np.arange(3, dtype=np.float32))  # captured constants, not variables
            self.c2 = tf.constant(np.full(3, 2.0, np.float32))
            self.c3 = tf.constant(np.full(3, 0.5, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="input_2")])
        def serve(self, x):
            y = tf.matmul(x, self.w)
            return {"contour": y + self.c1, "note": y * self.c2, "onset": tf.sigmoid(y * self.c3)}

    m = M()
    tf.saved_model.save(m, sys.argv[1], signatures={"serving_default": m.serve})
    np.savez(sys.argv[2], x=np.random.default_rng(1).normal(size=(8, 1, 4)).astype(np.float32))
""")

MANIFEST = """\
mbuild: 1
name: tfdict
version: 1.0.0
source:
  tensorflow: {model: ../models/sm}
inputs:
  input_2: {shape: [1, 4], dtype: float32}
outputs:
  note: {}
  onset: {}
  contour: {}
data:
  validation: {npz: ../models/val.npz, inputs: {input_2: x}}
recipes:
  fp32: {precision: fp32}
targets:
  cpu: {runtime: onnxruntime, recipe: fp32}
"""


@pytest.mark.slow
def test_captured_constants_are_folded_and_dict_outputs_matched_by_name(tmp_path):
    import onnxruntime as ort

    from mbuild.manifest import load_manifest
    from mbuild.sources import tensorflow as tfsource

    project = make_project(tmp_path / "p", {"tf.yaml": MANIFEST}, examples=())
    (project / "models").mkdir()
    subprocess.run([sys.executable, "-c", MAKE, str(project / "models" / "sm"), str(project / "models" / "val.npz")],
                   check=True, capture_output=True, timeout=300)
    m = load_manifest(project / "manifests" / "tf.yaml", check_targets=False)
    model = tfsource.load(m)
    x = np.load(project / "models" / "val.npz")["x"]
    reference = tfsource.run_reference(m, model, {"input_2": x})
    out = tmp_path / "model.onnx"
    notes = tfsource.export_onnx(m, model, out)
    assert notes and "tf2onnx" in notes[0]
    session = ort.InferenceSession(str(out))
    assert [i.name for i in session.get_inputs()] == ["input_2"]
    assert [o.name for o in session.get_outputs()] == ["note", "onset", "contour"]
    for i in range(len(x)):
        got = session.run(None, {"input_2": x[i]})
        for name, value in zip(["note", "onset", "contour"], got):
            np.testing.assert_allclose(value, reference[name][i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reference["contour"][0] - reference["note"][0] / 2, np.arange(3, dtype=np.float32)[None],
                               rtol=1e-5, atol=1e-5)  # matched by name: contour is y + [0, 1, 2], note is 2y
