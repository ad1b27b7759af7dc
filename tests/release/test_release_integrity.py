"""release signs only what the build validated, checks its record every run, never overwrites a released file."""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile

import pytest

from mbuild.bundle.archive import write_archive
from mbuild.bundle.build import sha256sums
from mbuild.bundle.released import publish_released
from mbuild.bundle.sign import generate_keypair, sign_bundle
from mbuild.errors import BuildError
from tests.conftest import executed_tasks, run_doit, run_mbuild

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
RELEASED = "dist/releases/digits-cnn-1.0.0.mbundle"
INT8 = "variants/cpu-int8/model.onnx"


def _project(source, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(source, project)
    return project


@pytest.fixture(scope="module")
def keyed(digits_cpu_project, tmp_path_factory):
    """The digits CPU project with a release key pinned in pyproject.toml (not released yet)."""
    project = _project(digits_cpu_project, tmp_path_factory.mktemp("keyed"))
    generate_keypair(project / "keys" / "release.pem")
    (project / "pyproject.toml").write_text('[tool.mbuild]\ntrusted_keys = ["keys/release.pub.pem"]\n')
    return project


@pytest.fixture(scope="module")
def released(keyed, tmp_path_factory):
    project = _project(keyed, tmp_path_factory.mktemp("rel"))
    proc = _release(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return project


def _release(project, *extra):
    return run_mbuild("release", "manifests/digits.yaml", "--key", "keys/release.pem", *extra, cwd=project)


def _entries(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _swap_int8_consistently(path):
    """Replace the int8 model and rewrite every checksum: the bundle verifies, but it is not what was validated."""
    entries = _entries(path)
    entries.pop("SIGNATURE.ed25519", None)
    entries[INT8] = entries["variants/cpu-fp32/model.onnx"]
    doc = json.loads(entries["bundle.json"])
    for v in doc["variants"]:
        if v["id"] == "cpu-int8":
            sha = hashlib.sha256(entries[INT8]).hexdigest()
            v["sha256"] = v["files"][0]["sha256"] = sha
    entries["bundle.json"] = json.dumps(doc).encode()
    del entries["SHA256SUMS"]
    entries["SHA256SUMS"] = sha256sums(entries).encode()
    write_archive(path, entries)
    assert run_mbuild("verify", str(path)).returncode == 0


def _flip_int8_byte(path):
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(INT8)
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 1000
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper,found", [
    (_swap_int8_consistently, "is not the bundle the build made"),
    (_flip_int8_byte, f"does not verify: entry '{INT8}' does not match its CRC"),
], ids=["repacked", "flipped"])
def test_release_rebuilds_a_dist_bundle_altered_after_the_build(keyed, tmp_path, tamper, found):
    """doit treats the existing dist bundle as up to date; release must not sign it as it is."""
    project = _project(keyed, tmp_path)
    validated = (project / "build/digits-cnn/targets/cpu-int8/variant/model.onnx").read_bytes()
    tamper(project / BUNDLE)
    proc = _release(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"note: found: dist/digits-cnn-1.0.0.mbundle {found}" in proc.stdout, proc.stdout
    assert _entries(project / RELEASED)[INT8] == validated
    assert run_mbuild("verify", RELEASED, cwd=project).returncode == 0


def test_plain_doit_after_release_keeps_the_signed_copy(released, tmp_path):
    project = _project(released, tmp_path)
    signed = (project / RELEASED).read_bytes()
    assert (project / BUNDLE).read_bytes() == signed
    proc = run_doit(project, check=True)
    assert not executed_tasks(proc.stdout) and (project / BUNDLE).read_bytes() == signed
    (project / BUNDLE).unlink()  # the bundle task now runs: it must put the released copy back, not an unsigned one
    proc = run_doit(project, check=True)
    assert "bundle:digits-cnn" in executed_tasks(proc.stdout)
    assert "now holds the released (signed) copy" in proc.stdout, proc.stdout
    assert (project / BUNDLE).read_bytes() == signed == (project / RELEASED).read_bytes()
    proc = _release(project)  # release after the plain doit: finds the release intact, changes nothing
    assert proc.returncode == 0 and "already released with identical content; nothing to do" in proc.stdout
    assert (project / RELEASED).read_bytes() == signed == (project / BUNDLE).read_bytes()


def test_plain_doit_refuses_other_content_under_a_released_version(released, tmp_path):
    project = _project(released, tmp_path)
    signed = (project / RELEASED).read_bytes()
    manifest = project / "manifests" / "digits.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.0\nlicense: MIT"))  # bundle only
    proc = run_doit(project)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "already released" in out and "Bump 'version:' in manifests/digits.yaml:3:10" in out, out
    assert (project / BUNDLE).read_bytes() == signed == (project / RELEASED).read_bytes()
    rel = _release(project)
    assert rel.returncode == 1 and "already released" in rel.stderr and "Traceback" not in rel.stderr
    assert (project / RELEASED).read_bytes() == signed == (project / BUNDLE).read_bytes()


def test_release_after_a_tampered_dist_bundle_leaves_the_release_intact(released, tmp_path):
    project = _project(released, tmp_path)
    signed = (project / RELEASED).read_bytes()
    _swap_int8_consistently(project / BUNDLE)
    proc = _release(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "found: dist/digits-cnn-1.0.0.mbundle is not the bundle the build made" in proc.stdout, proc.stdout
    assert "already released with identical content" in proc.stdout
    assert (project / RELEASED).read_bytes() == signed == (project / BUNDLE).read_bytes()


def test_a_swapped_released_copy_is_refused_not_restored(released, tmp_path):
    """dist/releases/ replaced by the same content signed with another key: release refuses and changes nothing."""
    project = _project(released, tmp_path)
    other, _ = generate_keypair(tmp_path / "other.pem")
    sign_bundle(project / RELEASED, other)
    swapped, dist = (project / RELEASED).read_bytes(), (project / BUNDLE).read_bytes()
    proc = _release(project)
    assert proc.returncode == 1, proc.stdout
    assert "does not match its release record" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert (project / RELEASED).read_bytes() == swapped and (project / BUNDLE).read_bytes() == dist
    verify = run_mbuild("verify", RELEASED, cwd=project)
    assert verify.returncode == 1 and "does not verify" in verify.stderr


def test_release_needs_a_trusted_key(keyed, tmp_path):
    project = _project(keyed, tmp_path)
    proc = run_mbuild("release", "manifests/digits.yaml", cwd=project)
    assert proc.returncode == 1 and "a release is signed: pass --key" in proc.stderr
    other, _ = generate_keypair(tmp_path / "other.pem")
    proc = run_mbuild("release", "manifests/digits.yaml", "--key", str(other), cwd=project)
    assert proc.returncode == 1 and "is not one the project trusts" in proc.stderr
    assert not (project / "dist" / "releases").exists()


def test_a_released_file_is_never_overwritten(tmp_path):
    target = tmp_path / "releases" / "x.mbundle"
    publish_released(_write(tmp_path / "a", b"first"), target)
    with pytest.raises(BuildError, match="never overwritten"):
        publish_released(_write(tmp_path / "b", b"second"), target)
    assert target.read_bytes() == b"first" and sorted(p.name for p in target.parent.iterdir()) == ["x.mbundle"]


def _write(path, data):
    path.write_bytes(data)
    return path
