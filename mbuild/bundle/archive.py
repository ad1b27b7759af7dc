"""Deterministic, mmap-friendly zip archives and their safe reading.

Entries are sorted, stored uncompressed with a fixed timestamp and permissions; model
files start on a 4 KiB boundary (padding in the local header's extra field, as
Android's zipalign does) so an app can mmap them straight from the bundle.
"""
from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath

from mbuild.errors import BundleError

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
PAGE = 4096
_ALIGN_EXTRA_ID = 0xD935  # the extra-field id zipalign uses for padding
MODEL_SUFFIXES = (".onnx", ".ort", ".tflite", ".bin", ".mlmodel", ".weights")


def write_archive(path: Path, entries: dict[str, bytes | Path]) -> None:
    """Write ``entries`` (archive name -> bytes or file) as a deterministic stored zip at ``path``."""
    with open(path, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(entries):
            _check_name(name)
            data = entries[name]
            payload = data if isinstance(data, bytes) else Path(data).read_bytes()
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            if name.endswith(MODEL_SUFFIXES):
                header_end = fh.tell() + 30 + len(name.encode())
                pad = (-(header_end + 4)) % PAGE
                info.extra = struct.pack("<HH", _ALIGN_EXTRA_ID, pad) + b"\0" * pad
            zf.writestr(info, payload)


def _check_name(name: str) -> str | None:
    problem = unsafe_name(name)
    if problem:
        raise BundleError(f"refusing archive entry {name!r}: {problem}")
    return None


def unsafe_name(name: str) -> str | None:
    """Why an entry name is unsafe to extract (zip-slip), or None."""
    if not name or "\\" in name or "\0" in name:
        return "empty name, backslash or NUL"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if any(part in ("..", "") for part in PurePosixPath(name).parts) or ".." in name.split("/"):
        return "'..' component"
    return None


def open_archive(path: Path) -> zipfile.ZipFile:
    """Open a bundle, refusing unsafe entries (absolute, '..', duplicates, links, devices)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(f"{path}: not a readable bundle ({e})") from None
    seen = set()
    for info in zf.infolist():
        problem = unsafe_name(info.filename)
        if problem:
            zf.close()
            raise BundleError(f"{path}: entry {info.filename!r} is unsafe: {problem}")
        if info.filename in seen:
            zf.close()
            raise BundleError(f"{path}: entry {info.filename!r} appears twice")
        seen.add(info.filename)
        mode = info.external_attr >> 16
        if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            zf.close()
            raise BundleError(f"{path}: entry {info.filename!r} is a link or special file")
    return zf


def extract_archive(path: Path, dest: Path) -> list[Path]:
    """Extract safely (names checked, nothing written outside ``dest``)."""
    dest = Path(dest).resolve()
    out = []
    with open_archive(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            target = (dest / info.filename).resolve()
            if dest not in target.parents:
                raise BundleError(f"{path}: entry {info.filename!r} would be written outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, OSError) as e:
                raise BundleError(f"{path}: entry {info.filename!r} is corrupt ({e})") from None
            target.write_bytes(data)
            out.append(target)
    return out
