"""``mbuild verify``: a bundle's archive, checksums, schema and variant files, without trusting any of it.

:func:`check_bundle` is the integrity half (what any copy of the bundle can prove about itself);
:mod:`mbuild.bundle.trust` adds the other half (who vouches for it: a pinned public key).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from mbuild.bundle.reader import MAX_ENTRIES, BundleReader, load_json
from mbuild.bundle.schema import bundle_schema_problems
from mbuild.errors import BundleError

SUMS_ENTRY = "SHA256SUMS"
SIGNATURE_ENTRY = "SIGNATURE.ed25519"
UNLISTED = (SUMS_ENTRY, SIGNATURE_ENTRY)  # every other entry must be listed in SHA256SUMS
MAX_SUMS_BYTES = 4 * 2**20
MAX_SIGNATURE_BYTES = 4096
_SUMS_LINE = re.compile(r"([0-9a-f]{64})  (.+)")


@dataclass(frozen=True)
class CheckedBundle:
    """What :func:`check_bundle` proved: every entry matches ``sums``; ``signature`` is parsed, not yet checked."""

    path: Path
    doc: dict
    sums: bytes
    signature: dict | None
    digests: dict[str, str]


def check_bundle(path: Path) -> CheckedBundle:
    """Read the whole bundle once with the strict reader; raise BundleError naming the first broken thing."""
    path = Path(path)
    with BundleReader(path) as reader:
        for required in ("bundle.json", SUMS_ENTRY):
            if required not in reader:
                raise BundleError(f"{path}: missing {required}")
        sums_bytes = reader.read(SUMS_ENTRY, MAX_SUMS_BYTES)
        sums = parse_sums(sums_bytes, path)
        digests = {}
        for name in reader.names:
            h = hashlib.sha256()
            for chunk in reader.chunks(name):
                h.update(chunk)
            digests[name] = h.hexdigest()
        for name, actual in digests.items():
            if name in UNLISTED:
                continue
            if name not in sums:
                raise BundleError(f"{path}: entry {name!r} is not listed in SHA256SUMS (unchecked, unsigned data)")
            if actual != sums[name]:
                raise BundleError(f"{path}: entry {name!r} does not match its SHA256SUMS checksum "
                                  f"(expected {sums[name][:12]}..., got {actual[:12]}...)")
        for name in sums:
            if name in UNLISTED or name not in digests:
                raise BundleError(f"{path}: SHA256SUMS lists {name!r}, which is "
                                  + ("not a checksummed entry" if name in UNLISTED else "not in the archive"))
        signature = None
        if SIGNATURE_ENTRY in reader:
            from mbuild.bundle.sign import parse_signature

            signature = parse_signature(reader.read(SIGNATURE_ENTRY, MAX_SIGNATURE_BYTES), str(path))
        doc = load_json(reader.read("bundle.json", 16 * 2**20), f"{path}: bundle.json")
    problems = bundle_schema_problems(doc)
    if problems:
        raise BundleError(f"{path}: {problems[0]}")
    _check_variant_files(path, doc, digests)
    return CheckedBundle(path, doc, sums_bytes, signature, digests)


def verify_bundle(path: Path) -> dict:
    """bundle.json of a bundle whose archive, checksums, schema and variant files all check out."""
    return check_bundle(path).doc


def read_bundle_json(path: Path) -> dict:
    """bundle.json, only after the whole bundle was verified (readers never see an unchecked document)."""
    return verify_bundle(path)


def parse_sums(data: bytes, path: Path) -> dict[str, str]:
    """SHA256SUMS as mbuild writes it: ``<64 lower-case hex>  <name>`` lines, each name once."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{path}: SHA256SUMS is not UTF-8") from None
    sums: dict[str, str] = {}
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_ENTRIES:
        raise BundleError(f"{path}: SHA256SUMS has more than {MAX_ENTRIES} lines")
    for i, line in enumerate(lines, 1):
        m = _SUMS_LINE.fullmatch(line)
        if not m:
            raise BundleError(f"{path}: SHA256SUMS line {i} is malformed")
        digest, name = m.groups()
        if name in sums:
            raise BundleError(f"{path}: SHA256SUMS lists {name!r} twice")
        sums[name] = digest
    return sums


def _check_variant_files(path: Path, doc: dict, digests: dict[str, str]) -> None:
    """Every file a variant names is in the archive with the sha256 bundle.json gives (a folder: its tree digest)."""
    under: dict[str, list[str]] = {}
    for name in digests:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            under.setdefault("/".join(parts[:i]), []).append(name)
    ids = set()
    for v in doc["variants"]:
        if v["id"] in ids:
            raise BundleError(f"{path}: variant {v['id']!r} appears twice in bundle.json")
        ids.add(v["id"])
        files = v.get("files") or [{"path": v["file"], "sha256": v["sha256"]}]
        if files[0]["path"] != v["file"] or files[0]["sha256"] != v["sha256"]:
            raise BundleError(f"{path}: variant {v['id']!r}: 'file'/'sha256' disagree with its first 'files' item")
        for f in files:
            prefix = f["path"]
            members = under.get(prefix)
            if not members:
                raise BundleError(f"{path}: variant {v['id']!r} names {prefix!r}, which is not in the archive")
            if _tree_digest(prefix, sorted(members), digests) != f["sha256"]:
                raise BundleError(f"{path}: variant {v['id']!r} file {prefix!r} does not match the sha256 in "
                                  "bundle.json")


def _tree_digest(prefix: str, members: list[str], digests: dict[str, str]) -> str:
    """Same digest as mbuild._io.sha256_tree: a file's sha256, or a folder's names and contents."""
    if members == [prefix]:
        return digests[prefix]
    h = hashlib.sha256()
    for name in members:
        h.update(name[len(prefix) + 1:].encode() + b"\0" + digests[name].encode())
    return h.hexdigest()
