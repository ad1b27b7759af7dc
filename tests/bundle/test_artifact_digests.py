"""Artifact digests are build facts: a cached artifact changed on disk never ships with its old "passed"."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from mbuild.bundle.verify import verify_bundle
from tests.conftest import executed_tasks, run_doit

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
VARIANT = "build/digits-cnn/targets/cpu-fp32/variant"


@pytest.fixture()
def project(digits_cpu_project, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(digits_cpu_project, copy)
    return copy


def _corrupt(path, size=64 * 1024):
    data = bytearray(path.read_bytes())
    start = min(4096, max(0, len(data) - size))
    data[start:start + size] = os.urandom(min(size, len(data) - start))
    path.write_bytes(bytes(data))


def _shipped(project, name):
    with zipfile.ZipFile(project / BUNDLE) as zf:
        return zf.read(name)


def test_variant_json_records_digests_and_check_names_the_files_it_ran(digits_cpu_project):
    record = json.loads((digits_cpu_project / VARIANT / "variant.json").read_text())
    assert set(record["digests"]) == {"model.onnx", "model.ort"}
    for name, sha in record["digests"].items():
        assert hashlib.sha256((digits_cpu_project / VARIANT / name).read_bytes()).hexdigest() == sha
    report = json.loads((digits_cpu_project / "build/digits-cnn/targets/cpu-fp32/report.json").read_text())
    assert report["validated"]["run"] == ["model.onnx", "model.ort"]  # the .ort ONNX Runtime Mobile loads, too
    assert report["validated"]["digests"] == record["digests"]
    doc = verify_bundle(digits_cpu_project / BUNDLE)
    assert {v["id"]: v["validation"]["files_run"] for v in doc["variants"]} == {
        "cpu-fp32": ["model.onnx", "model.ort"], "cpu-int8": ["model.onnx", "model.ort"]}


@pytest.mark.parametrize("artifact", ["model.onnx", "model.ort"])
def test_corrupted_cached_artifact_is_rebuilt_before_it_ships(project, digits_cpu_project, artifact):
    """Overwrite 64 KiB of a cached artifact, delete the bundle, run doit: the variant rebuilds."""
    clean = _shipped(digits_cpu_project, f"variants/cpu-fp32/{artifact}")
    _corrupt(project / VARIANT / artifact)
    (project / BUNDLE).unlink()
    proc = run_doit(project, check=True)
    assert "variant:digits-cnn/cpu-fp32" in executed_tasks(proc.stdout), proc.stdout
    assert _shipped(project, f"variants/cpu-fp32/{artifact}") == clean
    verify_bundle(project / BUNDLE)


def test_bundle_refuses_a_file_that_differs_from_the_validated_one(project):
    """The bundle step alone (no doit to rebuild first) refuses to package the changed file, naming it."""
    _corrupt(project / VARIANT / "model.onnx")
    before = (project / BUNDLE).read_bytes()
    proc = subprocess.run([sys.executable, "-m", "mbuild.actions", "bundle", "manifests/digits.yaml"], cwd=project,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout
    assert "refusing to package" in proc.stderr and "cpu-fp32/variant/model.onnx changed" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (project / BUNDLE).read_bytes() == before


def test_check_reverifies_the_files_it_runs(project):
    _corrupt(project / VARIANT / "model.ort")
    proc = subprocess.run([sys.executable, "-m", "mbuild.actions", "check", "manifests/digits.yaml", "cpu-fp32"],
                          cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "model.ort changed after it was built" in proc.stderr, proc.stderr


def test_an_ort_file_that_misses_the_tolerance_fails_the_check(project):
    """Swap in another model's .ort (recording its digest, as a broken converter would): the check runs it and fails."""
    variant = project / VARIANT
    shutil.copyfile(project / "build/digits-cnn/targets/cpu-int8/variant/model.ort", variant / "model.ort")
    record = json.loads((variant / "variant.json").read_text())
    record["digests"]["model.ort"] = hashlib.sha256((variant / "model.ort").read_bytes()).hexdigest()
    (variant / "variant.json").write_text(json.dumps(record))
    proc = subprocess.run([sys.executable, "-m", "mbuild.actions", "check", "manifests/digits.yaml", "cpu-fp32"],
                          cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "model.ort:" in proc.stderr + proc.stdout, proc.stdout + proc.stderr
