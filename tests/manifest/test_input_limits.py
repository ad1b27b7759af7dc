"""Inputs are checked for size, kind and type before any work: every refusal is one located line, none hangs.

Regressions from issue 15: a 3 GB manifest was read whole before its size was checked, a FIFO named as a
manifest, base, npz or weights file blocked forever, NaN tolerances disabled gates, a lone surrogate or a
NUL slipped through to crash later steps, `!!int 1.0.0` was a traceback, names with a trailing newline
passed, `extends` had no load cap, and only the first of several mistakes was reported.
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mbuild.errors import ManifestError
from mbuild.manifest import load_manifest
from tests.conftest import DIGITS_CPU, make_project

LOCATED = re.compile(r"^\S[^\n]*?\.yaml:(\d+):(\d+): ")


def _replace(old: str, new: str, text: str = DIGITS_CPU) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("limits"), {"digits.yaml": DIGITS_CPU})


def _refused(project: Path, text: str | bytes, name: str = "bad.yaml") -> ManifestError:
    path = project / "manifests" / name
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    for line in str(err.value).splitlines():
        assert LOCATED.match(line), f"not located: {line!r}"
    return err.value


def _validate(project: Path, *args: str, timeout: float = 30, memory: int | None = None):
    def cap():
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mbuild", "validate", *args], cwd=project, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=cap if memory else None, env=env)


def test_a_3gb_manifest_is_refused_under_a_1gb_memory_cap_without_reading_it(project):
    huge = project / "manifests" / "huge.yaml"
    with open(huge, "wb") as fh:
        fh.truncate(3 * 1024**3)  # sparse: 3 GB that would have to be read to find out
    try:
        proc = _validate(project, "manifests/huge.yaml", memory=1024**3)
    finally:
        huge.unlink()
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: manifests/huge.yaml:1:1: manifest is larger than"), proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr


@pytest.mark.parametrize("role", ["manifest", "extends", "npz", "weights"])
def test_a_fifo_never_hangs(project, role):
    fifo = project / "examples" / "digits" / f"fifo-{role}.yaml"
    os.mkfifo(fifo)
    try:
        if role == "manifest":
            target = f"examples/digits/fifo-{role}.yaml"
        else:
            text = {"extends": "extends: ../examples/digits/fifo-extends.yaml\n" + DIGITS_CPU,
                    "npz": _replace("../examples/digits/val.npz", "../examples/digits/fifo-npz.yaml"),
                    "weights": _replace("../examples/digits/weights.pt", "../examples/digits/fifo-weights.yaml")}[role]
            (project / "manifests" / "bad.yaml").write_text(text)
            target = "manifests/bad.yaml"
        proc = _validate(project, target, timeout=60)
    finally:
        fifo.unlink()
    assert proc.returncode == 2, proc.stderr
    assert "FIFO" in proc.stderr and LOCATED.match(proc.stderr.removeprefix("error: ")), proc.stderr


@pytest.mark.parametrize("old, new, words", [
    ("version: 1.0.0", "version: 1.0.0\ndescription: \"bad \\ud800 text\"", "lone surrogate"),
    ("version: 1.0.0", "version: 1.0.0\nauthor: \"nul \\0 here\"", "NUL"),
    ("../examples/digits/val.npz", "\"../examples/digits/val\\0.npz\"", "NUL"),
    ("  cpu-fp32: {runtime", "  \"cpu\\udcff\": {runtime: onnxruntime, recipe: fp32}\n  cpu-fp32: {runtime",
     "lone surrogate"),
    ("int8: {cosine_min: 0.99}", "int8: {cosine_min: .nan}", "not a finite number"),
    ("int8: {cosine_min: 0.99}", "int8: {cosine_min: .NaN, snr_db_min: -.inf}", "not a finite number"),
    ("range: [0, 1]", "range: [0, .inf]", "not a finite number"),
    ("range: [0, 1]", "range: [0, 1.0e+999]", "not a finite number"),
    ("version: 1.0.0", "version: !!int 1.0.0", "is not a valid int"),
    ("limit: 128", "limit: !!float abc", "is not a valid float"),
    ("  cpu-fp32: {runtime: onnxruntime, recipe: fp32}", "  cpu-fp32: {runtime: onnxruntime, recipe: fp32, required: !!bool maybe}",
     "is not a valid bool"),
    ("name: digits-cnn", "name: \"digits-cnn\\n\"", "does not have the expected form"),
    ("version: 1.0.0", "version: \"1.0.0\\n\"", "does not have the expected form"),
    ("  fp16: {precision: fp16}", "  \"fp16\\n\": {precision: fp16}", "'fp16\\n' does not have the expected form"),
    ("shape: [1, 1, 8, 8]", "shape: [1.0, 1, 8, 8]", "expected an integer"),
    ("shape: [1, 1, 8, 8]", "shape: [1, 1, 8, 8.5]", "expected an integer"),
    ("shape: [1, 1, 8, 8]", "shape: [1, 1, 8, 100000000000000000000]", "maximum"),
    ("shape: [1, 1, 8, 8]", "shape: [1000, 1000, 1000, 1000]", "more than"),
    ("shape: [1, 1, 8, 8]", "shape: [1, -1, 8, 8]", "minimum"),
    ("dtype: float32, range: [0, 1]", "dtype: uint8, range: [0, 300]", "does not fit uint8"),
    ("range: [0, 1]}", "range: [0, 1], image: {color: RGB}}", "color RGB has 3 channel(s), the shape [1, 1, 8, 8] has 1"),
    ("../examples/digits/val.npz", "../examples/digits/" + "x" * 300 + ".npz", "file not found"),
])
def test_bad_values_are_located(project, old, new, words):
    err = _refused(project, _replace(old, new))
    assert words in str(err), str(err)


def test_a_symlink_loop_is_located(project):
    loop = project / "examples" / "digits" / "loop.npz"
    loop.symlink_to(loop)
    try:
        err = _refused(project, _replace("../examples/digits/val.npz", "../examples/digits/loop.npz"))
    finally:
        loop.unlink()
    assert "symlink loop" in str(err) or "file not found" in str(err), str(err)


def test_extends_has_a_load_cap(project):
    folder = project / "manifests"
    depth = 7  # a diamond of diamonds: 2**7 loads of the same bases without a cap
    (folder / "base-0.yaml").write_text(DIGITS_CPU)
    for i in range(1, depth + 1):
        (folder / f"base-{i}.yaml").write_text(f"extends: [base-{i - 1}.yaml, base-{i - 1}.yaml]\n")
    err = _refused(project, f"extends: base-{depth}.yaml\n")
    assert "loads more than" in str(err), str(err)


def test_three_mistakes_are_reported_in_one_run(project):
    schema = _replace("  fp16: {precision: fp16}", "  fp16: {precison: fp16}",
                      _replace("version: 1.0.0", "version: [1, 0]", _replace("runtime: onnxruntime, recipe: int8",
                                                                            "runtime: onnxruntme, recipe: int8")))
    err = _refused(project, schema)
    lines = str(err).splitlines()
    assert len(lines) == 3, lines
    assert ["version" in lines[0], "precison" in lines[1], "onnxruntme" in lines[2]] == [True] * 3, lines

    semantic = _replace("recipe: int8}", "recipe: int9}", _replace("inputs: {image: x}, labels: y",
                        "inputs: {imag: x}, labels: y", DIGITS_CPU + "select:\n  order: [cpu-fp33]\n"))
    lines = str(_refused(project, semantic)).splitlines()
    assert len(lines) == 3, lines
    assert "'imag' is not a declared input" in lines[0] and "'int9' is not a recipe" in lines[1], lines
    assert "'cpu-fp33' is not a target" in lines[2], lines

    proc = _validate(project, "manifests/bad.yaml")
    assert proc.returncode == 2 and proc.stderr.count("error: manifests/bad.yaml:") == 3, proc.stderr


def test_a_missing_calibration_set_does_not_suggest_the_validation_set(project):
    text = _replace("  calibration: {npz: ../examples/digits/calib.npz, inputs: {image: x}, limit: 128}\n", "",
                    _replace("calibration: calibration}", "calibration: calibraton}"))
    err = _refused(project, text)
    assert "'calibraton' is not a data set; declare it under data" in str(err), str(err)
    assert "validation" not in str(err)


def test_an_unquoted_min_os_is_named_not_an_echo(project):
    text = DIGITS_CPU.replace("  cpu-int8: {runtime: onnxruntime, recipe: int8}\n",
                              "  cpu-int8: {runtime: onnxruntime, recipe: int8}\n"
                              "  ios: {runtime: coreml, recipe: fp16, compute_units: all, min_os: 16.0}\n")
    message = str(_refused(project, text))
    assert "did you mean 'compute_units'" not in message and "min_os" in message, message


def test_validate_catches_an_npz_key_typo(project):
    (project / "manifests" / "bad.yaml").write_text(_replace("inputs: {image: x}, labels: y", "inputs: {image: xx}, labels: y"))
    proc = _validate(project, "manifests/bad.yaml", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "has no array 'xx'; did you mean 'x'?" in proc.stderr, proc.stderr
    assert LOCATED.match(proc.stderr.removeprefix("error: ")), proc.stderr


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_extra_input_shapes_are_refused_for_runtimes_that_would_drop_them(project, runtime):
    text = _replace("range: [0, 1]}", "range: [0, 1], shapes: [[1, 1, 16, 16]]}",
                    _replace("cpu-fp32: {runtime: onnxruntime", f"cpu-fp32: {{runtime: {runtime}"))
    message = str(_refused(project, text))
    assert f"runtime {runtime!r} builds and validates input 'image' at its first shape only" in message, message
    assert "targets.cpu-fp32.runtime" in message and "coreml (enumerated shapes)" in message
