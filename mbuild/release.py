"""``mbuild release``: build, verify, sign and record one immutable version of a bundle.

A version that reached an app store must never silently change. Each release keeps a
copy in ``dist/releases/<name>-<version>.mbundle`` with a small JSON record; releasing
the same version again is a no-op when the content (SHA256SUMS, which lists every
entry) is identical and is refused otherwise, with the manifest line to bump.
Also runs as the doit ``release:`` task: ``python -m mbuild.release MANIFEST [--key K]``.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mbuild.errors import MbuildError

RELEASES_DIR = "releases"
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


class ReleaseError(MbuildError):
    """A release was refused (version already released with other content, build failed, bundle missing)."""

    exit_code = 1


@dataclass(frozen=True)
class ReleaseResult:
    """What a release did: ``released`` (new version) or ``unchanged`` (identical content, no-op)."""

    status: str
    bundle: Path
    report: Path
    record: Path
    key_id: str | None
    previous: Path | None
    notes: tuple[str, ...] = ()


def version_key(version: str) -> tuple | None:
    """Semantic-version order (a pre-release sorts before its release); None if not a version."""
    m = _SEMVER.match(version)
    if not m:
        return None
    pre = m.group(4)
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, pre_key)


def next_patch(version: str) -> str:
    m = _SEMVER.match(version)
    return f"{m.group(1)}.{m.group(2)}.{int(m.group(3)) + 1}" if m and not m.group(4) else f"{version}.1"


def content_digest(bundle: Path) -> str:
    """sha256 of the bundle's SHA256SUMS: identical content gives the same digest, signed or not."""
    from mbuild.bundle.verify import check_bundle

    return hashlib.sha256(check_bundle(bundle).sums).hexdigest()


def find_previous(dist: Path, name: str, version: str) -> Path | None:
    """The newest bundle of ``name`` older than ``version`` in dist/releases/ (preferred) or dist/."""
    current = version_key(version)
    found: dict[str, Path] = {}
    for folder in (dist, dist / RELEASES_DIR):  # releases/ last, so a released copy wins
        for p in folder.glob(f"{name}-*.mbundle"):
            v = p.name[len(name) + 1:-len(".mbundle")]
            key = version_key(v)
            if key is not None and current is not None and key < current:
                found[v] = p
    if not found:
        return None
    return found[max(found, key=version_key)]


def signing_key(key: str | None) -> str | None:
    """The key to sign with: ``--key``, else MBUILD_SIGNING_KEY (a PEM path or the PEM text), else none."""
    from mbuild.bundle.sign import KEY_ENV

    return key or os.environ.get(KEY_ENV) or None


def run_build(manifest, jobs: int = 1) -> None:
    """Build the manifest's bundle with doit in a child process (the same graph as ``doit``)."""
    root = manifest.root
    if not (root / "dodo.py").exists():
        raise ReleaseError(f"no dodo.py in the project root {root}; run 'mbuild release' inside an mbuild project")
    argv = [sys.executable, "-m", "doit", "run"] + (["-n", str(jobs), "-P", "process"] if jobs > 1 else [])
    env = {**os.environ, "MBUILD_MANIFESTS": str(manifest.path)}
    proc = subprocess.run(argv + [f"bundle:{manifest.name}"], cwd=root, env=env, check=False)
    if proc.returncode != 0:
        raise ReleaseError(f"the build of {manifest.bundle_id} failed (doit exit status {proc.returncode}); "
                           "nothing was released")


def _copy_atomic(src: Path, dst: Path) -> None:
    from mbuild._io import write_bytes_atomic

    write_bytes_atomic(dst, Path(src).read_bytes())


