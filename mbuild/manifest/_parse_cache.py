"""Remembered YAML parses: a manifest's bytes parsed once per project, not once per build step.

PyYAML's pure-Python parser takes ~45 ms for an example manifest, and a build loads its manifest
in every step (27 times for manifests/digits.yaml) and in every no-op. A parse is a pure function
of the bytes and of the parser, so its result (plain data and the line/column of every node) is
kept in ``.mbuild/yaml/<sha256 of the bytes>.json`` and read back in ~1 ms. The key also covers
this package's parser code and the installed PyYAML. Only documents that parsed cleanly are kept;
a document whose JSON form would not give back exactly the same data is never kept.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mbuild.errors import Location

FOLDER = "yaml"  # under the project's .mbuild/
KEEP = 128  # parses remembered per project; the oldest go first


@functools.cache
def _parser_digest() -> str:
    """This package's YAML code and the installed PyYAML (located without importing it)."""
    import importlib.util

    h = hashlib.sha256((Path(__file__).parent / "_yaml.py").read_bytes())
    spec = importlib.util.find_spec("yaml")
    if spec and spec.origin:
        info = os.stat(spec.origin)
        h.update(f"{spec.origin}:{info.st_size}:{info.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _key(raw: bytes) -> str:
    return hashlib.sha256(raw + _parser_digest().encode()).hexdigest()


def recall(folder: Path | None, raw: bytes, display: str, positions) -> Any:
    """The remembered data for ``raw`` (filling ``positions`` for ``display``), or None if not remembered."""
    if folder is None:
        return None
    try:
        saved = json.loads((folder / f"{_key(raw)}.json").read_text())
        data = saved["data"]
        for table, rows in ((positions, saved["positions"]), (positions.keys, saved["keys"])):
            for path, line, column in rows:
                table[tuple(path)] = Location(display, line, column)
    except (OSError, ValueError, KeyError, TypeError):
        positions.clear()
        positions.keys.clear()
        return None
    return data


def remember(folder: Path | None, raw: bytes, data: Any, positions) -> None:
    """Keep a clean parse, if its JSON form gives back exactly ``data`` (types included)."""
    if folder is None or data is None:
        return
    try:
        text = json.dumps({"data": data,
                           "positions": [[list(p), loc.line, loc.column] for p, loc in positions.items()],
                           "keys": [[list(p), loc.line, loc.column] for p, loc in positions.keys.items()]},
                          allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return
    if not _same(json.loads(text)["data"], data):
        return
    from mbuild._io import write_bytes_atomic

    try:
        folder.mkdir(exist_ok=True)
        write_bytes_atomic(folder / f"{_key(raw)}.json", text.encode())
        _prune(folder)
    except OSError:
        pass


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 and 1.0 and True are three different values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    for old in entries[:-KEEP]:
        old.unlink(missing_ok=True)
