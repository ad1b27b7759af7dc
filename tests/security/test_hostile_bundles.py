"""Hostile bundles x every reading command: each is refused with one line, none crashes, none is accepted.

Families: path safety, names, bombs, corrupt archives, content, tampered, signatures. Commands:
verify, inspect, select, export play/apple, diff (either side), and extraction. Run in-process
(one error line on stderr, exit status 1-3); a few go through a real subprocess for tracebacks
and memory.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import unicodedata
import zlib

import pytest

from mbuild.bundle.archive import extract_archive, write_archive
from mbuild.bundle.sign import generate_keypair, load_private_key, signature_text
from mbuild.cli import main
from mbuild.errors import BundleError
from tests.security._craft import (
    MODEL,
    Layout,
    Spec,
    base_doc,
    base_entries,
    craft,
    deflated_zeros,
    specs_of,
    sums_for,
    with_listed,
)

GIB = 1 << 30
DIR = (0o040755) << 16
LINK = (0o120777) << 16


def _doc_with(**changes) -> dict:
    doc = base_doc()
    for dotted, value in changes.items():
        target = doc
        *path, last = dotted.split("__")
        for key in path:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[last] = value
    return doc


def _bundle_json(raw: bytes) -> list[Spec]:
    """The base bundle with bundle.json replaced by ``raw`` (listed in SHA256SUMS, so only content rules refuse it)."""
    entries = {k: v for k, v in base_entries().items() if k != "SHA256SUMS"}
    entries["bundle.json"] = raw
    entries["SHA256SUMS"] = sums_for(entries)
    return specs_of(entries)


def _replace(specs: list[Spec], name: str, **fields) -> list[Spec]:
    out = []
    for s in specs:
        if s.name == name:
            s = Spec(**{**s.__dict__, **fields})
        out.append(s)
    return out


def _deep(depth: int) -> bytes:
    return b'{"format": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"


BASE = base_entries()
B = specs_of(BASE)
NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
BOMB = {}  # filled once by the fixture: raw deflate of 1 GiB of zeros


def _bomb_honest():
    return with_listed(BASE, {}) + [Spec("variants/cpu/bomb.bin", b"", method=8, payload=BOMB["data"], usize=GIB,
                                         crc=BOMB["crc"])]


def _bomb_lying():
    return [*B[:2], Spec("variants/cpu/model.onnx", MODEL, method=8, payload=BOMB["data"])]


# (family, id, archive bytes, words the refusal contains)
CASES = [
    # -- path safety
    ("path", "absolute", lambda: craft(with_listed(BASE, {"/tmp/evil.txt": b"x"})), "absolute path"),
    ("path", "dotdot", lambda: craft(with_listed(BASE, {"../evil.txt": b"x"})), "'..' component"),
    ("path", "nested-dotdot", lambda: craft(with_listed(BASE, {"variants/a/../../../evil.txt": b"x"})), "'..'"),
    ("path", "drive-letter", lambda: craft(with_listed(BASE, {"C:/evil.txt": b"x"})), "absolute path"),
    ("path", "backslash", lambda: craft(with_listed(BASE, {"variants\\..\\..\\evil.txt": b"x"})), "backslash"),
    ("path", "nul", lambda: craft(with_listed(BASE, {"variants/a\0.txt": b"x"})), "NUL"),
    ("path", "symlink", lambda: craft([*B, Spec("variants/cpu/link", b"/etc/passwd", external=LINK)]),
     "link or special file"),
    ("path", "device", lambda: craft([*B, Spec("variants/cpu/dev", b"", external=(0o020644) << 16)]),
     "link or special file"),
    ("path", "dir-with-data", lambda: craft([*B, Spec("variants/evil/", b"model bytes", external=DIR)]),
     "directory entry"),
    ("path", "file-under-file", lambda: craft(with_listed(BASE, {"variants/cpu/model.onnx/x": b"x"})),
     "needs a folder"),
    # -- names that alias on extraction
    ("names", "case", lambda: craft(with_listed(BASE, {"variants/cpu/MODEL.onnx": b"evil"})), "same file"),
    ("names", "nfc-nfd", lambda: craft(with_listed(BASE, {f"variants/{NFC}": b"a", f"variants/{NFD}": b"b"}),
                                       ), "NFC"),
    ("names", "trailing-dot", lambda: craft(with_listed(BASE, {"variants/cpu/model.onnx.": b"evil"})),
     "dot or space"),
    ("names", "trailing-space", lambda: craft(with_listed(BASE, {"variants/cpu/model.onnx ": b"evil"})),
     "dot or space"),
    ("names", "dot-slash", lambda: craft(with_listed(BASE, {"./variants/cpu/model.onnx": b"evil"})), "'.'"),
    ("names", "double-slash", lambda: craft(with_listed(BASE, {"variants//cpu/x": b"evil"})), "empty component"),
    ("names", "reserved", lambda: craft(with_listed(BASE, {"variants/con.onnx": b"evil"})), "reserved"),
    ("names", "duplicate", lambda: craft([*B, Spec("bundle.json", b'{"name": "other"}')]), "appears twice"),
    ("names", "not-utf8", lambda: craft([*B, Spec(b"variants/\xff\xfe.onnx", b"x")]), "not UTF-8"),
    ("names", "no-utf8-flag", lambda: craft([*B, Spec(f"variants/{NFC}.onnx".encode(), b"x")]), "UTF-8 flag"),
    ("names", "local-name-differs", lambda: craft(_replace(B, "variants/cpu/model.onnx",
                                                           local_name=b"variants/cpu/evil.onnx")), "disagree"),
    # -- bombs and sizes
    ("bombs", "deflate-1gib", lambda: craft(_bomb_honest()), "decompression bomb"),
    ("bombs", "deflate-lying-size", lambda: craft(_bomb_lying()), "decompression bomb"),
    ("bombs", "60000-entries", lambda: craft([Spec(f"f{i}", b"") for i in range(60_000)]), "at most"),
    ("bombs", "count-understated", lambda: craft([*B, *(Spec(f"f{i}", b"") for i in range(5000))],
                                                 Layout(count=3)), "central directory"),
    ("bombs", "stored-size-lies", lambda: craft(_replace(B, "variants/cpu/model.onnx", usize=GIB, csize=GIB)),
     "data runs into"),
    ("bombs", "huge-bundle-json", lambda: craft(_bundle_json(b" " * (17 << 20) + BASE["bundle.json"])), "at most"),
    # -- corrupt archives
    ("corrupt", "not-zip", lambda: b"hello, not a zip", "not a bundle"),
    ("corrupt", "empty", lambda: b"", "not a bundle"),
    ("corrupt", "truncated", lambda: craft(B)[:-40], "end-of-central-directory"),
    ("corrupt", "method-12-bzip2", lambda: craft(_replace(B, "bundle.json", method=12)), "compression method 12"),
    ("corrupt", "method-14-lzma", lambda: craft(_replace(B, "variants/cpu/model.onnx", method=14)), "method 14"),
    ("corrupt", "method-99-aes", lambda: craft(_replace(B, "SHA256SUMS", method=99)), "method 99"),
    ("corrupt", "encrypted", lambda: craft(_replace(B, "bundle.json", flags=0x1)), "encrypted"),
    ("corrupt", "data-descriptor", lambda: craft(_replace(B, "bundle.json", flags=0x8)), "data descriptor"),
    ("corrupt", "unknown-flag", lambda: craft(_replace(B, "bundle.json", flags=0x10)), "unknown flags"),
    ("corrupt", "local-size-differs", lambda: craft(_replace(B, "variants/cpu/model.onnx", local_usize=1)),
     "disagree"),
    ("corrupt", "crc", lambda: craft(_replace(B, "variants/cpu/model.onnx", crc=1234)), "CRC"),
    ("corrupt", "bad-deflate", lambda: craft(_replace(B, "bundle.json", method=8, payload=b"\xff" * 40)), "corrupt"),
    ("corrupt", "zip64-marker", lambda: craft(B, Layout(extra_eocd={"cd_offset": 0xFFFFFFFF})), "zip64"),
    ("corrupt", "cd-offset-off", lambda: craft(B, Layout(extra_eocd={"cd_offset": 7})), "central directory"),
    ("corrupt", "eocd-comment", lambda: craft(B, Layout(eocd_comment=b"hello")), "end-of-central-directory"),
    ("corrupt", "entry-comment", lambda: craft(_replace(B, "bundle.json", comment=b"evil")), "comment"),
    ("corrupt", "foreign-extra", lambda: craft(_replace(B, "bundle.json", extra=b"\x75\x70\x05\x00\x01evil")),
     "extra field"),
    ("corrupt", "padding-with-data", lambda: craft(_replace(B, "bundle.json", extra=b"\x35\xd9\x04\x00evil")),
     "padding holds data"),
    ("corrupt", "bytes-before-eocd", lambda: craft(B, Layout(between_cd_and_eocd=b"junk")), "central directory"),
    # -- content of bundle.json
    ("content", "deep-nesting", lambda: craft(_bundle_json(_deep(100_000))), "nested deeper"),
    ("content", "5000-digit-int", lambda: craft(_bundle_json(json.dumps(_doc_with(format=1)).encode()
                                                               .replace(b'"format": 1', b'"format": ' + b"9" * 5000))),
     "digits"),
    ("content", "escapes-unterminated", lambda: craft(_bundle_json(b'{"a": "' + b'\\"' * 200_000 + b"}")),
     "not valid JSON"),
    ("content", "not-utf8", lambda: craft(_bundle_json(b'{"name": "\xff"}')), "not UTF-8"),
    ("content", "bom", lambda: craft(_bundle_json(b"\xef\xbb\xbf" + BASE["bundle.json"])), "byte-order mark"),
    ("content", "duplicate-key", lambda: craft(_bundle_json(BASE["bundle.json"][:-1] + b', "name": "evil"}')),
     "appears twice"),
    ("content", "nan", lambda: craft(_bundle_json(BASE["bundle.json"].replace(b'"cosine": 1.0', b'"cosine": NaN'))),
     "NaN"),
    ("content", "overflow-float", lambda: craft(_bundle_json(BASE["bundle.json"].replace(b'"cosine": 1.0',
                                                                                        b'"cosine": 1e999'))),
     "overflows"),
    ("content", "array", lambda: craft(_bundle_json(b"[1, 2]")), "JSON object"),
    ("content", "not-json", lambda: craft(_bundle_json(b"{nope")), "not valid JSON"),
    ("content", "schema", lambda: craft(_bundle_json(json.dumps(_doc_with(variants="none")).encode())),
     "bundle.json variants"),
    ("content", "xml-comment-injection", lambda: craft(_bundle_json(json.dumps(_doc_with(
        name="x--><evil/><!--")).encode())), "does not match"),
    ("content", "variant-id-injection", lambda: craft(_bundle_json(json.dumps(_doc_with(
        variants__0__id="a\"><script>")).encode())), "does not match"),
    ("content", "missing-variant-file", lambda: craft(_bundle_json(json.dumps(_doc_with(
        variants__0__file="variants/cpu/other.onnx")).encode())), "disagree"),
    ("content", "wrong-variant-sha", lambda: craft(_bundle_json(json.dumps(_doc_with(
        variants__0__sha256="1" * 64, variants__0__files=[{"path": "variants/cpu/model.onnx",
                                                           "sha256": "1" * 64}])).encode())), "sha256"),
    ("content", "missing-source", lambda: craft(_bundle_json(json.dumps({k: v for k, v in base_doc().items()
                                                                         if k != "source"}).encode())), "source"),
    # -- tampered
    ("tampered", "entry-changed", lambda: craft(_replace(B, "variants/cpu/model.onnx", data=MODEL[:-1] + b"X")),
     "SHA256SUMS checksum"),
    ("tampered", "unlisted-entry", lambda: craft([*B, Spec("variants/cpu/extra.onnx", b"evil")]),
     "not listed in SHA256SUMS"),
    ("tampered", "extra-SIGNATURE", lambda: craft([*B, Spec("SIGNATURE", b"whatever")]), "not listed"),
    ("tampered", "sums-lists-missing", lambda: craft(_replace(B, "SHA256SUMS", data=BASE["SHA256SUMS"]
                                                              + f"{'0' * 64}  gone.bin\n".encode())), "not in the"),
    ("tampered", "sums-malformed", lambda: craft(_replace(B, "SHA256SUMS", data=b"nonsense\n")), "malformed"),
    ("tampered", "sums-lists-itself", lambda: craft(_replace(B, "SHA256SUMS", data=BASE["SHA256SUMS"]
                                                             + f"{'0' * 64}  SHA256SUMS\n".encode())), "SHA256SUMS"),
    ("tampered", "prepended", lambda: craft(B, Layout(prepend=b"MZ" + bytes(100))), "before its local header"),
    ("tampered", "prepended-unshifted", lambda: craft(B, Layout(prepend=bytes(64), shift_offsets=False)),
     "central directory"),
    ("tampered", "appended", lambda: craft(B, Layout(append=b"trailing data")), "appended"),
    ("tampered", "hidden-local-entry", lambda: craft([B[0], Spec("variants/cpu/model.onnx", b"evil", hidden=True),
                                                      *B[1:]]), "hidden entry"),
    ("tampered", "gap-between", lambda: craft(_replace(B, "variants/cpu/model.onnx", gap_before=b"junk")),
     "unaccounted bytes"),
]


@pytest.fixture(scope="module", autouse=True)
def _bomb():
    data = deflated_zeros(GIB)
    crc = 0
    block = bytes(1 << 20)
    for _ in range(GIB >> 20):
        crc = zlib.crc32(block, crc)
    BOMB.update(data=data, crc=crc)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "tiny-1.0.0.mbundle"
    write_archive(path, base_entries())
    return path


def _commands(path, good, out, key=None):
    trust = ["--key", str(key)] if key else []
    return {
        "verify": ["verify", path, *trust],
        "inspect": ["inspect", path, *trust],
        "select": ["select", path, "--platform", "linux", *trust],
        "export-play": ["export", "play", path, "-o", out, *trust],
        "export-apple": ["export", "apple", path, *trust],
        "diff-old": ["diff", path, good, *trust],
        "diff-new": ["diff", good, path, *trust],
    }


def test_the_good_bundle_passes_every_command(good, tmp_path, capsys):
    for name, argv in _commands(str(good), str(good), str(tmp_path / "play.xml")).items():
        assert main([str(a) for a in argv]) == 0, (name, capsys.readouterr().err)
    extract_archive(good, tmp_path / "x")
    assert (tmp_path / "x" / "variants/cpu/model.onnx").read_bytes() == MODEL


def _refused_everywhere(path, good, tmp_path, capsys, words, key=None, extract=True):
    out = tmp_path / "out.xml"
    for name, argv in _commands(str(path), str(good), str(out), key).items():
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
        assert code != 0 and len(errors) == 1, (name, code, captured.out[-300:], captured.err[-500:])
        assert words in errors[0], (name, errors[0])
        assert "ok:" not in captured.out and not out.exists(), name
    if not extract:  # extraction checks integrity only; trust is the caller's (documented in docs/release.md)
        return
    dest = tmp_path / "extract"
    dest.mkdir(exist_ok=True)
    with pytest.raises(BundleError):
        extract_archive(path, dest)
    assert not any(dest.iterdir()), "extraction left files behind"


@pytest.mark.parametrize("family,case_id,make,words", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_hostile_bundle_is_refused_by_every_reader(family, case_id, make, words, good, tmp_path, capsys):
    path = tmp_path / f"{case_id}.mbundle"
    path.write_bytes(make())
    _refused_everywhere(path, good, tmp_path, capsys, words)


# -- signatures: the same commands, with the project's key pinned -------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(folder / "release.pem")
    other, other_public = generate_keypair(folder / "other.pem")
    return load_private_key(private), public, load_private_key(other), other_public


def _signed(entries, key, sig=None) -> list[Spec]:
    return specs_of({**entries, "SIGNATURE.ed25519": sig if sig is not None else
                     signature_text(entries["SHA256SUMS"], key)})


SIGNATURE_CASES = [
    ("unsigned", lambda k: specs_of(BASE), "not signed"),
    ("other-key", lambda k: _signed(BASE, k[2]), "does not verify"),
    ("no-key-id", lambda k: _signed(BASE, k[0], signature_text(BASE["SHA256SUMS"], k[0]).replace(
        b"key-id: ", b"x-id: ")), "malformed"),
    ("claims-trusted-key-id", lambda k: _signed(BASE, k[2], signature_text(BASE["SHA256SUMS"], k[2]).replace(
        signature_text(BASE["SHA256SUMS"], k[2]).split(b"\n")[2], signature_text(BASE["SHA256SUMS"], k[0])
        .split(b"\n")[2])), "does not verify"),
    ("bad-base64", lambda k: _signed(BASE, k[0], signature_text(BASE["SHA256SUMS"], k[0])[:-10] + b"!!!!!!!==\n"),
     "malformed"),
    ("extra-line", lambda k: _signed(BASE, k[0], signature_text(BASE["SHA256SUMS"], k[0]) + b"note: hi\n"),
     "malformed"),
    ("extra-SIGNATURE-entry", lambda k: [*_signed(BASE, k[0]), Spec("SIGNATURE", b"x")], "not listed"),
    ("hidden-local-entry", lambda k: (lambda s: [s[0], Spec("variants/cpu/model.onnx", b"evil", hidden=True),
                                                 *s[1:]])(_signed(BASE, k[0])), "hidden entry"),
    ("prepended", lambda k: (_signed(BASE, k[0]), Layout(prepend=b"PK\x03\x04" + bytes(60))),
     "before its local header"),
    ("appended", lambda k: (_signed(BASE, k[0]), Layout(append=b"PK\x03\x04evil")), "appended"),
    ("dir-entry-with-data", lambda k: [*_signed(BASE, k[0]), Spec("variants/evil/", b"model", external=DIR)],
     "directory entry"),
    ("model-swapped-sums-rewritten", lambda k: (lambda e: _signed(e, k[0], signature_text(BASE["SHA256SUMS"], k[0])))(
        base_entries(base_doc(MODEL[::-1]), MODEL[::-1])), "does not verify"),
]


@pytest.mark.parametrize("case_id,make,words", SIGNATURE_CASES, ids=[c[0] for c in SIGNATURE_CASES])
def test_signed_bundle_tampering_is_refused_with_the_pinned_key(case_id, make, words, keys, tmp_path, capsys):
    made = make(keys)
    specs, layout = made if isinstance(made, tuple) else (made, None)
    path = tmp_path / f"{case_id}.mbundle"
    path.write_bytes(craft(specs, layout))
    good = tmp_path / "good.mbundle"
    good.write_bytes(craft(_signed(BASE, keys[0])))
    assert main(["verify", str(good), "--key", str(keys[1])]) == 0
    assert "signature valid: key sha256:" in capsys.readouterr().out
    _refused_everywhere(path, good, tmp_path, capsys, words, key=keys[1],
                        extract=words not in ("not signed", "does not verify"))


def test_project_pins_keys_in_pyproject(keys, tmp_path, capsys, monkeypatch):
    """[tool.mbuild] trusted_keys decides: without --key, the pinned key checks; the shown id is the verified one."""
    _, public, _, other_public = keys
    signed, other, unsigned = (tmp_path / n for n in ("signed.mbundle", "other.mbundle", "unsigned.mbundle"))
    signed.write_bytes(craft(_signed(BASE, keys[0])))
    other.write_bytes(craft(_signed(BASE, keys[2])))
    unsigned.write_bytes(craft(specs_of(BASE)))
    monkeypatch.chdir(tmp_path)
    # no pyproject: a signature is not checked and no key id is shown
    assert main(["verify", str(other)]) == 0
    out = capsys.readouterr().out
    assert "NOT checked" in out and "sha256:" not in out
    (tmp_path / "pyproject.toml").write_text(f'[tool.mbuild]\ntrusted_keys = ["{public}"]\n')
    assert main(["verify", str(signed)]) == 0
    from mbuild.bundle.sign import key_id, load_public_key

    assert f"signature valid: key {key_id(load_public_key(public))}" in capsys.readouterr().out
    for command in (["verify", str(other)], ["inspect", str(other)], ["select", str(other), "--platform", "linux"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "does not verify with the given key" in err or "does not verify" in err, err
        assert key_id(load_public_key(other_public)) not in err  # the signer's claim is not repeated as a fact
    assert main(["verify", str(unsigned)]) == 0 and "unsigned" in capsys.readouterr().out
    assert main(["verify", str(unsigned), "--require-signed"]) == 1
    assert "not signed" in capsys.readouterr().err
    (tmp_path / "pyproject.toml").write_text(f'[tool.mbuild]\ntrusted_keys = ["{public}"]\nrequire_signed = true\n')
    assert main(["inspect", str(unsigned)]) == 1 and "not signed" in capsys.readouterr().err
    releases = tmp_path / "dist" / "releases"
    releases.mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[tool.mbuild]\n")
    (releases / "tiny-1.0.0.mbundle").write_bytes(unsigned.read_bytes())
    assert main(["verify", "dist/releases/tiny-1.0.0.mbundle"]) == 1  # dist/releases/ requires a signature
    assert "trusted signature is required" in capsys.readouterr().err
    (tmp_path / "pyproject.toml").write_text('[tool.mbuild]\ntrusted_keys = ["missing.pub.pem"]\n')
    assert main(["verify", str(signed)]) == 2 and "not found" in capsys.readouterr().err


# -- limits: memory, time, disk -------------------------------------------------------------------------

# The child's own peak RSS: VmHWM belongs to its address space, while getrusage's ru_maxrss survives exec and
# so reports the (large) pytest process that forked it when the whole suite runs in one process.
_PEAK_KB = ("def _peak_kb():\n    for line in open('/proc/self/status'):\n        if line.startswith('VmHWM:'):\n"
            "            return int(line.split()[1])\n    import resource\n"
            "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n")


def _rss_run(code: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.parametrize("kind", ["honest", "lying"])
def test_1gib_bomb_is_refused_in_bounded_memory_and_nothing_is_written(kind, tmp_path):
    bomb = tmp_path / "bomb.mbundle"
    bomb.write_bytes(craft(_bomb_honest() if kind == "honest" else _bomb_lying()))
    assert bomb.stat().st_size < 4 << 20
    dest = tmp_path / "out"
    dest.mkdir()
    code = (f"import sys\n{_PEAK_KB}from mbuild.cli import main\nfrom mbuild.bundle.archive import extract_archive\n"
            f"from mbuild.errors import BundleError\nrc = main(['verify', {str(bomb)!r}])\n"
            f"try:\n    extract_archive({str(bomb)!r}, {str(dest)!r})\nexcept BundleError as e:\n"
            f"    print('refused:', e, file=sys.stderr)\n"
            f"assert rc == 1\nprint(_peak_kb())")
    peak_kb, err = _rss_run(code)
    assert "decompression bomb" in err and "refused:" in err, err
    assert peak_kb < 300 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
    assert not any(dest.rglob("*"))


def test_60000_entries_refused_fast_and_9000_read_in_linear_time(tmp_path):
    many = tmp_path / "many.mbundle"
    many.write_bytes(craft([Spec(f"f{i}", b"") for i in range(60_000)]))
    t = time.perf_counter()
    with pytest.raises(BundleError, match="at most 10000"):
        from mbuild.bundle.verify import verify_bundle

        verify_bundle(many)
    assert time.perf_counter() - t < 2
    extra = {f"variants/cpu/data/{i:05d}.bin": i.to_bytes(4, "little") for i in range(9_000)}
    ok = tmp_path / "ok.mbundle"
    ok.write_bytes(craft(with_listed(BASE, extra)))
    t = time.perf_counter()
    verify_bundle(ok)
    assert time.perf_counter() - t < 2
    from mbuild.bundle.reader import load_json

    t = time.perf_counter()  # a regex over JSON strings went quadratic on this; the parser alone is linear
    with pytest.raises(BundleError, match="not valid JSON"):
        load_json(b'{"a": "' + b'\\"' * 2_000_000 + b"}", "bundle.json")
    assert time.perf_counter() - t < 2


def test_cli_never_prints_a_traceback_on_hostile_bundles(tmp_path):
    """Through the real console entry point: one error line, exit 1, no traceback."""
    for case_id in ("method-12-bzip2", "deep-nesting", "5000-digit-int"):
        make = next(c[2] for c in CASES if c[1] == case_id)
        path = tmp_path / f"{case_id}.mbundle"
        path.write_bytes(make())
        for argv in (["verify", str(path)], ["inspect", str(path)], ["export", "play", str(path)]):
            proc = subprocess.run([sys.executable, "-m", "mbuild", *argv], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, (case_id, argv, proc.stderr)
            assert [line for line in proc.stderr.splitlines() if line.startswith("error:")], proc.stderr

