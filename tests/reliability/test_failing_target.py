"""One failing target never loses what is already built: other variants, their checks, the last bundle."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.conftest import executed_tasks, run_doit
from tests.reliability._stable import code_digest, require_same_code

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
TARGETS = "build/digits-cnn/targets"


def _files(project, folder):
    return {p.relative_to(project).as_posix(): p.read_bytes() for p in (project / folder).rglob("*") if p.is_file()}


def test_failing_target_keeps_built_variants_and_recovers(digits_cpu_project, tmp_path):
    code = code_digest()
    run_doit(digits_cpu_project, check=True)  # the reference, rebuilt if mbuild's code changed since it was built
    project = tmp_path / "p"
    shutil.copytree(digits_cpu_project, project)
    manifest = project / "manifests" / "digits.yaml"
    original = manifest.read_text()
    variants_before = _files(project, TARGETS + "/cpu-int8/variant") | _files(project, TARGETS + "/cpu-fp32/variant")
    bundle_before = (project / BUNDLE).read_bytes()

    # an impossible tolerance for the fp32 target only: its check fails; no variant is rebuilt or lost
    manifest.write_text(original + "  fp32: {cosine_min: 1.0, max_abs_max: 0.0}\n")
    proc = run_doit(project)
    require_same_code(code)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    ran = executed_tasks(proc.stdout)
    assert "check:digits-cnn/cpu-fp32" in ran and not any(t.startswith("variant:") for t in ran), proc.stdout
    assert "bundle:digits-cnn" not in ran and "  omitted  bundle:digits-cnn" in out and "UnmetDependency" not in out
    variants_now = _files(project, TARGETS + "/cpu-int8/variant") | _files(project, TARGETS + "/cpu-fp32/variant")
    assert variants_now == variants_before
    assert _status(project, "cpu-fp32") == "failed" and _status(project, "cpu-int8") == "passed"
    assert (project / BUNDLE).read_bytes() == bundle_before  # the last good bundle is not deleted

    # a second run retries only what failed
    proc = run_doit(project)
    require_same_code(code)
    assert proc.returncode != 0
    assert executed_tasks(proc.stdout) == {"check:digits-cnn/cpu-fp32"}, proc.stdout

    # fixing the manifest re-checks and rebuilds the same bundle, byte for byte, without reconverting anything
    manifest.write_text(original)
    proc = run_doit(project, check=True)
    require_same_code(code)
    ran = executed_tasks(proc.stdout)
    assert "bundle:digits-cnn" in ran and not any(t.startswith(("variant:", "source:")) for t in ran), proc.stdout
    assert (project / BUNDLE).read_bytes() == bundle_before


def _status(project, target):
    return json.loads((project / TARGETS / target / "report.json").read_text())["validation"]["status"]


OPTIONAL = """\
  fp16-exact: {precision: fp16}
  int8-exact: {quantize: {scheme: static, calibration: calibration}}
"""
OPTIONAL_TARGETS = """\
  cpu-exact: {runtime: onnxruntime, recipe: fp16-exact, required: false}
  cpu-auto-exact: {runtime: onnxruntime, recipe: auto, candidates: [int8-exact], required: false}
"""
OPTIONAL_VALIDATE = """\
  fp16-exact: {max_abs_max: 0.0}
  int8-exact: {max_abs_max: 0.0}
"""


def test_optional_targets_that_fail_leave_the_bundle_to_the_others(digits_cpu_project, tmp_path):
    """required: false means what it says: a failed variant or check is reported and left out, the bundle is made."""
    code = code_digest()
    run_doit(digits_cpu_project, check=True)
    project = tmp_path / "p"
    shutil.copytree(digits_cpu_project, project)
    manifest = project / "manifests" / "digits.yaml"
    text = manifest.read_text()
    text = text.replace("targets:\n", OPTIONAL + "targets:\n").replace("validate:\n", OPTIONAL_TARGETS + "validate:\n")
    manifest.write_text(text + OPTIONAL_VALIDATE)
    proc = run_doit(project)
    require_same_code(code)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "warning: check:digits-cnn/cpu-exact failed its tolerance (required: false" in out
    assert "warning: variant:digits-cnn/cpu-auto-exact did not succeed (required: false" in out
    assert "bundle:digits-cnn" in executed_tasks(proc.stdout)
    report = json.loads((project / "dist" / "digits-cnn-1.0.0.report.json").read_text())
    assert sorted(report["variants"]) == ["cpu-fp32", "cpu-int8"]
    assert sorted(report["omitted"]) == ["cpu-auto-exact", "cpu-exact"]
    assert "max_abs" in report["omitted"]["cpu-exact"] and "no candidate" in report["omitted"]["cpu-auto-exact"]
    assert _status(project, "cpu-auto-exact") == "not built"
    again = run_doit(project, check=True)  # the failures are outcomes of these inputs: nothing reruns
    assert executed_tasks(again.stdout) == set(), again.stdout

    # an optional check that crashes (its artifact vanished) is recorded as an error, not a blocked bundle
    (project / TARGETS / "cpu-exact" / "variant" / "model.onnx").unlink()
    step = subprocess.run([sys.executable, "-m", "mbuild.actions", "check", str(manifest), "cpu-exact"], cwd=project,
                          capture_output=True, text=True, timeout=300)
    assert step.returncode == 0 and "warning: check:digits-cnn/cpu-exact did not succeed" in step.stdout, step
    assert _status(project, "cpu-exact") == "error"
    step = subprocess.run([sys.executable, "-m", "mbuild.actions", "bundle", str(manifest)], cwd=project,
                          capture_output=True, text=True, timeout=300)
    assert step.returncode == 0, step
    report = json.loads((project / "dist" / "digits-cnn-1.0.0.report.json").read_text())
    assert sorted(report["variants"]) == ["cpu-fp32", "cpu-int8"]
    assert report["omitted"]["cpu-exact"].startswith("not checked:")  # the check finds the artifact gone first
    assert "cpu-exact/variant/model.onnx is missing" in report["omitted"]["cpu-exact"], report["omitted"]
