"""Released versions and build records: what ``bundle:`` and ``release`` agree on about dist/.

``bundle:`` writes ``build/<name>/bundle-record.json`` (the content digest of the bundle it made
from validated files); ``release`` signs only a dist bundle with that content. A released
version lives in ``dist/releases/<name>-<version>.mbundle`` with a JSON record; neither a
plain ``doit`` nor ``release`` ever overwrites it, and ``bundle:`` never puts other content
under a released version's name in dist/.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mbuild._io import sha256_file
from mbuild.errors import BuildError

RELEASES_DIR = "releases"
BUILD_RECORD = "bundle-record.json"


def released_path(lay) -> Path:
    return lay.dist_dir / RELEASES_DIR / lay.bundle_path.name


def release_record_path(lay) -> Path:
    return released_path(lay).with_suffix(".json")


def build_record_path(lay) -> Path:
    return lay.build_dir / BUILD_RECORD


def content_sha256(sums: bytes) -> str:
    """The content digest of a bundle: sha256 of its SHA256SUMS (signed or not, the same)."""
    return hashlib.sha256(sums).hexdigest()


def read_record(path: Path) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def release_record_problem(lay) -> str | None:
    """Why the released copy does not match its record (replaced, altered, record lost), or None."""
    released, record_path = released_path(lay), release_record_path(lay)
    record = read_record(record_path)
    rel = os.path.relpath(released, lay.root)
    if record is None:
        return f"{rel} has no readable release record ({os.path.relpath(record_path, lay.root)})"
    if sha256_file(released) != record.get("bundle_sha256"):
        return (f"{rel} is not the file that was released (its sha256 differs from "
                f"{os.path.relpath(record_path, lay.root)}): it was replaced or altered after release")
    return None


def guard_released(manifest, lay, sums: bytes) -> bool:
    """Before ``bundle:`` writes dist/: True when this version is released with the same content and dist/
    now holds the released (signed) copy; False when it is not released. Refuses other content."""
    released = released_path(lay)
    if not released.exists():
        return False
    rel = os.path.relpath(released, lay.root)
    problem = release_record_problem(lay)
    if problem:
        raise BuildError(f"bundle:{manifest.name}: {problem}; refusing to write {manifest.bundle_id} next to it. "
                         "Restore the released file from your artifact store")
    record = read_record(release_record_path(lay))
    if record.get("content_sha256") != content_sha256(sums):
        where = manifest.positions.of(("version",))
        from mbuild.release import next_patch

        raise BuildError(f"bundle:{manifest.name}: {manifest.name} {manifest.version} was already released ({rel}) "
                         f"with different content; a released version is immutable. Bump 'version:' in "
                         f"{where or manifest.path} (e.g. to {next_patch(manifest.version)}) and build again; "
                         f"dist/ keeps the released bundle")
    if not lay.bundle_path.exists() or sha256_file(lay.bundle_path) != record["bundle_sha256"]:
        from mbuild._io import write_bytes_atomic

        write_bytes_atomic(lay.bundle_path, released.read_bytes())
        print(f"note: bundle:{manifest.name}: {manifest.bundle_id} is released with this content; "
              f"{os.path.relpath(lay.bundle_path, lay.root)} now holds the released (signed) copy from {rel}")
    return True


def write_build_record(lay, sums: bytes, build_id: str) -> None:
    from mbuild._io import write_json_atomic

    write_json_atomic(build_record_path(lay), {"bundle": lay.bundle_path.name, "build_id": build_id,
                                               "content_sha256": content_sha256(sums)})


def publish_released(src: Path, released: Path) -> None:
    """Copy ``src`` to the released path, never replacing an existing file (hard link from a temporary)."""
    import tempfile

    released.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{released.name}.", dir=released.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(Path(src).read_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, released)
        except FileExistsError:
            raise BuildError(f"{released} already exists; a released file is never overwritten") from None
    finally:
        os.unlink(tmp)
