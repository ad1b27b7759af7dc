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
    """sha256 of the bundle's SHA256SUMS: identical content gives the same digest, signed or not (verified first)."""
    from mbuild.bundle.released import content_sha256
    from mbuild.bundle.verify import check_bundle

    return content_sha256(check_bundle(bundle).sums)


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
        raise ReleaseError(f"the build of {manifest.bundle_id} failed (doit exit status {proc.returncode}, its error "
                           "is above); nothing was released")


def _signer(manifest, key: str | None, unsigned: bool, trusted):
    """The private key to sign with, checked to be one the project trusts; None for an explicit --unsigned."""
    from mbuild.bundle.sign import key_id, load_private_key

    key = signing_key(key)
    if key is None:
        if unsigned:
            return None
        raise ReleaseError("a release is signed: pass --key PRIVATE.pem or set MBUILD_SIGNING_KEY (create a key with "
                           "'mbuild keygen keys/release.pem'); --unsigned releases without a signature")
    private = load_private_key(key)
    kid = key_id(private.public_key())
    if kid not in {key_id(k) for k in trusted.keys}:
        raise ReleaseError(f"the signing key {kid} is not one the project trusts: add its public key to "
                           f"[tool.mbuild] trusted_keys in {os.path.relpath(manifest.root / 'pyproject.toml')} "
                           "(e.g. trusted_keys = [\"keys/release.pub.pem\"]) so verify can check releases")
    return private


def _check_released(lay, trusted) -> dict | None:
    """The release record after checking the released copy against it (file digest, signature, key); None if unreleased."""
    from mbuild.bundle.released import read_record, release_record_path, release_record_problem, released_path
    from mbuild.bundle.trust import verify_trusted
    from mbuild.errors import BundleError

    released = released_path(lay)
    if not released.exists():
        return None
    problem = release_record_problem(lay)
    if problem is None:
        record = read_record(release_record_path(lay))
        try:
            verdict = verify_trusted(released, trusted=trusted, require_signed=bool(record.get("signed")))
        except BundleError as e:
            problem = str(e)
        else:
            if verdict.key_id != record.get("key_id"):
                problem = f"its verified key {verdict.key_id} is not the recorded {record.get('key_id')}"
    if problem:
        raise ReleaseError(f"the released copy does not match its release record: {problem}. Nothing was changed; "
                           f"restore {os.path.relpath(released, lay.root)} from your artifact store")
    return record


def _dist_problem(manifest, lay) -> str | None:
    """Why dist/<bundle> is not the bundle this build made from validated files, or None."""
    from mbuild.bundle.released import build_record_path, content_sha256, read_record
    from mbuild.bundle.verify import check_bundle
    from mbuild.errors import BundleError

    rel = os.path.relpath(lay.bundle_path, manifest.root)
    if not lay.bundle_path.exists():
        return f"{rel} does not exist"
    record = read_record(build_record_path(lay))
    if record is None or record.get("bundle") != lay.bundle_path.name:
        return f"the build has no record of {rel} (build/{manifest.name}/bundle-record.json)"
    try:
        checked = check_bundle(lay.bundle_path)
    except BundleError as e:
        return f"{rel} does not verify: {str(e).removeprefix(f'{lay.bundle_path}: ')}"
    if content_sha256(checked.sums) != record["content_sha256"]:
        return f"{rel} is not the bundle the build made (its SHA256SUMS differs from the build record)"
    for v in checked.doc["variants"]:
        vj = lay.variant_json(v["id"])
        recorded = read_json_or_none(vj)
        for name, sha in ((recorded or {}).get("digests") or {}).items():
            if checked.digests.get(f"variants/{v['id']}/{name}") != sha:
                return f"{rel}: variants/{v['id']}/{name} differs from the digest {os.path.relpath(vj, manifest.root)} records"
    return None


def read_json_or_none(path: Path):
    from mbuild.bundle.released import read_record

    return read_record(path)


