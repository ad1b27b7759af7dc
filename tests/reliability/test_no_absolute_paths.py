"""Output files hold no absolute paths: a build's records read the same in any checkout."""
from __future__ import annotations

import json

from mbuild import actions
from mbuild.manifest import load_manifest
from tests.conftest import DIGITS_CPU, make_project


def _text_outputs(project):
    for top in ("build", "dist"):
        for p in (project / top).rglob("*"):
            if p.is_file() and p.suffix in (".json", ".txt", ".md", ".html", ".log") and not p.name.endswith("error.log"):
                yield p


def test_a_built_project_records_no_absolute_path(digits_cpu_project):
    root = str(digits_cpu_project.resolve())
    hits = [p.relative_to(digits_cpu_project).as_posix() for p in _text_outputs(digits_cpu_project)
            if root in p.read_text(errors="replace")]
    assert hits == []


def test_an_optional_targets_failure_is_recorded_without_the_root(tmp_path):
    text = DIGITS_CPU.replace("cpu-int8: {runtime: onnxruntime, recipe: int8}",
                              "cpu-int8: {runtime: onnxruntime, recipe: int8, required: false}")
    project = make_project(tmp_path / "p", {"digits.yaml": text}).resolve()
    manifest = load_manifest(project / "manifests" / "digits.yaml", check_targets=False)
    where = project / "build" / "digits-cnn" / "targets" / "cpu-int8" / "variant-error.log"
    assert actions._record(manifest, "variant", "cpu-int8", f"variant step failed: OSError: x (traceback in {where})") == 0
    record = json.loads((project / "build/digits-cnn/targets/cpu-int8/variant/variant.json").read_text())
    assert str(project) not in record["reason"]
    assert "traceback in build/digits-cnn/targets/cpu-int8/variant-error.log" in record["reason"], record

