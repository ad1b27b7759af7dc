"""``mbuild verify``: schema, checksums and safe paths of a bundle, without trusting any of it."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from mbuild.bundle.archive import open_archive
from mbuild.bundle.schema import bundle_schema_problems
from mbuild.errors import BundleError

UNLISTED = {"SHA256SUMS", "SIGNATURE", "SIGNATURE.ed25519"}


def verify_bundle(path: Path) -> dict:
    """Return bundle.json if every check passes; raise BundleError naming the first broken entry otherwise."""
    with open_archive(path) as zf:
        names = zf.namelist()
        if "bundle.json" not in names or "SHA256SUMS" not in names:
            raise BundleError(f"{path}: missing {'bundle.json' if 'bundle.json' not in names else 'SHA256SUMS'}")
        sums = _parse_sums(_read(zf, "SHA256SUMS", path).decode("utf-8", "replace"), path)
        for name in names:
            if name in UNLISTED or name.endswith("/"):
                continue
            if name not in sums:
                raise BundleError(f"{path}: entry {name!r} is not listed in SHA256SUMS")
            actual = hashlib.sha256(_read(zf, name, path)).hexdigest()
            if actual != sums[name]:
                raise BundleError(f"{path}: entry {name!r} does not match its SHA256SUMS checksum "
                                  f"(expected {sums[name][:12]}..., got {actual[:12]}...)")
        for name in sums:
            if name not in names:
                raise BundleError(f"{path}: SHA256SUMS lists {name!r}, which is not in the archive")
        if "SIGNATURE.ed25519" in names:  # well-formed here; `verify --key` checks it against a public key
            from mbuild.bundle.sign import parse_signature

            parse_signature(_read(zf, "SIGNATURE.ed25519", path), str(path))
        try:
            doc = json.loads(_read(zf, "bundle.json", path))
        except json.JSONDecodeError as e:
            raise BundleError(f"{path}: bundle.json is not valid JSON ({e})") from None
        problems = bundle_schema_problems(doc)
        if problems:
            raise BundleError(f"{path}: {problems[0]}")
        for v in doc["variants"]:
            for f in v.get("files", [{"path": v["file"], "sha256": v["sha256"]}]):
                prefix = f["path"]
                members = [n for n in names if n == prefix or n.startswith(prefix + "/")]
                if not members:
                    raise BundleError(f"{path}: variant {v['id']!r} names {prefix!r}, which is not in the archive")
                if _tree_digest(zf, prefix, members) != f["sha256"]:
                    raise BundleError(f"{path}: variant {v['id']!r} file {prefix!r} does not match the sha256 in bundle.json")
    return doc


def _read(zf, name: str, path: Path) -> bytes:
    try:
        return zf.read(name)
    except zipfile.BadZipFile as e:
        raise BundleError(f"{path}: entry {name!r} does not match its checksum ({e}: the archive was altered)") from None


def _parse_sums(text: str, path: Path) -> dict[str, str]:
    sums = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BundleError(f"{path}: SHA256SUMS line {i} is malformed")
        if name in sums:
            raise BundleError(f"{path}: SHA256SUMS lists {name!r} twice")
        sums[name] = digest
    return sums


def _tree_digest(zf, prefix: str, members: list[str]) -> str:
    """Same digest as mbuild._io.sha256_tree: a file's sha256, or a folder's names and contents."""
    if members == [prefix]:
        return hashlib.sha256(zf.read(prefix)).hexdigest()  # CRC already checked above
    h = hashlib.sha256()
    for name in sorted(members):
        rel = name[len(prefix) + 1:]
        h.update(rel.encode() + b"\0" + hashlib.sha256(zf.read(name)).hexdigest().encode())
    return h.hexdigest()


def read_bundle_json(path: Path) -> dict:
    with open_archive(path) as zf:
        return json.loads(zf.read("bundle.json"))
