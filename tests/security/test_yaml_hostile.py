"""Hostile YAML: tags that would run code, alias bombs, merges, deep nesting, huge files - all refused, located."""
from __future__ import annotations

import time

import pytest

from mbuild.errors import ManifestError
from mbuild.manifest import load_manifest
from tests.conftest import DIGITS_CPU, make_project, run_mbuild


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("hostile-yaml"), {"digits.yaml": DIGITS_CPU})


def _load(project, text: str) -> ManifestError:
    path = project / "manifests" / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    return err.value


CODE_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!custom {{cmd: 'touch {marker}'}}",
    "!!binary aGVsbG8=",
    "!!set {{a, b}}",
]


@pytest.mark.parametrize("tag", CODE_TAGS)
def test_custom_tags_are_refused_and_run_nothing(project, tmp_path, tag):
    marker = tmp_path / "PWNED"
    text = DIGITS_CPU.replace("version: 1.0.0", "version: " + tag.format(marker=marker))
    err = _load(project, text)
    assert "tag" in err.reason and "not allowed" in err.reason
    assert err.location is not None and err.location.line == 3
    assert not marker.exists()


def _billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return DIGITS_CPU + "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_quickly(project):
    start = time.monotonic()
    err = _load(project, _billion_laughs())
    assert time.monotonic() - start < 5
    assert "alias bomb" in str(err) and err.location is not None


def test_alias_bomb_through_the_cli(project):
    (project / "manifests" / "bomb.yaml").write_text(_billion_laughs())
    proc = run_mbuild("validate", "manifests/bomb.yaml", cwd=project)
    assert proc.returncode == 2 and "alias bomb" in proc.stderr and "Traceback" not in proc.stderr


def test_merge_keys_deep_nesting_control_chars_and_size(project):
    assert "merges" in _load(project, DIGITS_CPU.replace("recipes:\n", "base: &b {x: 1}\nrecipes:\n  <<: *b\n")).reason
    deep = DIGITS_CPU + "description: " + "[" * 3000 + "]" * 3000 + "\n"
    assert "nested more than" in _load(project, deep).reason
    err = _load(project, DIGITS_CPU.replace("name: digits-cnn", "name: digits\x07cnn"))
    assert "unacceptable character" in err.reason and err.location.line == 2
    big = DIGITS_CPU + "description: '" + "x" * 1_100_000 + "'\n"
    assert "larger than" in _load(project, big).reason
