"""Safe YAML loading that remembers where every key and value came from.

PyYAML's composer gives each node a start mark; we build plain Python data from the
node graph ourselves so that custom tags, duplicate keys and alias bombs are refused
before any object is constructed.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbuild.errors import Location, ManifestError

if TYPE_CHECKING:  # pragma: no cover - imported where a document is parsed: a remembered parse needs no PyYAML
    import yaml

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


def load_yaml(path: Path, display: str | None = None, digests: list | None = None,
              cache: Path | None = None) -> tuple[Any, Positions]:
    """Load one YAML document safely; return its data and the positions of its nodes (``digests`` gets its sha256).

    With ``cache`` (a folder in the project's .mbuild/), a clean parse of the same bytes is read back
    instead of parsed again (see ``_parse_cache``).
    """
    from mbuild.manifest import _parse_cache

    display = display or str(path)
    raw = read_limited(path, MAX_BYTES, Location(display, 1, 1), "manifest")
    if digests is not None:
        import hashlib

        digests.append(hashlib.sha256(raw).hexdigest())
    positions = Positions()
    data = _parse_cache.recall(cache, raw, display, positions)
    if data is None:
        data, positions = _parse(raw, display)
        _parse_cache.remember(cache, raw, data, positions)
    return data, positions


def _parse(raw: bytes, display: str) -> tuple[Any, Positions]:
    """Parse with PyYAML's composer and build the data ourselves (see the module docstring)."""
    import yaml

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


def read_limited(path: Path, limit: int, loc: Location, what: str = "file") -> bytes:
    """The bytes of a regular file no larger than ``limit``; its size is checked before anything is read.

    Opened non-blocking, so a FIFO or a device named as a manifest is refused instead of waiting forever.
    """
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ManifestError("file not found", loc) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ManifestError(f"cannot read file: {getattr(e, 'strerror', None) or e}", loc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"not a regular file ({file_kind(info.st_mode)}); name a plain file", loc)
        if info.st_size > limit:
            raise ManifestError(f"{what} is larger than {limit} bytes ({info.st_size})", loc)
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise ManifestError(f"cannot read file: {e.strerror}", loc) from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > limit:
        raise ManifestError(f"{what} is larger than {limit} bytes", loc)
    return raw


def file_kind(mode: int) -> str:
    import stat

    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a plain file"


def _checked_scalar(value, node, file):
    """Refuse what no later step can hold: NaN/inf, NUL, lone surrogates (not encodable as UTF-8)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise ManifestError(f"{node.value!r} is not a finite number; NaN and infinities are not allowed",
                            _loc(file, node.start_mark))
    if isinstance(value, str):
        _check_text(value, node, file)
    return value


def _check_text(text: str, node, file) -> None:
    if "\0" in text:
        raise ManifestError("text holds a NUL character; remove it", _loc(file, node.start_mark))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ManifestError(f"text holds a lone surrogate (\\u{ord(text[e.start]):04x}), which is not valid "
                            "Unicode; remove it", _loc(file, node.start_mark)) from None


def _build(node, path, file, positions, loader, budget):
    import yaml

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
            _check_text(key, key_node, file)
            if key in out:
                raise ManifestError(f"duplicate key {key!r}", _loc(file, key_node.start_mark),
                                    _dotted(path))
            positions.keys[path + (key,)] = _loc(file, key_node.start_mark)
            out[key] = _build(value_node, path + (key,), file, positions, loader, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), file, positions, loader, budget) for i, item in enumerate(node.value)]
    try:
        value = loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise ManifestError(f"invalid value: {e}", _loc(file, node.start_mark)) from None
    except (ValueError, TypeError, OverflowError, KeyError) as e:  # `!!int 1.0.0`, `!!float abc`, `!!bool maybe`
        tag = node.tag.rsplit(":", 1)[-1]
        raise ManifestError(f"{node.value!r} is not a valid {tag} ({type(e).__name__}); write a plain value",
                            _loc(file, node.start_mark)) from None
    return _checked_scalar(value, node, file)


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted = _dotted