def release_bundle(manifest, key: str | None = None) -> ReleaseResult:
    """Verify the built bundle, sign it when a key is given, and record the version (or refuse)."""
    from mbuild import _lock
    from mbuild._io import write_json_atomic
    from mbuild.bundle.report import write_report
    from mbuild.bundle.sign import load_private_key, sign_bundle, verify_signature
    from mbuild.bundle.verify import verify_bundle
    from mbuild.layout import layout_for

    lay = layout_for(manifest)
    bundle = lay.bundle_path
    rel = os.path.relpath(bundle, manifest.root)
    if not bundle.exists():
        raise ReleaseError(f"{rel} does not exist; build it first (doit bundle:{manifest.name})")
    key = signing_key(key)
    private = load_private_key(key) if key else None  # fail on a bad key before touching anything
    report = lay.dist_dir / f"{manifest.bundle_id}.report.html"
    released = lay.dist_dir / RELEASES_DIR / bundle.name
    record = released.with_suffix(".json")
    lock = _lock.acquire(lay.state_dir)
    try:
        doc = verify_bundle(bundle)
        if (doc["name"], doc["version"]) != (manifest.name, manifest.version):
            raise ReleaseError(f"{rel} holds {doc['name']} {doc['version']}, not {manifest.bundle_id}; rebuild it")
        digest = content_digest(bundle)
        if released.exists():
            return _rerelease(manifest, bundle, released, report, record, digest, key, private)
        key_id = sign_bundle(bundle, key) if key else None
        verify_bundle(bundle)
        if private is not None:
            from cryptography.hazmat.primitives import serialization

            pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            verify_signature(bundle, pem)
        previous = find_previous(lay.dist_dir, manifest.name, manifest.version)
        write_report(bundle, report, previous=previous)
        _copy_atomic(bundle, released)
        write_json_atomic(record, {"name": manifest.name, "version": manifest.version, "build_id": doc["build_id"],
                                   "content_sha256": digest, "bundle_sha256": hashlib.sha256(
                                       released.read_bytes()).hexdigest(),
                                   "key_id": key_id, "signed": key_id is not None,
                                   "manifest": os.path.relpath(manifest.path, manifest.root)})
        return ReleaseResult("released", bundle, report, record, key_id, previous)
    finally:
        _lock.release(lock)


def _rerelease(manifest, bundle, released, report, record, digest, key, private) -> ReleaseResult:
    """Same version again: no-op if the content is identical, refusal naming the manifest line otherwise."""
    from mbuild.bundle.report import write_report
    from mbuild.bundle.sign import key_id as key_id_of
    from mbuild.bundle.sign import signature_info
    from mbuild.bundle.verify import verify_bundle

    old = verify_bundle(released)
    if content_digest(released) != digest:
        where = manifest.positions.of(("version",))
        raise ReleaseError(
            f"{manifest.name} {manifest.version} was already released (build {old['build_id'][:12]}) with different "
            f"content; a released version is immutable. Bump 'version:' in {where or manifest.path} "
            f"(e.g. to {next_patch(manifest.version)}) and release again. The released bundle is kept in "
            f"{os.path.relpath(released, manifest.root)}; {os.path.relpath(bundle, manifest.root)} holds the new, "
            "unreleased build")
    notes = []
    if bundle.read_bytes() != released.read_bytes():
        _copy_atomic(released, bundle)  # e.g. doit rebuilt the identical bundle unsigned: put the release back
        notes.append(f"restored {os.path.relpath(bundle, manifest.root)} from the released copy")
    sig = signature_info(released)
    if private is not None and (sig is None or sig.get("key-id") != key_id_of(private.public_key())):
        notes.append("the released copy is " + (f"signed with {sig['key-id']}" if sig else "unsigned")
                     + "; a released version is not re-signed")
    if not report.exists():
        write_report(bundle, report, previous=find_previous(bundle.parent, manifest.name, manifest.version))
    return ReleaseResult("unchanged", bundle, report, record, sig.get("key-id") if sig else None, None, tuple(notes))


def release_manifest(path: str | Path, key: str | None = None, *, build: bool = True, jobs: int = 1) -> ReleaseResult:
    """Load the manifest, build its bundle through doit (unless ``build`` is False) and release it."""
    from mbuild.manifest import load_manifest

    manifest = load_manifest(path)
    if signing_key(key):
        from mbuild.bundle.sign import load_private_key

        load_private_key(signing_key(key))  # a bad key fails now, not after a long build
    if build:
        run_build(manifest, jobs)
    return release_bundle(manifest, key)


def describe(result: ReleaseResult, root: Path | None = None) -> str:
    def rel(p: Path) -> str:
        return os.path.relpath(p, root) if root else str(p)

    if result.status == "unchanged":
        lines = [f"release: {rel(result.bundle)} is already released with identical content; nothing to do"]
    else:
        sig = f"signed ({result.key_id})" if result.key_id else "unsigned (no --key or MBUILD_SIGNING_KEY)"
        lines = [f"release: {rel(result.bundle)} {sig}", f"release: report {rel(result.report)}"
                 + (f", diff against {rel(result.previous)}" if result.previous else ""),
                 f"release: recorded {rel(result.record)}"]
    return "\n".join(lines + [f"note: {n}" for n in result.notes])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the doit ``release:`` task (the bundle is already built by its task_dep)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m mbuild.release")
    p.add_argument("manifest")
    p.add_argument("--key")
    args = p.parse_args(argv)
    try:
        result = release_manifest(args.manifest, args.key, build=False)
    except MbuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(describe(result, Path.cwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
