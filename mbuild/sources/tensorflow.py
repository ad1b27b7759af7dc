"""TensorFlow/Keras sources (SavedModel, .keras, .h5): not implemented yet (issue 6)."""
from __future__ import annotations

from mbuild.errors import BuildError


def load(manifest):
    raise BuildError("TensorFlow sources are not implemented yet; convert the model to ONNX (tf2onnx) and use "
                     "'source: {onnx: ...}'")


run_reference = export_onnx = count_flops = count_params = load


def versions() -> dict[str, str]:
    return {}
