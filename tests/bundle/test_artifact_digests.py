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


def _variant_folder(tmp_path):
    """A variant folder as a variant task leaves it: an artifact, a companion folder, digests in variant.json."""
    from mbuild.integrity import artifact_digests

    folder = tmp_path / "variant"
    (folder / "weights").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(os.urandom(8192))
    (folder / "weights" / "shard1.bin").write_bytes(os.urandom(4096))
    record = {"artifact": "model.onnx", "files": ["weights"]}
    record["digests"] = artifact_digests(folder, ["model.onnx", "weights"])
    (folder / "variant.json").write_text(json.dumps(record))
    return folder


def _rewrite_keeping_size_and_times(path):
    """Change the bytes, then set size, atime and mtime back: only the ctime (which no user can set) tells."""
    info = os.stat(path)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == info.st_mtime_ns and os.stat(path).st_size == info.st_size


def test_artifact_check_rehashes_only_files_whose_stat_signature_changed(tmp_path, monkeypatch):
    """A no-op must not re-hash every artifact (37 ms on the examples, seconds on real models), yet see any change."""
    import mbuild.integrity as integrity

    folder = _variant_folder(tmp_path)
    check = integrity.ArtifactsIntact(str(folder / "variant.json"))
    assert check(None, {}) is True  # nothing saved yet (first build, older state): hashed, intact
    saved = check._save()
    assert set(saved[check.KEY]) == {"model.onnx", "weights/shard1.bin"}

    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert check(None, saved) is True and hashed == []  # same signatures: taken as verified, nothing read

    _rewrite_keeping_size_and_times(folder / "model.onnx")
    assert check(None, saved) is False and hashed  # ctime moved: re-hashed, and the bytes differ
    assert check(None, {}) is False


def test_artifact_check_sees_a_file_added_to_an_artifact_folder(tmp_path):
    from mbuild.integrity import ArtifactsIntact

    folder = _variant_folder(tmp_path)
    check = ArtifactsIntact(str(folder / "variant.json"))
    saved = check._save()
    (folder / "weights" / "shard2.bin").write_bytes(b"extra")
    assert check(None, saved) is False


def test_a_step_that_finds_a_changed_artifact_makes_the_variant_task_rerun(tmp_path):
    """Were a change invisible to the stat check (a disk fault), check:/bundle: would say 'run doit again' forever:
    the step that finds it touches the file, so the variant's next uptodate check fails and it rebuilds."""
    from mbuild.errors import BuildError
    from mbuild.integrity import ArtifactsIntact, require_intact

    folder = _variant_folder(tmp_path)
    check = ArtifactsIntact(str(folder / "variant.json"))
    saved = check._save()
    target = folder / "model.onnx"
    _rewrite_keeping_size_and_times(target)
    info = os.stat(target)
    saved[check.KEY]["model.onnx"][2:] = [info.st_ctime_ns, info.st_ino]  # as if the fault kept even the ctime
    assert check(None, saved) is True  # the stat check cannot see it...
    with pytest.raises(BuildError, match="model.onnx changed after it was built"):
        require_intact(folder, json.loads((folder / "variant.json").read_text()), "check:m/t")
    assert check(None, saved) is False  # ...but after the check found it, the variant task reruns
