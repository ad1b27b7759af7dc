"""Copy A builds the CPU digits manifest and pushes to S3 (moto); empty copies restore from it.

Real doit, real converters, a real S3 API on localhost: nothing here stands in for storage.
"""
from __future__ import annotations

import time

import pytest

from tests.cache.conftest import bucket_listing, cache_project, events, make_bucket, run_in, s3fs_for

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
CACHED = {"source:digits-cnn", "variant:digits-cnn/cpu-fp32", "variant:digits-cnn/cpu-int8",
          "check:digits-cnn/cpu-fp32", "check:digits-cnn/cpu-int8"}


def _doit(project, **env):
    t0 = time.monotonic()
    proc = run_in(project, "doit", env=env)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, seconds


@pytest.fixture(scope="module")
def pushed(s3_endpoint, tmp_path_factory):
    """Copy A, built once in read-write mode; its cache URL, bucket and wall time."""
    url = make_bucket(s3_endpoint, "shared")
    a = cache_project(tmp_path_factory.mktemp("a"), url, s3_endpoint, mode="read-write")
    proc, seconds = _doit(a)
    return {"project": a, "url": url, "bucket": "shared", "seconds": seconds, "stdout": proc.stdout}


def test_empty_copy_restores_every_task_with_no_conversion(pushed, s3_endpoint, tmp_path, record_property):
    a = pushed["project"]
    assert {e["task"] for e in events(a) if e["event"] == "pushed"} == CACHED
    before = bucket_listing(s3_endpoint, pushed["bucket"])
    b = cache_project(tmp_path / "b", pushed["url"], s3_endpoint)  # mode left out: read-only, the default
    proc, seconds = _doit(b)
    log = events(b)
    assert {e["task"] for e in log if e["event"] == "restored"} == CACHED
    assert not [e for e in log if e["event"] in ("ran", "miss", "refused", "pushed")], log
    assert "none (fp32)" not in proc.stdout and "calibrated on" not in proc.stdout  # no converter printed a result
    assert (b / BUNDLE).read_bytes() == (a / BUNDLE).read_bytes()
    assert bucket_listing(s3_endpoint, pushed["bucket"]) == before
    record_property("a_seconds", round(pushed["seconds"], 2))
    record_property("b_seconds", round(seconds, 2))
    print(f"\nA (build + push): {pushed['seconds']:.1f} s; B (restore): {seconds:.1f} s")

    stats = run_in(b, "mbuild", "cache", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert '"entries": 5' in stats.stdout and '"restored": 5' in stats.stdout


def test_flipped_blob_is_refused_and_rebuilt_in_read_only_mode(pushed, s3_endpoint, tmp_path):
    a = pushed["project"]
    fs = s3fs_for(s3_endpoint)
    model = (a / "build/digits-cnn/targets/cpu-fp32/variant").glob("*.onnx").__next__()
    import hashlib

    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    blob = f"{pushed['bucket']}/mbuild/cas/{sha[:2]}/{sha}"
    good = fs.cat_file(blob)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    fs.pipe_file(blob, bytes(flipped))
    try:
        before = bucket_listing(s3_endpoint, pushed["bucket"])
        c = cache_project(tmp_path / "c", pushed["url"], s3_endpoint, mode="read-only")
        proc, _ = _doit(c)
        assert bucket_listing(s3_endpoint, pushed["bucket"]) == before  # read-only: nothing written, not even a fix
        log = events(c)
        refused = [e["task"] for e in log if e["event"] == "refused"]
        assert refused == ["variant:digits-cnn/cpu-fp32"], log
        assert "variant:digits-cnn/cpu-fp32: refused" in proc.stdout and "building it locally" in proc.stdout
        assert {e["task"] for e in log if e["event"] == "ran"} == {"variant:digits-cnn/cpu-fp32"}
        assert {e["task"] for e in log if e["event"] == "restored"} == CACHED - {"variant:digits-cnn/cpu-fp32"}
        assert (c / BUNDLE).read_bytes() == (a / BUNDLE).read_bytes()

        verify = run_in(c, "mbuild", "cache", "verify")
        assert verify.returncode == 1 and sha[:16] in verify.stderr and "corrupt" in verify.stderr
    finally:
        fs.pipe_file(blob, good)
