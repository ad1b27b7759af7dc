"""Every kind of bad manifest gets one message with file:line:col, exit status 2 and no traceback."""
from __future__ import annotations

import re

import pytest

from mbuild.cli import main
from tests.conftest import DIGITS_CPU, make_project, run_mbuild

LOCATED = re.compile(r"^error: manifests/bad\.yaml:(\d+):(\d+): ", re.M)


def _replace(old: str, new: str) -> str:
    assert old in DIGITS_CPU, old
    return DIGITS_CPU.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# (id, manifest text, expected words in the message, the text on the line the message must point at)
CASES = [
    ("bad-yaml", _replace("outputs:\n", "outputs: [\n"), "invalid YAML", None),
    ("wrong-type", _replace("version: 1.0.0", "version: [1, 0]"), "expected a string", "version: [1, 0]"),
    ("unknown-key", _replace("  fp16: {precision: fp16}", "  fp16: {precison: fp16}"),
     "unknown key 'precison'; did you mean 'precision'?", "precison"),
    ("unknown-top-key", _replace("version: 1.0.0", "version: 1.0.0\nvesion: 2"), "unknown key 'vesion'", "vesion: 2"),
    ("missing-recipe", _replace("recipe: int8}", "recipe: int9}"), "'int9' is not a recipe; did you mean 'int8'?",
     "recipe: int9"),
    ("select-unknown-target", DIGITS_CPU + "select:\n  order: [cpu-fp32, cpu-int9]\n",
     "'cpu-int9' is not a target; did you mean 'cpu-int8'?", "order: [cpu-fp32, cpu-int9]"),
    ("path-escapes-root", _replace("../examples/digits/val.npz", "../../../etc/passwd"), "leaves the project root",
     "etc/passwd"),
    ("missing-file", _replace("../examples/digits/calib.npz", "../examples/digits/nope.npz"), "file not found",
     "nope.npz"),
    ("bad-enum", _replace("runtime: onnxruntime, recipe: int8", "runtime: onnxruntme, recipe: int8"),
     "'onnxruntme' is not one of", "onnxruntme"),
    ("missing-required", _replace("version: 1.0.0\n", ""), "missing required key 'version'", None),
    ("data-unknown-input", _replace("inputs: {image: x}, labels: y", "inputs: {imag: x}, labels: y"),
     "'imag' is not a declared input; did you mean 'image'?", "imag: x"),
    ("duplicate-key", _replace("  fp16: {precision: fp16}", "  fp16: {precision: fp16}\n  fp16: {precision: fp32}"),
     "duplicate key 'fp16'", "fp16: {precision: fp32}"),
    ("python-tag", _replace("version: 1.0.0", "version: !!python/object/apply:os.system [ls]"),
     "tag", "os.system"),
    ("bad-runtime-key", _replace("runtime: onnxruntime, recipe: fp32", "runtime: onnxruntime, recipe: fp32, delegate: gpu"),
     "unknown key 'delegate'", "delegate: gpu"),
    ("static-without-calibration", _replace("int8: {quantize: {scheme: static, calibration: calibration}}",
                                            "int8: {quantize: {scheme: static, calibration: calib}}"),
     "'calib' is not a data set; did you mean 'calibration'?", "calibration: calib}"),
    ("bad-version", _replace("version: 1.0.0", "version: one"), "does not have the expected form", "version: one"),
    ("empty", "", "the manifest is empty", None),
    ("not-a-mapping", "- a\n- b\n", "a manifest is a mapping", None),
]


@pytest.mark.parametrize("case_id,text,words,line_text", CASES, ids=[c[0] for c in CASES])
def test_bad_manifest_is_located(tmp_path, monkeypatch, capsys, case_id, text, words, line_text):
    project = make_project(tmp_path, {"bad.yaml": text})
    monkeypatch.chdir(project)
    code = main(["validate", "manifests/bad.yaml"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    match = LOCATED.search(err)
    assert match, err
    assert words in err, err
    if line_text is not None:
        assert int(match.group(1)) == _line_of(text, line_text), err


def test_cli_process_prints_no_traceback(tmp_path):
    project = make_project(tmp_path, {"bad.yaml": _replace("recipe: int8}", "recipe: int9}")})
    proc = run_mbuild("validate", "manifests/bad.yaml", cwd=project)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.search(r"bad\.yaml:\d+:\d+: targets\.cpu-int8\.recipe: 'int9' is not a recipe", proc.stderr), proc.stderr


def test_good_manifest_validates(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path, {"digits.yaml": DIGITS_CPU})
    monkeypatch.chdir(project)
    assert main(["validate", "manifests/digits.yaml"]) == 0
    assert "ok: manifests/digits.yaml: digits-cnn-1.0.0" in capsys.readouterr().out


def test_extends_merges_and_points_into_the_base_file(tmp_path, monkeypatch, capsys):
    base = "recipes:\n  fp32: {precision: fp32}\n  int8: {quantize: {scheme: static, calibration: calibrashun}}\n"
    child = DIGITS_CPU.split("recipes:")[0] + "extends: common/matrix.yaml\ntargets:\n  cpu: {runtime: onnxruntime, recipe: int8}\n"
    project = make_project(tmp_path, {"child.yaml": child})
    (project / "manifests" / "common").mkdir()
    (project / "manifests" / "common" / "matrix.yaml").write_text(base)
    monkeypatch.chdir(project)
    assert main(["validate", "manifests/child.yaml"]) == 2
    err = capsys.readouterr().err
    assert "manifests/common/matrix.yaml:3:" in err and "'calibrashun' is not a data set" in err, err


def test_extends_cycle_is_refused(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path, {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"})
    monkeypatch.chdir(project)
    assert main(["validate", "manifests/a.yaml"]) == 2
    assert "cycle" in capsys.readouterr().err


def test_a_remembered_valid_manifest_does_not_hide_a_later_schema_error(tmp_path):
    """The schema check is skipped only for the exact document found valid before (.mbuild/schema-valid.json)."""
    from mbuild.errors import ManifestError
    from mbuild.manifest import load_manifest

    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    (project / ".mbuild").mkdir(exist_ok=True)
    path = project / "manifests" / "digits.yaml"
    load_manifest(path, check_targets=False)
    remembered = (project / ".mbuild" / "schema-valid.json").read_text()
    assert len(remembered) > 64
    path.write_text(_replace("version: 1.0.0", "version: [1, 0]"))
    with pytest.raises(ManifestError, match="expected a string"):
        load_manifest(path, check_targets=False)
    path.write_text(DIGITS_CPU)
    load_manifest(path, check_targets=False)  # valid again: found in the list, not checked twice
    assert (project / ".mbuild" / "schema-valid.json").read_text() == remembered
