"""Hand-crafted hostile archives: `mbuild verify` and extraction refuse absolute paths, '..', duplicates, links."""
from __future__ import annotations

import hashlib
import stat
import warnings
import zipfile

import pytest

from mbuild.bundle.archive import extract_archive
from mbuild.bundle.verify import verify_bundle
from mbuild.errors import BundleError
from tests.conftest import run_mbuild

REGULAR = (stat.S_IFREG | 0o644) << 16


def _info(name: str, mode: int = REGULAR) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = mode
    return info


def _zip(path, entries: list[tuple[str, bytes, int]]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we write on purpose
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(_info("bundle.json"), b"{}")
            for name, data, mode in entries:
                zf.writestr(_info(name, mode), data)
    return path


# (id, entries, words the refusal must contain)
CASES = [
    ("absolute", [("/tmp/evil.txt", b"x", REGULAR)], "absolute path"),
    ("dotdot", [("../evil.txt", b"x", REGULAR)], "'..' component"),
    ("nested-dotdot", [("variants/a/../../../evil.txt", b"x", REGULAR)], "'..' component"),
    ("drive-letter", [("C:/evil.txt", b"x", REGULAR)], "absolute path"),
    ("backslash", [("variants\\..\\..\\evil.txt", b"x", REGULAR)], "backslash"),
    ("duplicate", [("bundle.json", b'{"name": "other"}', REGULAR)], "appears twice"),
    ("symlink", [("variants/cpu/model.onnx", b"/etc/passwd", (stat.S_IFLNK | 0o777) << 16)], "link or special file"),
    ("device", [("variants/cpu/dev", b"", (stat.S_IFCHR | 0o644) << 16)], "link or special file"),
]


@pytest.mark.parametrize("case_id,entries,words", CASES, ids=[c[0] for c in CASES])
def test_verify_and_extract_refuse(tmp_path, case_id, entries, words):
    bad = _zip(tmp_path / f"{case_id}.mbundle", entries)
    with pytest.raises(BundleError, match=words):
        verify_bundle(bad)
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(BundleError, match=words):
        extract_archive(bad, dest)
    assert list((tmp_path / "out").rglob("*")) == [dest] and not (tmp_path / "evil.txt").exists()
    proc = run_mbuild("verify", str(bad)) if case_id in ("dotdot", "symlink", "duplicate") else None
    if proc is not None:
        assert proc.returncode == 1 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def _header_name_mismatch(path):
    """Central directory says 'safe/ok.txt'; the local header (what naive extractors use) says '../evil.txt'."""
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                   for name, data in (("bundle.json", b"{}"), ("safe/ok.txt", b"payload")))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(_info("SHA256SUMS"), sums.encode())
        zf.writestr(_info("bundle.json"), b"{}")
        zf.writestr(_info("safe/ok.txt"), b"payload")
    with zipfile.ZipFile(path) as zf:
        at = zf.getinfo("safe/ok.txt").header_offset + 30  # the name in the local header
    data = bytearray(path.read_bytes())
    data[at:at + 11] = b"../evil.txt"
    path.write_bytes(bytes(data))
    return path


def test_local_header_name_mismatch_is_refused_by_verify(tmp_path):
    bad = _header_name_mismatch(tmp_path / "mismatch.mbundle")
    with pytest.raises(BundleError, match="safe/ok.txt"):
        verify_bundle(bad)
    proc = run_mbuild("verify", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_local_header_name_mismatch_extraction(tmp_path):
    bad = _header_name_mismatch(tmp_path / "mismatch.mbundle")
    dest = tmp_path / "out"
    dest.mkdir()
    try:
        with pytest.raises(BundleError):
            extract_archive(bad, dest)
    finally:
        assert not (tmp_path / "evil.txt").exists()
