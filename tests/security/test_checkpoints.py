"""Checkpoints as they come: the state dict under another key, beside step/optimizer state, loaded non-strictly.

`weights: {file, key, strict}` names where the state dict sits; with `strict: false` the keys that do not
fit are ignored and listed. A wrong key gets "did you mean" and the keys the file has, at file:line:col.
"""
from __future__ import annotations

import pytest

from mbuild.errors import ManifestError
from mbuild.manifest import load_manifest
from tests.conftest import DIGITS_CPU, make_project

torch = pytest.importorskip("torch")

WEIGHTS = "weights: ../examples/digits/weights.pt}"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("ckpt"), {})
    state = torch.load(root / "examples" / "digits" / "weights.pt", weights_only=True)
    state = state.get("state_dict", state)
    extra = {**state, "head_v2.weight": torch.zeros(3)}
    torch.save({"model_state": extra, "step": 1200, "optimizer_state": {"lr": torch.tensor(0.1)}},
               root / "examples" / "digits" / "ckpt.pt")
    return root


def _load(project, weights: str):
    from mbuild.sources import pytorch

    path = project / "manifests" / "ckpt.yaml"
    path.write_text(DIGITS_CPU.replace(WEIGHTS, f"weights: {weights}}}"))
    m = load_manifest(path, check_targets=False)
    return m, pytorch.load(m), pytorch


def test_a_checkpoint_under_another_key_loads_non_strictly_and_lists_ignored_keys(project):
    m, model, pytorch = _load(project, "{file: ../examples/digits/ckpt.pt, key: model_state, strict: false}")
    report = pytorch.weights_report(m)
    assert report["ignored_keys"] == ["head_v2.weight"] and report["missing_keys"] == []
    assert report["key"] == "model_state" and report["loaded"] == len(model.state_dict())
    assert m.raw["source"]["pytorch"]["weights"]["file"] == "examples/digits/ckpt.pt"  # root-relative in digests
    reference = torch.load(project / "examples" / "digits" / "weights.pt", weights_only=True)
    reference = reference.get("state_dict", reference)
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_strict_loading_of_a_checkpoint_with_extra_keys_says_how_to_load_it(project):
    with pytest.raises(ManifestError) as err:
        _load(project, "{file: ../examples/digits/ckpt.pt, key: model_state}")
    assert "strict: false" in str(err.value) and "ckpt.yaml:5:" in str(err.value), str(err.value)


def test_a_wrong_key_is_located_with_did_you_mean(project):
    with pytest.raises(ManifestError) as err:
        _load(project, "{file: ../examples/digits/ckpt.pt, key: model_stat, strict: false}")
    message = str(err.value)
    assert "has no key 'model_stat'; did you mean 'model_state'?" in message, message
    assert "optimizer_state" in message and "source.pytorch.weights.key" in message


def test_without_a_key_a_checkpoint_says_to_name_one(project):
    with pytest.raises(ManifestError) as err:
        _load(project, "../examples/digits/ckpt.pt")
    assert "weights: {file, key: ...}" in str(err.value), str(err.value)


def test_a_model_that_cannot_run_on_the_declared_shape_is_located(project):
    from mbuild.sources import pytorch

    path = project / "manifests" / "shape.yaml"
    path.write_text(DIGITS_CPU.replace("shape: [1, 1, 8, 8]", "shape: [1, 3, 8, 8]"))
    m = load_manifest(path, check_targets=False)
    model = pytorch.load(m)
    import numpy as np

    with pytest.raises(ManifestError) as err:
        pytorch.run_reference(m, model, {"image": np.zeros((2, 1, 3, 8, 8), np.float32)})
    message = str(err.value)
    assert "shape.yaml:" in message and "cannot run on the declared input shape(s) (image [1, 3, 8, 8])" in message, message
