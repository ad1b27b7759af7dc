"""libyaml's composer (the fast path of every manifest load) gives what the pure-Python parser gives."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mbuild.errors import ManifestError
from mbuild.manifest import _yaml
from tests.conftest import REPO

MANIFESTS = sorted([*REPO.glob("manifests/*.yaml"), *REPO.glob("conformance/manifests/*.yaml"),
                    *REPO.glob("examples/**/*.yaml"), *REPO.glob("bench/manifests/*.yaml")])


def _slow(monkeypatch, path: Path, display: str = "m.yaml"):
    monkeypatch.setattr(_yaml, "_compose_fast", lambda text: (None, None))
    try:
        return _yaml.load_yaml(path, display)
    finally:
        monkeypatch.undo()


def test_libyaml_is_there_and_taken():
    assert yaml.__with_libyaml__, "PyYAML without libyaml: every manifest load takes the slow parser"
    node, loader = _yaml._compose_fast("a: [1, 2]\n")
    assert isinstance(loader, yaml.CSafeLoader) and node.value[0][1].start_mark.column == 3


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_same_data_and_positions_as_the_python_parser(path, monkeypatch):
    fast, fast_pos = _yaml.load_yaml(path, "m.yaml")
    slow, slow_pos = _slow(monkeypatch, path)
    assert fast == slow
    assert dict(fast_pos) == dict(slow_pos) and fast_pos.keys == slow_pos.keys
    assert len(fast_pos) > 5


BAD = {
    "control character": "name: a\x07b\n",
    "duplicate key": "a: 1\nb: 2\na: 3\n",
    "tab indentation": "a:\n\tb: 1\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "custom tag": "a: !!python/object:os.system x\n",
    "alias bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                  "e: [*d, *d, *d]\n",
    "deep flow nesting": "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "unclosed bracket": "a: [1, 2\nb: 3\n",
    "NaN": "a: .nan\n",
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_bad_yaml_gets_the_same_located_message_either_way(text, tmp_path, monkeypatch):
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as fast:
        _yaml.load_yaml(path, "m.yaml")
    with pytest.raises(ManifestError) as slow:
        _slow(monkeypatch, path)
    assert str(fast.value) == str(slow.value) and "m.yaml:" in str(fast.value)
