"""Validation on another host: ``mbuild check --runtime R`` in another process and copy, merged by the bundle.

An onnxruntime target stands in for a Core ML one (Core ML predictions need macOS, which this
machine is not): the path is the same, only the runtime differs.
"""
from __future__ import annotations

import json

from tests.cache.conftest import BUNDLE, cache_project, run_in, s3fs_for, timed_doit


def _validation(project, target: str) -> dict:
    proc = run_in(project, "mbuild", "inspect", "--json", BUNDLE)
    assert proc.returncode == 0, proc.stderr
    return next(v for v in json.loads(proc.stdout)["variants"] if v["id"] == target)["validation"]


def test_host_record_is_merged_and_a_record_for_another_artifact_is_refused(pushed, restored, s3_endpoint, tmp_path):
    fs = s3fs_for(s3_endpoint)
    fs.mkdir("hostcheck")  # a copy of A's cache, so the record pushed here reaches no other test's bundle
    fs.copy(f"{pushed['bucket']}/mbuild", "hostcheck/mbuild", recursive=True)
    url = "s3://hostcheck/mbuild"
    checker = cache_project(tmp_path / "other-host", url, s3_endpoint, mode="read-write")
    proc = run_in(checker, "mbuild", "check", "--runtime", "onnxruntime", "--target", "cpu-fp32")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check:digits-cnn/cpu-fp32: passed on Linux" in proc.stdout
    record = json.loads((checker / "build/digits-cnn/targets/cpu-fp32/host-validation.json").read_text())
    sha = record["artifact_sha256"]
    assert fs.exists(f"hostcheck/mbuild/records/{sha}/cpu-fp32.json")
    assert record["host"]["runtime"] == "onnxruntime" and record["host"]["versions"]["onnxruntime"]

    bundle_job = restored["project"]  # everything restored from A; its bundle task now finds the record
    record_int8 = dict(record, target="cpu-int8")  # cpu-fp32's artifact digest, placed as cpu-int8's record
    (bundle_job / "build/digits-cnn/targets/cpu-int8/host-validation.json").write_text(json.dumps(record_int8))
    timed_doit(bundle_job, "forget", "bundle:digits-cnn")  # the record is no file_dep of bundle: (docs/ci.md)
    proc, _ = timed_doit(bundle_job, MBUILD_CACHE_URL=url)
    assert "cpu-fp32: validation passed on Linux" in proc.stdout
    assert "refused the host validation record build/digits-cnn/targets/cpu-int8/host-validation.json for cpu-int8" \
        in proc.stderr and f"made for artifact sha256 {sha[:16]}" in proc.stderr  # warnings go to stderr

    fp32, int8 = _validation(bundle_job, "cpu-fp32"), _validation(bundle_job, "cpu-int8")
    assert fp32["status"] == "passed" and fp32["host"] == record["host"]
    assert int8["status"] == "passed" and "host" not in int8  # kept its own (build-host) validation
    verify = run_in(bundle_job, "mbuild", "verify", BUNDLE)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_check_names_what_is_missing(tmp_path):
    from tests.conftest import DIGITS_CPU, make_project

    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    proc = run_in(project, "mbuild", "check", "--runtime", "coreml")
    assert proc.returncode == 1 and "no target with runtime 'coreml'" in proc.stderr
    proc = run_in(project, "mbuild", "check", "--runtime", "onnxruntime", "--target", "cpu-int8")  # nothing built
    assert proc.returncode == 1 and "source:digits-cnn is neither built here" in proc.stderr
    assert "Traceback" not in proc.stderr
