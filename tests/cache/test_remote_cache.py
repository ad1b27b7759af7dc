"""Copy A builds the CPU digits manifest and pushes to S3 (moto); empty copies restore from it.

Real doit, real converters, a real S3 API on localhost: nothing here stands in for storage.
"""
from __future__ import annotations

import hashlib
import json

from tests.cache.conftest import BUNDLE, CACHED, bucket_listing, cache_project, events, run_in, s3fs_for, timed_doit


def test_empty_copy_restores_every_task_with_no_conversion(pushed, restored, record_property):
    a, b, seconds = pushed["project"], restored["project"], restored["seconds"]
    assert {e["task"] for e in events(a) if e["event"] == "pushed"} == CACHED
    log = events(b)
    assert {e["task"] for e in log if e["event"] == "restored"} == CACHED
    assert not [e for e in log if e["event"] in ("ran", "miss", "refused", "pushed")], log
    out = restored["stdout"]
    assert "none (fp32)" not in out and "calibrated on" not in out  # no converter printed a result
    assert restored["bundle"] == pushed["bundle"]
    assert restored["after"] == restored["before"]  # read-only: the bucket is unchanged
    record_property("a_seconds", round(pushed["seconds"], 2))
    record_property("b_seconds", round(seconds, 2))
    print(f"\nA (build + push): {pushed['seconds']:.1f} s; B (restore): {seconds:.1f} s")

    stats = run_in(b, "mbuild", "cache", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    stats = json.loads(stats.stdout)
    assert (stats["mode"], stats["entries"]) == ("read-only", len(CACHED))
    assert stats["this_checkout"] == {"restored": sum(e["event"] == "restored" for e in events(b))}


def _tasks_holding(project, sha: str) -> set[str]:
    """The cached tasks whose outputs include a file with this sha256 (content-addressed: they share its blob)."""
    build = project / "build/digits-cnn"
    folders = {f"convert:digits-cnn/{p.name}": p for p in (build / "convert").iterdir() if p.is_dir()}
    folders.update({f"variant:digits-cnn/{t}": build / "targets" / t / "variant" for t in ("cpu-fp32", "cpu-int8")})
    return {task for task, folder in folders.items()
            if any(hashlib.sha256(f.read_bytes()).hexdigest() == sha for f in folder.rglob("*") if f.is_file())}


def test_flipped_blob_is_refused_and_rebuilt_in_read_only_mode(pushed, s3_endpoint, tmp_path):
    a = pushed["project"]
    fs = s3fs_for(s3_endpoint)
    model = (a / "build/digits-cnn/targets/cpu-fp32/variant").glob("*.onnx").__next__()
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    blob = f"{pushed['bucket']}/mbuild/cas/{sha[:2]}/{sha}"
    good = fs.cat_file(blob)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    fs.pipe_file(blob, bytes(flipped))
    try:
        before = bucket_listing(s3_endpoint, pushed["bucket"])
        c = cache_project(tmp_path / "c", pushed["url"], s3_endpoint, mode="read-only")
        proc, _ = timed_doit(c)
        assert bucket_listing(s3_endpoint, pushed["bucket"]) == before  # read-only: nothing written, not even a fix
        log = events(c)
        owners = _tasks_holding(a, sha)  # the shared base conversion holds the same bytes as the fp32 variant
        assert "variant:digits-cnn/cpu-fp32" in owners and any(t.startswith("convert:") for t in owners), owners
        refused = [e["task"] for e in log if e["event"] == "refused"]
        assert sorted(refused) == sorted(owners), log
        assert "variant:digits-cnn/cpu-fp32: refused" in proc.stderr and "building it locally" in proc.stderr
        assert {e["task"] for e in log if e["event"] == "ran"} == owners
        assert {e["task"] for e in log if e["event"] == "restored"} == CACHED - owners
        assert (c / BUNDLE).read_bytes() == pushed["bundle"]

        verify = run_in(c, "mbuild", "cache", "verify")
        assert verify.returncode == 1 and sha[:16] in verify.stderr and "corrupt" in verify.stderr
    finally:
        fs.pipe_file(blob, good)
