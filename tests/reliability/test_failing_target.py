"""One failing target never loses what is already built: other variants, their checks, the last bundle."""
from __future__ import annotations

import json
import shutil

from tests.conftest import executed_tasks, run_doit

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
TARGETS = "build/digits-cnn/targets"


def _files(project, folder):
    return {p.relative_to(project).as_posix(): p.read_bytes() for p in (project / folder).rglob("*") if p.is_file()}


def test_failing_target_keeps_built_variants_and_recovers(digits_cpu_project, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(digits_cpu_project, project)
    manifest = project / "manifests" / "digits.yaml"
    original = manifest.read_text()
    int8_before = _files(project, f"{TARGETS}/cpu-int8")
    fp32_variant_before = _files(project, f"{TARGETS}/cpu-fp32/variant")
    bundle_before = (project / BUNDLE).read_bytes()

    # an impossible tolerance for the fp32 target only: its check fails, nothing else should move
    manifest.write_text(original + "  fp32: {cosine_min: 1.0, max_abs_max: 0.0}\n")
    proc = run_doit(project)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert executed_tasks(proc.stdout) == {"check:digits-cnn/cpu-fp32", "bundle:digits-cnn"}, proc.stdout
    assert "refusing to package" in proc.stdout + proc.stderr and "cpu-fp32" in proc.stdout + proc.stderr
    assert _files(project, f"{TARGETS}/cpu-int8") == int8_before  # the passing target is untouched
    assert _files(project, f"{TARGETS}/cpu-fp32/variant") == fp32_variant_before  # the failed one's variant too
    failed = json.loads((project / TARGETS / "cpu-fp32" / "report.json").read_text())
    assert failed["validation"]["status"] == "failed"
    assert (project / BUNDLE).read_bytes() == bundle_before  # the last good bundle is not deleted

    # a second run retries only what failed
    proc = run_doit(project)
    assert proc.returncode != 0
    assert executed_tasks(proc.stdout) == {"check:digits-cnn/cpu-fp32", "bundle:digits-cnn"}, proc.stdout

    # fixing the manifest re-checks the failed target and rebuilds the same bundle, byte for byte
    manifest.write_text(original)
    proc = run_doit(project, check=True)
    assert executed_tasks(proc.stdout) == {"check:digits-cnn/cpu-fp32", "bundle:digits-cnn"}, proc.stdout
    assert (project / BUNDLE).read_bytes() == bundle_before
