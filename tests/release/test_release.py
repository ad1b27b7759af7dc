"""Releases: signed, verifiable, tamper-evident, deterministic, immutable per version, diffable."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from mbuild.bundle.archive import write_archive
from mbuild.bundle.build import sha256sums
from mbuild.bundle.sign import generate_keypair, sign_bundle, verify_signature
from mbuild.bundle.verify import verify_bundle
from mbuild.errors import BundleError
from tests.conftest import executed_tasks, run_doit, run_mbuild

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
RELEASED = "dist/releases/digits-cnn-1.0.0.mbundle"


@pytest.fixture(scope="module")
def released(digits_cpu_project, tmp_path_factory):
    """A copy of the digits CPU project released once with a fresh key: (project, private, public)."""
    project = tmp_path_factory.mktemp("released") / "p"
    shutil.copytree(digits_cpu_project, project)
    private, public = generate_keypair(project / "keys" / "release.pem")
    (project / "pyproject.toml").write_text('[tool.mbuild]\ntrusted_keys = ["keys/release.pub.pem"]\n')
    proc = run_mbuild("release", "manifests/digits.yaml", "--key", str(private), cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "signed (sha256:" in proc.stdout
    return project, private, public


def _verify(path, public):
    verify_bundle(path)
    return verify_signature(path, public)


def test_release_is_signed_verified_and_recorded(released):
    project, _, public = released
    proc = run_mbuild("verify", BUNDLE, "--key", str(public), cwd=project)
    assert proc.returncode == 0 and "signature valid" in proc.stdout, proc.stderr
    assert (project / RELEASED).read_bytes() == (project / BUNDLE).read_bytes()
    record = json.loads((project / "dist/releases/digits-cnn-1.0.0.json").read_text())
    assert record["signed"] and record["key_id"].startswith("sha256:")
    assert record["bundle_sha256"] == hashlib.sha256((project / BUNDLE).read_bytes()).hexdigest()
    html = (project / "dist/digits-cnn-1.0.0.report.html").read_text()
    assert "cpu-int8" in html and html.count("<svg") >= 2
    with zipfile.ZipFile(project / BUNDLE) as zf:
        assert "SIGNATURE.ed25519" in zf.namelist()


def _entry_offsets(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: (i.header_offset + 30 + len(i.filename) + len(i.extra), i.file_size) for i in zf.infolist()}


def test_any_changed_entry_or_signature_fails_naming_the_cause(released, tmp_path):
    project, _, public = released
    src = project / BUNDLE
    for name, (start, size) in _entry_offsets(src).items():
        bad = tmp_path / f"bad-{name.replace('/', '_')}.mbundle"
        shutil.copyfile(src, bad)
        with open(bad, "r+b") as fh:
            fh.seek(start + size // 2)
            byte = fh.read(1)
            fh.seek(start + size // 2)
            fh.write(bytes([byte[0] ^ 0x20]))
        with pytest.raises(BundleError) as err:
            _verify(bad, public)
        msg = str(err.value)
        assert name in msg or ("signature" in msg.lower() and name.startswith("SIGNATURE")), (name, msg)
    for name in ("SIGNATURE.ed25519", "variants/cpu-int8/model.onnx"):
        proc = run_mbuild("verify", str(tmp_path / f"bad-{name.replace('/', '_')}.mbundle"), "--key", str(public))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert name in proc.stderr, proc.stderr


def _entries(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_consistent_repack_with_old_signature_fails(released, tmp_path):
    """An attacker who rewrites a model and every checksum still cannot forge the signature."""
    project, _, public = released
    entries = _entries(project / BUNDLE)
    entries["variants/cpu-int8/model.onnx"] += b"\0"
    doc = json.loads(entries["bundle.json"])
    for v in doc["variants"]:
        for f in v["files"]:
            if f["path"] == "variants/cpu-int8/model.onnx":
                f["sha256"] = v["sha256"] = hashlib.sha256(entries[f["path"]]).hexdigest()
    entries["bundle.json"] = json.dumps(doc).encode()
    signature = entries.pop("SIGNATURE.ed25519")
    entries.pop("SHA256SUMS")
    entries["SHA256SUMS"] = sha256sums(entries).encode()
    entries["SIGNATURE.ed25519"] = signature
    forged = tmp_path / "forged.mbundle"
    write_archive(forged, entries)
    verify_bundle(forged)  # checksums and schema are consistent...
    with pytest.raises(BundleError, match="signature does not match SHA256SUMS"):
        verify_signature(forged, public)  # ...but the signature is not


def test_wrong_key_missing_signature_and_bad_key_files(released, tmp_path):
    project, _, public = released
    _, other_public = generate_keypair(tmp_path / "other.pem")
    with pytest.raises(BundleError, match="does not verify with the given key sha256:"):
        verify_signature(project / BUNDLE, other_public)
    unsigned = tmp_path / "unsigned.mbundle"
    entries = _entries(project / BUNDLE)
    del entries["SIGNATURE.ed25519"]
    write_archive(unsigned, entries)
    with pytest.raises(BundleError, match="not signed"):
        verify_signature(unsigned, public)
    proc = run_mbuild("verify", str(project / BUNDLE), "--key", str(project / "keys" / "release.pem"))
    assert proc.returncode == 2 and "private key" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_mbuild("release", str(project / "manifests/digits.yaml"), "--key", str(tmp_path / "nope.pem"))
    assert proc.returncode == 2 and "file not found" in proc.stderr and "Traceback" not in proc.stderr
    garbled = tmp_path / "garbled.mbundle"
    entries["SIGNATURE.ed25519"] = b"algorithm: rsa\nsignature: AAAA\n"
    write_archive(garbled, entries)
    with pytest.raises(BundleError, match="SIGNATURE.ed25519 is malformed"):
        verify_bundle(garbled)  # even without a key
    proc = run_mbuild("verify", str(project / BUNDLE))  # no key pinned where it runs: not checked, no id shown
    assert proc.returncode == 0 and "NOT checked" in proc.stdout and "sha256:" not in proc.stdout, proc.stdout
    with pytest.raises(Exception, match="already exists"):
        generate_keypair(project / "keys" / "release.pem")


def test_signing_is_deterministic(released, tmp_path):
    project, private, public = released
    unsigned = tmp_path / "u.mbundle"
    entries = _entries(project / BUNDLE)
    del entries["SIGNATURE.ed25519"]
    write_archive(unsigned, entries)
    a, b = tmp_path / "a.mbundle", tmp_path / "b.mbundle"
    sign_bundle(unsigned, private, a)
    sign_bundle(unsigned, private, b)
    assert a.read_bytes() == b.read_bytes() == (project / BUNDLE).read_bytes()
    sign_bundle(a, private)  # re-signing a signed bundle replaces the signature, same bytes
    assert a.read_bytes() == b.read_bytes()
    # the key may also come from the environment as PEM text (a CI secret)
    c = tmp_path / "c.mbundle"
    sign_bundle(unsigned, private.read_text(), c)
    assert c.read_bytes() == a.read_bytes() and _verify(c, public.read_text())


def test_same_version_same_content_is_a_noop(released):
    project, private, _ = released
    before = {p: p.read_bytes() for p in (project / "dist").rglob("*") if p.is_file()}
    proc = run_mbuild("release", "manifests/digits.yaml", "--key", str(private), cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "already released with identical content; nothing to do" in proc.stdout
    assert {p: p.read_bytes() for p in (project / "dist").rglob("*") if p.is_file()} == before


def test_release_task_is_not_in_the_default_build(released):
    project, private, _ = released
    proc = run_doit(project, check=True)
    assert not any(t.startswith("release:") for t in executed_tasks(proc.stdout)), proc.stdout
    listing = run_doit(project, "list", check=True).stdout
    assert "release" in listing
    env_proc = subprocess.run([sys.executable, "-m", "doit", "release"], cwd=project, capture_output=True, text=True,
                              env={**os.environ, "MBUILD_SIGNING_KEY": str(private)}, timeout=300, check=False)
    assert env_proc.returncode == 0, env_proc.stdout + env_proc.stderr
    assert "nothing to do" in env_proc.stdout


def test_changed_content_is_refused_then_a_bump_releases_with_a_diff(released, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(released[0], project)
    private = project / "keys" / "release.pem"
    manifest = project / "manifests" / "digits.yaml"
    released_bytes = (project / RELEASED).read_bytes()
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.0\ndescription: edited"))
    proc = run_mbuild("release", "manifests/digits.yaml", "--key", str(private), cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "already released" in proc.stderr and "immutable" in proc.stderr
    assert "Bump 'version:' in manifests/digits.yaml:3:10 (e.g. to 1.0.1)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (project / RELEASED).read_bytes() == released_bytes

    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1").replace(
        "cpu-int8: {runtime: onnxruntime, recipe: int8}", "cpu-int8: {runtime: onnxruntime, recipe: fp16}"))
    proc = run_mbuild("release", "manifests/digits.yaml", "--key", str(private), cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "diff against dist/releases/digits-cnn-1.0.0.mbundle" in proc.stdout
    html = (project / "dist/digits-cnn-1.0.1.report.html").read_text()
    assert "Changes since 1.0.0" in html and "recipe: int8 -&gt; fp16" in html

    diff = run_mbuild("diff", RELEASED, "dist/digits-cnn-1.0.1.mbundle", cwd=project)
    assert diff.returncode == 0, diff.stderr
    lines = diff.stdout.splitlines()
    assert "~ cpu-int8:" in lines and "= unchanged: cpu-fp32" in lines
    size = next(line for line in lines if "size_bytes:" in line)
    assert "->" in size and "%" in size
    assert any("logits.cosine:" in line for line in lines), diff.stdout  # accuracy may not change (98.61 % both)
    as_json = json.loads(run_mbuild("diff", "--json", RELEASED, "dist/digits-cnn-1.0.1.mbundle", cwd=project).stdout)
    before, after = as_json["changed"]["cpu-int8"]["changes"]["size_bytes"]
    assert after > before
