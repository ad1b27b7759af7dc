"""A remembered YAML parse gives exactly what parsing gives: the same manifest, the same error places."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mbuild.errors import ManifestError
from mbuild.manifest import _parse_cache, load_manifest
from tests.conftest import DIGITS_CPU, REPO, make_project

# a semantic error (the recipe is not declared) found after parsing: its place comes from the positions
BAD_RECIPE = DIGITS_CPU.replace("cpu-int8: {runtime: onnxruntime, recipe: int8}",
                                "cpu-int8: {runtime: onnxruntime, recipe: int9}")


@pytest.fixture
def project(tmp_path):
    root = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    (root / ".mbuild").mkdir()
    return root


def _cached(root):
    return sorted((root / ".mbuild" / "yaml").glob("*.json"))


def test_a_second_load_reads_the_parse_back_and_gets_the_same_manifest(project):
    path = project / "manifests" / "digits.yaml"
    first = load_manifest(path, project)
    assert len(_cached(project)) == 1
    second = load_manifest(path, project)
    assert second == first
    code = ("import sys; from mbuild.manifest import load_manifest; "
            f"load_manifest({str(path)!r}, {str(project)!r}); print('yaml' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "False", "a remembered parse still imported PyYAML"


def test_an_error_found_after_parsing_names_the_same_place_from_a_remembered_parse(project):
    path = project / "manifests" / "digits.yaml"
    path.write_text(BAD_RECIPE)
    with pytest.raises(ManifestError) as parsed:
        load_manifest(path, project)
    assert len(_cached(project)) == 1  # the YAML itself was clean
    with pytest.raises(ManifestError) as recalled:
        load_manifest(path, project)
    assert str(recalled.value) == str(parsed.value)
    line = next(i for i, text in enumerate(BAD_RECIPE.splitlines(), 1) if "int9" in text)
    column = BAD_RECIPE.splitlines()[line - 1].index("int9") + 1
    assert f"digits.yaml:{line}:{column}: " in str(parsed.value)


def test_an_edit_is_parsed_again_and_a_damaged_entry_is_ignored(project):
    path = project / "manifests" / "digits.yaml"
    load_manifest(path, project)
    path.write_text(DIGITS_CPU.replace("version: 1.0.0", "version: 1.0.1"))
    assert load_manifest(path, project).version == "1.0.1"
    assert len(_cached(project)) == 2
    for entry in _cached(project):
        entry.write_text('{"data": ')
    assert load_manifest(path, project).version == "1.0.1"


def test_a_yaml_error_is_never_remembered(project):
    path = project / "manifests" / "digits.yaml"
    path.write_text(DIGITS_CPU + "targets: {}\n")  # a duplicate key
    for _ in range(2):
        with pytest.raises(ManifestError, match="duplicate key 'targets'"):
            load_manifest(path, project)
    assert _cached(project) == []


def test_data_json_cannot_give_back_exactly_is_not_kept(tmp_path):
    from mbuild.manifest._yaml import Positions

    _parse_cache.remember(tmp_path, b"x", {"shape": (1, 2)}, Positions())  # a tuple comes back as a list
    _parse_cache.remember(tmp_path, b"y", {"n": 1, "f": 1.0, "b": True}, Positions())
    assert [p.name for p in tmp_path.glob("*.json")] == [f"{_parse_cache._key(b'y')}.json"]
