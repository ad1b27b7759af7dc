"""The one strict reader of ``.mbundle`` archives; every command that reads a bundle goes through it.

Why strict: a zip has two indexes - the local headers (what streaming unzips such as Java's
``ZipInputStream`` read) and the central directory (what most other readers use). An archive
whose indexes disagree, or that holds bytes neither accounts for, shows different content to
different readers, so a check made by one reader proves nothing about what another loads.
This reader accepts only the layout mbuild's writer produces - local header, data, next local
header, ..., central directory, end record, every byte accounted for and both indexes equal -
and names that extract to one distinct file on every file system. It reads in bounded memory
(entries are streamed with caps) and in time linear in the archive size.
"""
from __future__ import annotations

import json
import re
import stat
import struct
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mbuild.errors import BundleError

MAX_ENTRIES = 10_000
MAX_NAME_BYTES = 512
MAX_ENTRY_BYTES = 4 * 2**30 - 1  # zip32; mbuild writes no zip64
MAX_TOTAL_BYTES = 16 * 2**30
MAX_DEFLATE_RATIO = 100  # mbuild stores entries; a foreign deflated entry may expand this much at most
MAX_JSON_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 40
CHUNK = 1 << 20

_EOCD = struct.Struct("<4s4H2LH")
_CDIR = struct.Struct("<4s6H3L5H2L")
_LOCAL = struct.Struct("<4s5H3L2H")
_ALIGN_EXTRA_ID = 0xD935  # zipalign's padding record, the only extra field mbuild writes
_UTF8_FLAG = 0x800
_DEFLATE_OPTION_FLAGS = 0x6  # compression-level hints, meaningless to a reader
_FLAG_NAMES = {0x1: "encrypted", 0x8: "data descriptor", 0x40: "strong encryption", 0x2000: "masked local headers"}
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


@dataclass(frozen=True)
class Entry:
    """One archive member as both indexes describe it (they were checked to agree)."""

    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    data_offset: int


def name_problem(name: str) -> str | None:
    """Why an entry name cannot be extracted safely and unambiguously, or None.

    Covers zip-slip (absolute paths, '..', drive letters, backslashes) and names that some
    file systems change on the way to disk ('.', empty or trailing-dot/space components,
    reserved Windows names, control characters, non-NFC Unicode).
    """
    if not name:
        return "empty name"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"name longer than {MAX_NAME_BYTES} bytes"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if "\\" in name:
        return "backslash in the name"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "NUL or control character in the name"
    if name.endswith("/"):
        return "directory entry (mbuild bundles hold files only)"
    parts = name.split("/")
    if ".." in parts:
        return "'..' component"
    if "." in parts or "" in parts:
        return "'.' or empty component (e.g. './' or '//')"
    if ":" in name:
        return "':' in the name (a drive letter or an NTFS stream)"
    for part in parts:
        if part[-1] in ". ":
            return f"component {part!r} ends with a dot or space (Windows drops it)"
        if part.split(".")[0].lower() in _RESERVED:
            return f"component {part!r} is a reserved device name on Windows"
    if unicodedata.normalize("NFC", name) != name:
        return "not in Unicode NFC form (macOS and others normalize it to another name)"
    return None


def alias_key(name: str) -> str:
    """The name as case-insensitive, normalizing file systems see it: two names with one key collide."""
    return unicodedata.normalize("NFKC", name).casefold()


