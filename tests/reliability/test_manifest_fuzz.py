"""Property-based fuzzing: every malformed manifest gets a ManifestError at file:line:col (exit 2), never a crash.

Each generated manifest is broken on purpose (a required key removed, an unknown key, a
value of the wrong type or outside its range, a dangling reference, broken YAML syntax,
arbitrary text or bytes), so loading it must fail - and fail with a located message.
"""
from __future__ import annotations

import copy
import json
import re
import string
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbuild.errors import ManifestError
from mbuild.manifest import load_manifest
from tests.conftest import DIGITS_CPU, REPO, make_project, run_mbuild

BASE = yaml.safe_load(DIGITS_CPU)
LOCATED = re.compile(r"^\S[^\n]*?\.yaml:(\d+):(\d+): ")
FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def _schema_keys() -> set[str]:
    """Every property name the manifest schema knows, so 'unknown' keys really are unknown."""
    keys: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads((REPO / "schemas" / "manifest.schema.json").read_text()))
    return keys


KNOWN = _schema_keys() | set(BASE["recipes"]) | set(BASE["targets"]) | set(BASE["data"]) | {"default"}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                      st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                      max_leaves=6)
NAME = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)


def _dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _set(data, path, value):
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def _without(path):
    data = copy.deepcopy(BASE)
    node = data
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]
    return _dump(data)


def _with(path, value):
    data = copy.deepcopy(BASE)
    _set(data, path, value)
    return _dump(data)


REQUIRED = [("mbuild",), ("name",), ("version",), ("source",), ("inputs",), ("outputs",), ("targets",),
            ("targets", "cpu-fp32", "runtime"), ("targets", "cpu-int8", "recipe"), ("inputs", "image", "shape"),
            ("source", "pytorch", "model"), ("recipes", "int8", "quantize", "scheme"), ("data", "validation", "npz")]
FIXED_KEY_MAPS = [(), ("source", "pytorch"), ("inputs", "image"), ("outputs", "logits"), ("data", "calibration"),
                  ("targets", "cpu-fp32"), ("targets", "cpu-int8"), ("recipes", "int8", "quantize"),
                  ("recipes", "fp16"),
                  ("validate", "int8")]

not_one = st.one_of(st.integers().filter(lambda i: i != 1), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                    st.floats(allow_nan=False).filter(lambda f: f != 1.0))
not_str = st.one_of(st.integers(), st.lists(st.text(max_size=3), max_size=2), st.booleans(), st.none(),
                    st.dictionaries(NAME, st.integers(), min_size=1, max_size=2))
not_semver = st.one_of(not_str, st.text(max_size=12).filter(
    lambda s: not re.fullmatch(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?", s)))
bad_shape = st.one_of(st.text(max_size=5), st.lists(st.integers(max_value=0), min_size=1, max_size=4),
                      st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=3), st.integers())
bad_enum = st.text(max_size=12).filter(lambda s: s not in {"onnxruntime", "tflite", "coreml", "float32", "float16",
                                                             "int8", "uint8", "int32", "int64", "bool", "fp32", "fp16",
                                                             "bf16", "int16", "mixed", "auto"})
low_high = st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)).filter(lambda t: t[0] >= t[1]).map(list)
recipe_names = set(BASE["recipes"]) | {"auto"}

