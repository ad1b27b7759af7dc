"""Small file helpers: atomic writes, hashing, canonical JSON."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    An interrupted build therefore never leaves a half-written file that looks up to date.
    Works for files and folders (e.g. ``.mlpackage``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())


def canonical_json(obj: Any) -> str:
    """Sorted keys, fixed separators, trailing newline: the same data gives the same bytes."""
    try:  # strict JSON: NaN and Infinity are not JSON, and a NaN written here would read as a number later
        return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=_default, allow_nan=False) + "\n"
    except ValueError as e:
        where = _non_finite_at(obj)
        if where is None:
            raise
        raise ValueError(f"refusing to write a non-finite number at {where} (not JSON)") from e


def compact_json(obj: Any) -> str:
    """Sorted keys, no whitespace: the same data gives the same text, written by json's C encoder (``indent``
    forces its pure-Python one), for digests computed many times per run rather than files people read."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default,
                      allow_nan=False)


def _non_finite_at(obj: Any, path: str = "$") -> str | None:
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    try:
        import numpy as np

        if isinstance(obj, np.floating) and not np.isfinite(obj):
            return path
        if isinstance(obj, np.ndarray) and obj.dtype.kind == "f" and not np.isfinite(obj).all():
            return path
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = _non_finite_at(v, f"{path}.{k}" if isinstance(k, str) else f"{path}[{k}]")
        if found:
            return found
    return None


def _default(o: Any):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return o.as_posix()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, canonical_json(obj).encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """Digest of a file, or of a folder's relative names and contents (for .mlpackage)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    files = {p.relative_to(path).as_posix(): p for p in path.rglob("*") if p.is_file()}
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + sha256_file(files[rel]).encode())
    return h.hexdigest()


def files_of(path: Path) -> list[Path]:
    """A folder's files, sorted (a SavedModel, an .mlpackage, a tfjs model count as their files); else ``[path]``."""
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def tree_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dist_version(dist: str, missing: str = "not installed") -> str:
    """Installed version of a distribution (reads metadata, imports nothing; looked up once per process)."""
    found = _installed_version(dist)
    return missing if found is None else found


@functools.cache
def _installed_version(dist: str) -> str | None:
    found = _dist_info_versions().get(_normalized(dist))
    if found is not None:
        return found
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _normalized(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "_", name).lower()


@functools.cache
def _dist_info_versions() -> dict[str, str]:
    """Versions from the ``<name>-<version>.dist-info`` folder names on sys.path, first entry wins.

    One directory listing per path entry instead of a metadata search per distribution (the
    no-op build asks for about a dozen); anything not found this way goes to importlib.metadata.
    """
    import sys

    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and "-" in name:
                dist, _, version = name[: -len(".dist-info")].rpartition("-")
                found.setdefault(_normalized(dist), version)
    return found


def dist_versions(dists) -> dict[str, str]:
    return {d: dist_version(d) for d in dists}


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()