class BundleReader:
    """A bundle opened and checked: :attr:`entries` in archive order, :meth:`chunks` to stream one.

    Use as a context manager. Every refusal is a :class:`BundleError` naming the file and the place.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.where = str(path)
        try:
            self._fh = open(self.path, "rb")
        except FileNotFoundError:
            raise BundleError(f"{path}: no such bundle") from None
        except OSError as e:
            raise BundleError(f"{path}: cannot read it ({e.strerror})") from None
        try:
            self.entries = self._index()
        except BaseException:
            self._fh.close()
            raise
        self._by_name = {e.name: e for e in self.entries}

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def _refuse(self, what: str) -> BundleError:
        return BundleError(f"{self.where}: {what}")

    # -- the two indexes -----------------------------------------------------------------------------
    def _index(self) -> list[Entry]:
        fh = self._fh
        size = fh.seek(0, 2)
        if size < _EOCD.size:
            raise self._refuse("not a bundle (too short to be a zip archive)")
        fh.seek(size - _EOCD.size)
        sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = _EOCD.unpack(fh.read(_EOCD.size))
        if sig != b"PK\x05\x06":
            raise self._refuse("does not end with a zip end-of-central-directory record "
                               "(not a zip archive, a comment, or bytes appended after it)")
        if disk or cd_disk or n_disk != n_total:
            raise self._refuse("multi-disk zip archives are not supported")
        if n_total == 0xFFFF or cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
            raise self._refuse("zip64 archives are not supported (mbuild writes none)")
        if n_total > MAX_ENTRIES:
            raise self._refuse(f"{n_total} entries; a bundle holds at most {MAX_ENTRIES}")
        if cd_size > n_total * (_CDIR.size + MAX_NAME_BYTES + 2 * 65535):
            raise self._refuse("central directory larger than its entries can be")
        eocd_at = size - _EOCD.size
        if cd_offset + cd_size != eocd_at:
            raise self._refuse("bytes between the central directory and its end record, or a wrong "
                               "directory size/offset")
        fh.seek(cd_offset)
        cd = fh.read(cd_size)
        entries: list[Entry] = []
        seen: dict[str, str] = {}
        files, dirs = set(), {}
        pos, expected_local, total = 0, 0, 0
        for _ in range(n_total):
            if pos + _CDIR.size > len(cd):
                raise self._refuse("central directory is truncated")
            (sig, _made, needed, flags, method, mtime, mdate, crc, csize, usize, n_len, e_len, c_len, start,
             _internal, external, local) = _CDIR.unpack_from(cd, pos)
            if sig != b"PK\x01\x02":
                raise self._refuse(f"central directory record {len(entries) + 1} is corrupt")
            end = pos + _CDIR.size + n_len + e_len + c_len
            if end > len(cd):
                raise self._refuse("central directory is truncated")
            raw_name = cd[pos + _CDIR.size:pos + _CDIR.size + n_len]
            extra = cd[pos + _CDIR.size + n_len:pos + _CDIR.size + n_len + e_len]
            pos = end
            name = self._decode_name(raw_name, flags)
            label = f"entry {name!r}"
            if c_len:
                raise self._refuse(f"{label} carries a comment (unsigned data)")
            if start:
                raise self._refuse(f"{label} starts on another disk")
            self._check_flags(label, flags, method)
            self._check_sizes(label, method, csize, usize)
            self._check_extra(label, extra)
            kind = stat.S_IFMT(external >> 16)
            if kind and kind != stat.S_IFREG:
                raise self._refuse(f"{label} is a link or special file" if kind != stat.S_IFDIR
                                   else f"{label} is a directory entry (mbuild bundles hold files only)")
            problem = name_problem(name)
            if problem:
                raise self._refuse(f"{label} is unsafe: {problem}")
            key = alias_key(name)
            if key in seen:
                same = seen[key] == name
                raise self._refuse(f"{label} appears twice" if same else
                                   f"{label} and {seen[key]!r} name the same file on case-insensitive or "
                                   "normalizing file systems")
            seen[key] = name
            files.add(key)
            parts = key.split("/")
            for i in range(1, len(parts)):
                dirs.setdefault("/".join(parts[:i]), name)
            if local > expected_local:
                raise self._refuse(f"{label}: {local - expected_local} unaccounted bytes before its local header "
                                   "(prepended data, a hidden entry, or a forged offset)")
            if local < expected_local:
                raise self._refuse(f"{label}: its local header overlaps the previous entry (a forged offset)")
            data_offset = self._check_local(label, local, raw_name, (needed, flags, method, mtime, mdate, crc,
                                                                      csize, usize))
            if data_offset + csize > cd_offset:
                raise self._refuse(f"{label}: its data runs into the central directory")
            expected_local = data_offset + csize
            total += usize
            if total > MAX_TOTAL_BYTES:
                raise self._refuse(f"entries add up to more than {MAX_TOTAL_BYTES} bytes")
            entries.append(Entry(name, method, crc, csize, usize, data_offset))
        if pos != len(cd):
            raise self._refuse("central directory holds more records than its end record counts")
        if expected_local != cd_offset:
            raise self._refuse(f"{cd_offset - expected_local} unaccounted bytes before the central directory "
                               "(a hidden entry or appended data)")
        clash = files & dirs.keys()
        if clash:
            key = sorted(clash)[0]
            raise self._refuse(f"entry {dirs[key]!r} needs a folder where the file {seen[key]!r} is")
        return entries

    def _decode_name(self, raw: bytes, flags: int) -> str:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._refuse(f"entry name {raw[:80]!r} is not UTF-8") from None
        if not name.isascii() and not flags & _UTF8_FLAG:
            raise self._refuse(f"entry {name!r}: a non-ASCII name without the UTF-8 flag (readers decode it "
                               "differently)")
        return name

    def _check_flags(self, label: str, flags: int, method: int) -> None:
        for bit, what in _FLAG_NAMES.items():
            if flags & bit:
                raise self._refuse(f"{label} uses {what} (flag 0x{bit:x}), which bundles may not")
        allowed = _UTF8_FLAG | (_DEFLATE_OPTION_FLAGS if method == 8 else 0)
        if flags & ~allowed:
            raise self._refuse(f"{label} has unknown flags 0x{flags & ~allowed:x}")
        if method not in (0, 8):
            raise self._refuse(f"{label} uses compression method {method}; bundles use 0 (stored) or 8 (deflate)")

    def _check_sizes(self, label: str, method: int, csize: int, usize: int) -> None:
        if usize > MAX_ENTRY_BYTES:
            raise self._refuse(f"{label} declares {usize} bytes, more than the limit")
        if method == 0 and csize != usize:
            raise self._refuse(f"{label} is stored but declares {csize} stored and {usize} real bytes")
        if method == 8 and usize > MAX_DEFLATE_RATIO * csize + 4096:
            raise self._refuse(f"{label} would expand {usize // max(csize, 1)}x ({csize} -> {usize} bytes); "
                               f"more than {MAX_DEFLATE_RATIO}x is refused as a decompression bomb")

    def _check_extra(self, label: str, extra: bytes) -> None:
        """Only zipalign padding (all zero bytes): any other extra field is data no checksum covers."""
        pos = 0
        while pos < len(extra):
            if pos + 4 > len(extra):
                raise self._refuse(f"{label} has a malformed extra field")
            ident, n = struct.unpack_from("<HH", extra, pos)
            body = extra[pos + 4:pos + 4 + n]
            if len(body) != n:
                raise self._refuse(f"{label} has a malformed extra field")
            if ident != _ALIGN_EXTRA_ID:
                raise self._refuse(f"{label} has an extra field 0x{ident:04x}; bundles carry only alignment padding")
            if body.strip(b"\0"):
                raise self._refuse(f"{label}: its alignment padding holds data")
            pos += 4 + n

    def _check_local(self, label: str, offset: int, raw_name: bytes, central: tuple) -> int:
        fh = self._fh
        fh.seek(offset)
        head = fh.read(_LOCAL.size)
        if len(head) != _LOCAL.size:
            raise self._refuse(f"{label}: its local header is truncated")
        sig, *fields, n_len, e_len = _LOCAL.unpack(head)
        if sig != b"PK\x03\x04":
            raise self._refuse(f"{label}: no local header at the offset the central directory gives")
        name = fh.read(n_len)
        extra = fh.read(e_len)
        if len(extra) != e_len:
            raise self._refuse(f"{label}: its local header is truncated")
        if name != raw_name:
            raise self._refuse(f"{label}: the local header names {name[:80]!r} (the two zip indexes disagree)")
        if tuple(fields) != central:
            raise self._refuse(f"{label}: the local header and the central directory disagree on its "
                               "version, flags, method, time, CRC or sizes")
        self._check_extra(label, extra)
        return offset + _LOCAL.size + n_len + e_len

    # -- content ---------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def entry(self, name: str) -> Entry:
        try:
            return self._by_name[name]
        except KeyError:
            raise self._refuse(f"missing {name}") from None

    def chunks(self, name: str) -> Iterator[bytes]:
        """The entry's bytes in pieces of at most ~1 MiB; never more than it declares; CRC checked at the end."""
        e = self.entry(name)
        label = f"entry {name!r}"
        fh = self._fh
        fh.seek(e.data_offset)
        remaining, produced, crc = e.compressed_size, 0, 0
        inflater = zlib.decompressobj(-15) if e.method == 8 else None
        while remaining:
            block = fh.read(min(CHUNK, remaining))
            if not block:
                raise self._refuse(f"{label} is truncated")
            remaining -= len(block)
            fh_pos = fh.tell()
            pieces = [block] if inflater is None else self._inflate(inflater, block, e.size - produced, label)
            for piece in pieces:
                produced += len(piece)
                crc = zlib.crc32(piece, crc)
                yield piece
            fh.seek(fh_pos)  # a consumer may have read another entry meanwhile
        if inflater is not None and (not inflater.eof or inflater.unused_data):
            raise self._refuse(f"{label}: its compressed data does not end where its size says")
        if produced != e.size:
            raise self._refuse(f"{label} holds {produced} bytes, not the {e.size} it declares")
        if crc != e.crc:
            raise self._refuse(f"{label} does not match its CRC (the archive was altered)")

    def _inflate(self, inflater, block: bytes, room: int, label: str) -> Iterator[bytes]:
        try:
            data = block
            while True:
                out = inflater.decompress(data, CHUNK)
                if len(out) > room:
                    raise self._refuse(f"{label} expands beyond the size it declares (a decompression bomb)")
                room -= len(out)
                if out:
                    yield out
                data = inflater.unconsumed_tail
                if not data and (not out or inflater.eof):
                    return
                if inflater.eof and data:
                    raise self._refuse(f"{label}: its compressed data does not end where its size says")
        except zlib.error as e:
            raise self._refuse(f"{label}: corrupt compressed data ({e})") from None

    def read(self, name: str, limit: int) -> bytes:
        """The whole entry, refused up front when it declares more than ``limit`` bytes."""
        e = self.entry(name)
        if e.size > limit:
            raise self._refuse(f"entry {name!r} declares {e.size} bytes; at most {limit} are read")
        return b"".join(self.chunks(name))


