"""Deterministic, mmap-friendly zip archives (written here, read by :mod:`mbuild.bundle.reader`).

Entries are sorted, stored uncompressed with a fixed timestamp and permissions; model
files start on a 4 KiB boundary (padding in the local header's extra field, as
Android's zipalign does) so an app can mmap them straight from the bundle.
"""
from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path

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


def _check_name(name: str) -> None:
    problem = unsafe_name(name)
    if problem:
        raise BundleError(f"refusing archive entry {name!r}: {problem}")


def unsafe_name(name: str) -> str | None:
    """Why an entry name is unsafe or ambiguous to extract (see :func:`mbuild.bundle.reader.name_problem`), or None."""
    from mbuild.bundle.reader import name_problem

    return name_problem(name)


def extract_archive(path: Path, dest: Path) -> list[Path]:
    """Extract a verified bundle into ``dest``, streaming each entry; on any refusal nothing is left behind.

    The whole bundle is checked first (:func:`mbuild.bundle.verify.check_bundle`: names, both zip
    indexes, sizes, checksums), then each entry is streamed to a temporary file with the reader's
    caps and renamed into place.
    """
    import os
    import tempfile

    from mbuild.bundle.reader import BundleReader
    from mbuild.bundle.verify import check_bundle

    dest = Path(dest).resolve()
    check_bundle(Path(path))
    out: list[Path] = []
    try:
        with BundleReader(path) as reader:
            for name in reader.names:
                target = (dest / name).resolve()
                if dest not in target.parents:
                    raise BundleError(f"{path}: entry {name!r} would be written outside {dest}")
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".extract.", dir=target.parent)
                try:
                    with os.fdopen(fd, "wb") as fh:
                        for chunk in reader.chunks(name):
                            fh.write(chunk)
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                out.append(target)
    except BaseException:
        for p in out:
            p.unlink(missing_ok=True)
        raise
    return out
