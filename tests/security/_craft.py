"""Hand-made zip archives for hostile-bundle tests: every header field can lie.

zipfile cannot write most of these (it fixes sizes, CRCs and offsets), so the bytes are laid out
here: local header + data per entry, central directory, end record, with overrides per field.
"""
from __future__ import annotations

import hashlib
import json
import stat
import struct
import zlib
from dataclasses import dataclass, field

from mbuild.bundle.select import SELECTION_ALGORITHM

REGULAR = (stat.S_IFREG | 0o644) << 16


@dataclass
class Spec:
    """One entry; ``None`` fields are computed honestly from ``data``."""

    name: str | bytes
    data: bytes = b""
    method: int = 0
    flags: int = 0
    crc: int | None = None
    csize: int | None = None
    usize: int | None = None
    payload: bytes | None = None  # the bytes stored (default: data, deflated when method 8)
    local_name: bytes | None = None
    local_usize: int | None = None
    extra: bytes = b""
    local_extra: bytes | None = None
    comment: bytes = b""
    external: int = REGULAR
    hidden: bool = False  # local header and data only: no central-directory record
    gap_before: bytes = b""


@dataclass
class Layout:
    prepend: bytes = b""
    append: bytes = b""
    shift_offsets: bool = True  # prepended bytes counted in the offsets (a self-consistent polyglot)
    eocd_comment: bytes = b""
    count: int | None = None
    between_cd_and_eocd: bytes = b""
    extra_eocd: dict = field(default_factory=dict)


def _raw(name) -> bytes:
    return name if isinstance(name, bytes) else name.encode()


def craft(specs: list[Spec], layout: Layout | None = None) -> bytes:
    layout = layout or Layout()
    out = bytearray(layout.prepend)
    base = len(layout.prepend) if layout.shift_offsets else 0
    central = bytearray()
    records = 0
    for s in specs:
        out += s.gap_before
        payload = s.payload
        if payload is None:
            payload = s.data if s.method != 8 else _deflate(s.data)
        crc = zlib.crc32(s.data) if s.crc is None else s.crc
        csize = len(payload) if s.csize is None else s.csize
        usize = len(s.data) if s.usize is None else s.usize
        name = _raw(s.name)
        local_name = name if s.local_name is None else s.local_name
        local_extra = s.extra if s.local_extra is None else s.local_extra
        offset = len(out) - len(layout.prepend) + base
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, s.flags, s.method, 0, 33, crc, csize,
                           usize if s.local_usize is None else s.local_usize, len(local_name), len(local_extra))
        out += local_name + local_extra + payload
        if s.hidden:
            continue
        records += 1
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 0x314, 20, s.flags, s.method, 0, 33, crc, csize, usize,
                               len(name), len(s.extra), len(s.comment), 0, 0, s.external, offset)
        central += name + s.extra + s.comment
    cd_offset = len(out) - len(layout.prepend) + base
    out += central + layout.between_cd_and_eocd
    count = records if layout.count is None else layout.count
    fields = {"disk": 0, "cd_disk": 0, "n_disk": count, "n_total": count, "cd_size": len(central),
              "cd_offset": cd_offset, **layout.extra_eocd}
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", fields["disk"], fields["cd_disk"], fields["n_disk"],
                       fields["n_total"], fields["cd_size"], fields["cd_offset"], len(layout.eocd_comment))
    out += layout.eocd_comment + layout.append
    return bytes(out)


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def deflated_zeros(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 1 MiB), built without ever holding ``size`` bytes.

    A full flush resets the compressor, so every 1 MiB block compresses to the same segment; the
    stream is that segment repeated, then an empty final block.
    """
    assert size % (1 << 20) == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(bytes(1 << 20))
    c.flush(zlib.Z_FULL_FLUSH)
    segment = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return segment * (size >> 20) + b"\x03\x00"


MODEL = bytes(range(256)) * 16


def base_doc(model: bytes = MODEL) -> dict:
    """A small, schema-valid bundle.json every reading command accepts."""
    sha = hashlib.sha256(model).hexdigest()
    path = "variants/cpu/model.onnx"
    return {
        "format": 1, "name": "tiny", "version": "1.0.0", "build_id": "0" * 32, "mbuild_version": "0.1.0",
        "description": "a tiny bundle", "converters": {},
        "source": {"framework": "onnx", "model": "model.onnx", "params": 10, "flops": 100},
        "inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
        "outputs": [{"name": "y", "kind": "classification"}],
        "variants": [{
            "id": "cpu", "file": path, "files": [{"path": path, "sha256": sha, "size_bytes": len(model)}],
            "sha256": sha, "size_bytes": len(model), "runtime": "onnxruntime", "format": "onnx", "recipe": "fp32",
            "quantization": {"summary": "none (fp32)"}, "audit": None,
            "requirements": {"platform": "any", "accelerator": "cpu", "ram_mb_min": 1},
            "validation": {"status": "passed", "metrics": {"y": {"cosine": 1.0}}}, "capacity": {}}],
        "selection": {"order": ["cpu"], "fallback": "cpu", "algorithm": SELECTION_ALGORITHM},
    }


def sums_for(entries: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(entries[n]).hexdigest()}  {n}\n" for n in sorted(entries)).encode()


def base_entries(doc: dict | None = None, model: bytes = MODEL) -> dict[str, bytes]:
    """Entries of a valid bundle: bundle.json, the model and SHA256SUMS listing both."""
    entries = {"bundle.json": json.dumps(doc or base_doc(model), sort_keys=True).encode(),
               "variants/cpu/model.onnx": model}
    entries["SHA256SUMS"] = sums_for(entries)
    return entries


def specs_of(entries: dict[str, bytes]) -> list[Spec]:
    """One honest entry each (non-ASCII names flagged as UTF-8, as zipfile does)."""
    return [Spec(name, data, flags=0 if name.isascii() else 0x800) for name, data in sorted(entries.items())]


def with_listed(entries: dict[str, bytes], extra: dict[str, bytes]) -> list[Spec]:
    """Base entries plus ``extra``, all listed in SHA256SUMS (so only the archive rules can refuse them)."""
    merged = {k: v for k, v in entries.items() if k != "SHA256SUMS"} | extra
    merged["SHA256SUMS"] = sums_for(merged)
    return specs_of(merged)
