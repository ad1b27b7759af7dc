"""Manifest paths and symlinks that leave the project root are refused; links inside the root still work."""
from __future__ import annotations

import os
import shutil

import pytest

from mbuild.errors import ManifestError
from mbuild.manifest import load_manifest
from tests.conftest import DIGITS_CPU, make_project, run_mbuild


@pytest.fixture
def layout(tmp_path):
    """A project next to an 'outside' folder holding copies of the example files."""
    project = make_project(tmp_path / "project", {"digits.yaml": DIGITS_CPU})
    outside = tmp_path / "outside"
    shutil.copytree(project / "examples" / "digits", outside)
    (outside / "base.yaml").write_text("recipes:\n  fp32: {precision: fp32}\n")
    return project, outside


def _refused(project, text: str, key: str) -> ManifestError:
    path = project / "manifests" / "digits.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert "leaves the project root" in err.value.reason, str(err.value)
    assert err.value.key_path == key and err.value.location is not None
    return err.value


@pytest.mark.parametrize("value,key", [
    ("/etc/passwd", "data.validation.npz"),
    ("../../outside/val.npz", "data.validation.npz"),
    ("../examples/../../outside/val.npz", "data.validation.npz"),
])
def test_written_paths_outside_the_root(layout, value, key):
    project, _ = layout
    _refused(project, DIGITS_CPU.replace("../examples/digits/val.npz", value), key)


def test_model_code_and_extends_outside_the_root(layout):
    project, _ = layout
    _refused(project, DIGITS_CPU.replace("../examples/digits/model.py", "../../outside/model.py"),
             "source.pytorch.model")
    _refused(project, "extends: ../../outside/base.yaml\n" + DIGITS_CPU, "extends")


def test_file_symlink_escaping_the_root(layout):
    project, outside = layout
    weights = project / "examples" / "digits" / "weights.pt"
    weights.unlink()
    weights.symlink_to(outside / "weights.pt")
    _refused(project, DIGITS_CPU, "source.pytorch.weights")
    proc = run_mbuild("validate", "manifests/digits.yaml", cwd=project)
    assert proc.returncode == 2 and "leaves the project root" in proc.stderr and "Traceback" not in proc.stderr


def test_directory_symlink_escaping_the_root(layout):
    project, outside = layout
    shutil.rmtree(project / "examples" / "digits")
    os.symlink(outside, project / "examples" / "digits", target_is_directory=True)
    _refused(project, DIGITS_CPU, "source.pytorch.model")


def test_symlinks_inside_the_root_are_fine(layout):
    project, _ = layout
    real = project / "examples" / "digits" / "weights.pt"
    moved = project / "examples" / "weights-store.pt"
    real.rename(moved)
    real.symlink_to(moved)
    m = load_manifest(project / "manifests" / "digits.yaml")
    assert m.source.weights == moved.resolve()
