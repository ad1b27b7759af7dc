"""Safe YAML loading that remembers where every key and value came from.

PyYAML's composer gives each node a start mark; we build plain Python data from the
node graph ourselves so that custom tags, duplicate keys and alias bombs are refused
before any object is constructed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mbuild.errors import Location, ManifestError

MAX_NODES = 20_000
MAX_BYTES = 1_000_000
MAX_DEPTH = 32

_PLAIN_TAGS = {
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}

KeyPath = tuple  # of str | int


class Positions(dict):
    """Maps a key path to the Location of its value; ``keys`` maps it to the key's own Location."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[KeyPath, Location] = {}

    def of(self, path: KeyPath, *, key: bool = False) -> Location | None:
        """Best location for ``path``: the exact node, else its nearest recorded ancestor."""
        table = self.keys if key else self
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if not key and path in self.keys:
                return self.keys[path]
            path = path[:-1]
        return self.get(())


def _loc(file: str, mark: yaml.Mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, Positions]:
    """Load one YAML document safely; return its data and the positions of its nodes."""
    display = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError("file not found", Location(display, 1, 1)) from None
    except OSError as e:
        raise ManifestError(f"cannot read file: {e.strerror}", Location(display, 1, 1)) from None
    if len(raw) > MAX_BYTES:
        raise ManifestError(f"manifest is larger than {MAX_BYTES} bytes", Location(display, 1, 1))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"not UTF-8 text (byte {e.start})", Location(display, 1, 1)) from None
    try:
        loader = yaml.SafeLoader(text)  # the reader refuses control characters right here
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        column = e.position - text.rfind("\n", 0, e.position)
        raise ManifestError(f"invalid YAML: unacceptable character #x{e.character:04x} ({e.reason}); remove it",
                            Location(display, line, column)) from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = _loc(display, mark) if mark else Location(display, 1, 1)
        problem = e.problem or e.context or "invalid YAML"
        raise ManifestError(f"invalid YAML: {problem}", loc) from None
    except yaml.YAMLError as e:
        raise ManifestError(f"invalid YAML: {e}", Location(display, 1, 1)) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ManifestError(f"YAML nested more than {MAX_DEPTH} levels deep", Location(display, 1, 1)) from None
    finally:
        loader.dispose()
    positions = Positions()
    if node is None:
        return None, positions
    budget = [MAX_NODES]
    data = _build(node, (), display, positions, loader, budget)
    return data, positions


def _build(node, path, file, positions, loader, budget):
    budget[0] -= 1
    if budget[0] < 0:
        raise ManifestError(
            f"manifest expands to more than {MAX_NODES} values (alias bomb?); write it out plainly",
            _loc(file, node.start_mark),
        )
    positions[path] = _loc(file, node.start_mark)
    if len(path) > MAX_DEPTH:
        raise ManifestError(f"YAML nested more than {MAX_DEPTH} levels deep", _loc(file, node.start_mark))
    if node.tag not in _PLAIN_TAGS:
        raise ManifestError(
            f"YAML tag {node.tag!r} is not allowed; manifests hold plain mappings, lists and scalars",
            _loc(file, node.start_mark),
        )
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                raise ManifestError("keys must be plain strings (no '<<' merges or complex keys)",
                                    _loc(file, key_node.start_mark))
            key = key_node.value
            if key in out:
                raise ManifestError(f"duplicate key {key!r}", _loc(file, key_node.start_mark),
                                    _dotted(path))
            positions.keys[path + (key,)] = _loc(file, key_node.start_mark)
            out[key] = _build(value_node, path + (key,), file, positions, loader, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), file, positions, loader, budget) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise ManifestError(f"invalid value: {e}", _loc(file, node.start_mark)) from None


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted = _dotted