def release_bundle(manifest, key: str | None = None, *, unsigned: bool = False, rebuild: bool = False,
                   jobs: int = 1) -> ReleaseResult:
    """Check the release record, make sure dist/ holds what the build validated, sign, record (or refuse)."""
    from mbuild import _lock
    from mbuild._io import atomic_path, write_json_atomic
    from mbuild.bundle.released import content_sha256, publish_released, release_record_path, released_path
    from mbuild.bundle.report import write_report
    from mbuild.bundle.sign import sign_bundle
    from mbuild.bundle.trust import project_trust, verify_trusted
    from mbuild.bundle.verify import check_bundle
    from mbuild.layout import layout_for

    lay = layout_for(manifest)
    bundle = lay.bundle_path
    rel = os.path.relpath(bundle, manifest.root)
    trusted = project_trust(manifest.root)
    private = _signer(manifest, key, unsigned, trusted)
    notes: list[str] = []
    record = _check_released(lay, trusted)
    problem = _dist_problem(manifest, lay)
    if problem and rebuild:
        notes.append(f"found: {problem}; rebuilt it")
        if bundle.exists():
            bundle.unlink()
        run_build(manifest, jobs)
        problem = _dist_problem(manifest, lay)
    if problem:
        raise ReleaseError(f"{problem}; nothing was released. Build it again: doit bundle:{manifest.name}")
    report = lay.dist_dir / f"{manifest.bundle_id}.report.html"
    released = released_path(lay)
    lock = _lock.acquire(lay.state_dir)
    try:
        checked = check_bundle(bundle)
        doc = checked.doc
        if (doc["name"], doc["version"]) != (manifest.name, manifest.version):
            raise ReleaseError(f"{rel} holds {doc['name']} {doc['version']}, not {manifest.bundle_id}; rebuild it")
        digest = content_sha256(checked.sums)
        if record is not None:
            return _rerelease(manifest, lay, record, digest, private, report, notes)
        with atomic_path(bundle) as signed:
            key_id = sign_bundle(bundle, private_pem(private), signed) if private is not None else None
            if private is None:
                signed.write_bytes(bundle.read_bytes())
            verdict = verify_trusted(signed, trusted=trusted, require_signed=private is not None)
            if verdict.key_id != key_id:
                raise ReleaseError(f"the signed bundle verified with key {verdict.key_id}, not {key_id}")
            publish_released(signed, released)
            write_json_atomic(release_record_path(lay), {
                "name": manifest.name, "version": manifest.version, "build_id": doc["build_id"],
                "content_sha256": digest, "bundle_sha256": hashlib.sha256(signed.read_bytes()).hexdigest(),
                "key_id": key_id, "signed": key_id is not None,
                "manifest": os.path.relpath(manifest.path, manifest.root)})
        previous = find_previous(lay.dist_dir, manifest.name, manifest.version)
        write_report(bundle, report, previous=previous, signed_by=key_id)
        return ReleaseResult("released", bundle, report, release_record_path(lay), key_id, previous, tuple(notes))
    finally:
        _lock.release(lock)


def private_pem(private) -> str:
    from cryptography.hazmat.primitives import serialization

    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()


def _rerelease(manifest, lay, record, digest, private, report, notes) -> ReleaseResult:
    """Same version again: no-op if the content is identical (dist/ gets the released copy back), refusal otherwise."""
    from mbuild._io import write_bytes_atomic
    from mbuild.bundle.released import release_record_path, released_path
    from mbuild.bundle.report import write_report
    from mbuild.bundle.sign import key_id as key_id_of

    released, bundle = released_path(lay), lay.bundle_path
    if record["content_sha256"] != digest:
        where = manifest.positions.of(("version",))
        raise ReleaseError(
            f"{manifest.name} {manifest.version} was already released (build {str(record.get('build_id'))[:12]}) with "
            f"different content; a released version is immutable. Bump 'version:' in {where or manifest.path} "
            f"(e.g. to {next_patch(manifest.version)}) and release again. The released bundle is kept in "
            f"{os.path.relpath(released, manifest.root)}")
    if bundle.read_bytes() != released.read_bytes():
        write_bytes_atomic(bundle, released.read_bytes())
        notes.append(f"restored {os.path.relpath(bundle, manifest.root)} from the released copy")
    kid = record.get("key_id")
    if private is not None and kid != key_id_of(private.public_key()):
        notes.append("the released copy is " + (f"signed with {kid}" if kid else "unsigned")
                     + "; a released version is not re-signed")
    if not report.exists():
        write_report(bundle, report, previous=find_previous(bundle.parent, manifest.name, manifest.version),
                     signed_by=kid)
    return ReleaseResult("unchanged", bundle, report, release_record_path(lay), kid, None, tuple(notes))


def release_manifest(path: str | Path, key: str | None = None, *, build: bool = True, jobs: int = 1,
                     unsigned: bool = False) -> ReleaseResult:
    """Load the manifest, check key and release record, build through doit (unless ``build`` is False), release."""
    from mbuild.bundle.trust import project_trust
    from mbuild.layout import layout_for
    from mbuild.manifest import load_manifest

    manifest = load_manifest(path)
    trusted = project_trust(manifest.root)
    _signer(manifest, key, unsigned, trusted)  # a bad or untrusted key fails now, not after a long build
    _check_released(layout_for(manifest), trusted)  # so does a released copy that no longer matches its record
    if build:
        run_build(manifest, jobs)
    return release_bundle(manifest, key, unsigned=unsigned, rebuild=build, jobs=jobs)


def describe(result: ReleaseResult, root: Path | None = None) -> str:
    def rel(p: Path) -> str:
        return os.path.relpath(p, root) if root else str(p)

    if result.status == "unchanged":
        lines = [f"release: {rel(result.bundle)} is already released with identical content; nothing to do"]
    else:
        sig = f"signed ({result.key_id})" if result.key_id else "unsigned (--unsigned)"
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
    p.add_argument("--unsigned", action="store_true")
    args = p.parse_args(argv)
    try:
        result = release_manifest(args.manifest, args.key, build=False, unsigned=args.unsigned)
    except MbuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(describe(result, Path.cwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
