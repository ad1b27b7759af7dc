"""TensorFlow sources: .keras, legacy .h5 and SavedModel build with the real tf2onnx/TFLiteConverter."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import executed_tasks, make_project, run_doit, run_mbuild

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

MAKE_MODELS = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, keras, tensorflow as tf
    out = sys.argv[1]
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(6, 6, 2), name="pix")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3)(x))
    model.save(f"{out}/m.keras")
    model.save(f"{out}/m.h5")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda pix: {"scores": model(pix)},
                         input_signature=[tf.TensorSpec([1, 6, 6, 2], tf.float32, name="pix")])
    archive.write_out(f"{out}/saved", verbose=False)
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 6, 6, 2)).astype("float32")
    np.savez(f"{out}/val.npz", x=x)
""")

MANIFEST = """\
mbuild: 1
name: tf-{kind}
version: 1.0.0
source:
  tensorflow: {{model: ../models/{file}}}
inputs:
  pix: {{shape: [1, 6, 6, 2], dtype: float32, range: [0, 1], layout: NHWC}}
outputs:
  scores: {{kind: classification}}
data:
  validation: {{npz: ../models/val.npz, inputs: {{pix: x}}}}
recipes:
  fp32: {{precision: fp32}}
targets:
  cpu: {{runtime: onnxruntime, recipe: fp32}}
  tfl: {{runtime: tflite, recipe: fp32}}
"""


@pytest.fixture(scope="module")
def tf_project(tmp_path_factory):
    files = {"keras": "m.keras", "h5": "m.h5", "saved": "saved"}
    project = make_project(tmp_path_factory.mktemp("tf"), {f"{k}.yaml": MANIFEST.format(kind=k, file=f)
                                                           for k, f in files.items()}, examples=())
    (project / "models").mkdir()
    subprocess.run([sys.executable, "-c", MAKE_MODELS, str(project / "models")], check=True,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    return project


def test_keras_h5_and_savedmodel_build_cpu_and_tflite(tf_project):
    proc = run_doit(tf_project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for kind in ("keras", "h5", "saved"):
        assert (tf_project / "dist" / f"tf-{kind}-1.0.0.mbundle").exists()
        assert f"check:tf-{kind}/tfl" in executed_tasks(proc.stdout)
    assert "Traceback" not in proc.stdout + proc.stderr


def test_wrong_layout_is_a_manifest_error_naming_nhwc(tf_project):
    path = tf_project / "manifests" / "keras.yaml"
    bad = tf_project / "manifests" / "bad.yaml.txt"
    text = path.read_text().replace("name: tf-keras", "name: tf-bad").replace("[1, 6, 6, 2]", "[1, 2, 6, 6]")
    bad.write_text(text.replace("{npz: ../models/val.npz, inputs: {pix: x}}", "{synthetic: {count: 4}}"))
    proc = subprocess.run([sys.executable, "-m", "mbuild.actions", "source", str(bad)], cwd=tf_project,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "NHWC" in proc.stderr and "Traceback" not in proc.stderr


def test_coreml_target_is_refused_for_tensorflow(tf_project):
    path = tf_project / "manifests" / "keras.yaml"
    bad = tf_project / "manifests" / "ios.yaml.txt"
    bad.write_text(path.read_text() + "  ios: {runtime: coreml, recipe: fp32}\n")
    proc = run_mbuild("validate", str(bad), cwd=tf_project)
    assert proc.returncode != 0
    assert "cannot be built from a tensorflow source" in proc.stderr + proc.stdout