WRONG = st.one_of(
    st.tuples(st.just(("mbuild",)), not_one),
    st.tuples(st.just(("name",)), not_str),
    st.tuples(st.just(("version",)), not_semver),
    st.tuples(st.just(("inputs", "image", "shape")), bad_shape),
    st.tuples(st.just(("inputs", "image", "dtype")), st.one_of(bad_enum, st.integers())),
    st.tuples(st.just(("inputs", "image", "range")), st.one_of(low_high, st.text(max_size=4), st.integers())),
    st.tuples(st.just(("targets", "cpu-fp32", "runtime")), st.one_of(bad_enum, not_str)),
    st.tuples(st.just(("recipes", "fp16", "precision")), st.one_of(bad_enum, st.integers())),
    st.tuples(st.just(("data", "calibration", "limit")), st.one_of(st.integers(max_value=0), st.text(max_size=4))),
    st.tuples(st.just(("validate", "int8", "cosine_min")), st.one_of(st.text(max_size=4), st.lists(st.integers()))),
    st.tuples(st.just(("targets",)), st.one_of(st.just({}), st.lists(st.integers(), max_size=2), st.text(max_size=4))),
    st.tuples(st.just(("source",)), st.one_of(st.just({}), st.text(max_size=6),
                                              st.just({"pytorch": {"model": "x.py:M"}, "onnx": {"model": "m.onnx"}}))),
)
DANGLING = st.one_of(
    st.tuples(st.just(("targets", "cpu-int8", "recipe")), NAME.filter(lambda s: s not in recipe_names)),
    st.tuples(st.just(("select",)), NAME.filter(lambda s: s not in BASE["targets"]).map(lambda s: {"order": [s]})),
    st.tuples(st.just(("recipes", "int8", "quantize", "calibration")), NAME.filter(lambda s: s not in BASE["data"])),
    st.tuples(st.just(("data", "validation", "inputs")), NAME.filter(lambda s: s != "image").map(lambda s: {s: "x"})),
    st.tuples(st.just(("source", "pytorch", "weights")), NAME.map(lambda s: f"../examples/digits/{s}.missing")),
    st.tuples(st.just(("data", "validation", "npz")), st.sampled_from(["/etc/passwd", "../../../../etc/hosts",
                                                                        "../../outside.npz"])),
)
BREAKERS = ["{", "[", ": : :", "\t", "&", "*nowhere", "!!python/object/apply:os.system [x]", "!custom x", "}", "]",
            "\"unterminated", "'", "%TAG ! x", "---\n---", "- item", "<<: *a", "@", "`"]


@st.composite
def broken_syntax(draw):
    lines = DIGITS_CPU.splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    where = draw(st.sampled_from(["end", "start", "replace"]))
    token = draw(st.sampled_from(BREAKERS))
    lines[i] = {"end": lines[i] + " " + token, "start": token + lines[i], "replace": token}[where]
    return "\n".join(lines) + "\n"


MALFORMED = st.one_of(
    st.sampled_from(REQUIRED).map(_without),
    st.tuples(st.sampled_from(FIXED_KEY_MAPS), NAME.filter(lambda k: k not in KNOWN), VALUES).map(
        lambda t: _with(t[0] + (t[1],), t[2])),
    WRONG.map(lambda t: _with(*t)),
    DANGLING.map(lambda t: _with(*t)),
    broken_syntax(),
    st.integers(0, DIGITS_CPU.index("targets:") - 1).map(lambda n: DIGITS_CPU[:n]),  # cut before the targets
)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("fuzz"), {"digits.yaml": DIGITS_CPU})
    return project / "manifests" / "fuzzed.yaml"


def _assert_located(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    message = str(err.value)
    m = LOCATED.match(message)
    assert m, f"no file:line:col prefix: {message!r}"
    assert 1 <= int(m.group(1)) <= max(1, data.count(b"\n") + 1) and int(m.group(2)) >= 1, message
    assert err.value.exit_code == 2
    assert "\n" not in message.split(": ", 1)[0]


@FUZZ
@given(text=MALFORMED)
def test_malformed_manifests_are_located_errors(fuzz_file, text):
    _assert_located(fuzz_file, text.encode())


@settings(FUZZ, max_examples=300)
@given(data=st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=200),
                      VALUES.map(lambda v: _dump(v).encode())))
def test_arbitrary_text_and_bytes_are_located_errors(fuzz_file, data):
    _assert_located(fuzz_file, data)


@settings(FUZZ, max_examples=6)
@given(text=MALFORMED)
def test_cli_exits_2_without_traceback(fuzz_file, text):
    fuzz_file.write_text(text)
    proc = run_mbuild("validate", str(fuzz_file), cwd=fuzz_file.parent.parent)
    assert proc.returncode == 2, (text, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and LOCATED.match(proc.stderr.removeprefix("error: ")), proc.stderr
    assert sys.executable  # the CLI ran under the test interpreter
