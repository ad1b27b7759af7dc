"""A manifest names project code, never an arbitrary installed function: `os:system` and friends are refused.

Each refusal comes from `mbuild validate` with the manifest's file:line:col, before anything runs; a model
file's own names are checked in a child process (importing it runs the project's code), with "did you mean".
"""
from __future__ import annotations

import re

import pytest

from tests.conftest import DIGITS_CPU, make_project, run_mbuild

MODEL_LINE = "  pytorch: {model: ../examples/digits/model.py:DigitsCNN, weights: ../examples/digits/weights.pt}"
LOCATED = re.compile(r"^error: manifests/bad\.yaml:5:\d+: source\.pytorch\.model: ", re.M)


def _manifest(model: str, extra: str = "") -> str:
    assert MODEL_LINE in DIGITS_CPU
    return DIGITS_CPU.replace(MODEL_LINE, f"  pytorch: {{model: '{model}'{extra}}}")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("srccode"), {})
    (root / "examples" / "digits" / "reexport.py").write_text(
        "from os import system\nfrom subprocess import getoutput as run\n\nclass Net:\n    pass\n\nLIMIT = 3\n")
    (root / "examples" / "digits" / "broken.py").write_text("import no_such_module_xyz\n")
    (root / "examples" / "digits" / "exits.py").write_text("raise SystemExit(5)\n")
    return root


def _validate(project, text: str):
    (project / "manifests" / "bad.yaml").write_text(text)
    return run_mbuild("validate", "manifests/bad.yaml", cwd=project)


@pytest.mark.parametrize("model, extra", [
    ("os:system", ", kwargs: {command: 'touch pwned'}"),
    ("subprocess:getoutput", ", kwargs: {cmd: 'touch pwned'}"),
    ("runpy:run_path", ", kwargs: {path_name: /tmp/elsewhere.py}"),
    ("builtins:exec", ""),
])
def test_installed_functions_are_refused_at_validate(project, model, extra):
    proc = _validate(project, _manifest(model, extra))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert LOCATED.search(proc.stderr), proc.stderr
    assert "is not a file of this project" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project / "pwned").exists()


@pytest.mark.parametrize("model, words", [
    ("../examples/digits/model.py:DigitsCNNN", "has no 'DigitsCNNN'; did you mean 'DigitsCNN'?"),
    ("../examples/digits/reexport.py:system", "is a builtin_function_or_method, not a class or function"),
    ("../examples/digits/reexport.py:run", "run is not defined in examples/digits/reexport.py"),
    ("../examples/digits/reexport.py:LIMIT", "is an int, not a class or function"),
    ("../examples/digits/broken.py:Net", "ModuleNotFoundError"),
    ("../examples/digits/exits.py:Net", "SystemExit"),
    ("../examples/digits/weights.pt:Net", "is not a Python file"),
])
def test_model_file_names_are_checked_in_a_child_process(project, model, words):
    proc = _validate(project, _manifest(model))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert LOCATED.search(proc.stderr), proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_module_the_project_allows_is_accepted(project):
    text = _manifest("torch.nn:Identity")
    proc = _validate(project, text)
    assert proc.returncode == 2 and "source-modules" in proc.stderr, proc.stderr
    (project / "pyproject.toml").write_text('[tool.mbuild]\nsource-modules = ["torch.nn"]\n')
    try:
        proc = _validate(project, text)
        assert proc.returncode == 0, proc.stderr
        proc = _validate(project, _manifest("torch.nn:functional"))  # a module, not a class or function
        assert proc.returncode == 2 and "not a class or function" in proc.stderr, proc.stderr
    finally:
        (project / "pyproject.toml").unlink()


def test_the_real_model_passes(project):
    proc = _validate(project, DIGITS_CPU)
    assert proc.returncode == 0, proc.stderr