def load_json(data: bytes, where: str) -> dict:
    """JSON an attacker may have written: UTF-8, an object, bounded size, depth and integers, no duplicate keys."""
    if len(data) > MAX_JSON_BYTES:
        raise BundleError(f"{where}: larger than {MAX_JSON_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{where}: not UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):
        raise BundleError(f"{where}: starts with a byte-order mark")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_bounded_int,
                                       parse_float=_finite_float, parse_constant=_no_constant)
    except _JSONLimit as e:
        raise BundleError(f"{where}: {e}") from None
    except RecursionError:
        raise BundleError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise BundleError(f"{where}: not valid JSON ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: must hold a JSON object")
    _check_depth(doc, where)
    return doc


class _JSONLimit(ValueError):
    pass


def _check_depth(doc, where: str) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH (iteratively: readers that recurse must not be the ones to find out).

    The parser itself stops at the interpreter's recursion limit with a RecursionError, caught by the caller.
    """
    level = [doc]
    for _ in range(MAX_JSON_DEPTH):
        level = [child for node in level if isinstance(node, (dict, list))
                 for child in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return
    if any(isinstance(node, (dict, list)) for node in level):
        raise BundleError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _JSONLimit(f"key {k[:80]!r} appears twice in one object (readers disagree on which counts)")
        out[k] = v
    return out


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _JSONLimit(f"an integer with {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    if len(text) > 64:
        raise _JSONLimit(f"a number written with {len(text)} characters")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _JSONLimit(f"the number {text[:40]} overflows")
    return value


def _no_constant(text: str):
    raise _JSONLimit(f"{text} is not JSON")
