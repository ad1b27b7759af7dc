"""Ed25519 signatures for bundles, so a release pipeline can trust a bundle it did not build.

The signature covers the bytes of ``SHA256SUMS``, which lists the sha256 of every other
entry; ``mbuild verify`` checks those entries, so one signature covers the whole bundle.
It is stored as the entry ``SIGNATURE.ed25519`` (a few ``key: value`` lines) and the
archive is rewritten with :func:`mbuild.bundle.archive.write_archive`: Ed25519 is
deterministic, so the same key and the same content give the same bytes.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from mbuild.bundle.archive import write_archive
from mbuild.errors import BundleError, MbuildError

SIGNATURE_ENTRY = "SIGNATURE.ed25519"
SIGNED_ENTRY = "SHA256SUMS"
KEY_ENV = "MBUILD_SIGNING_KEY"
_UNSIGNED = {"SIGNATURE", SIGNATURE_ENTRY}


class SigningKeyError(MbuildError):
    """A key file is missing, unreadable or not an Ed25519 key."""

    exit_code = 2


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        from mbuild.errors import MissingDependencyError

        raise MissingDependencyError("cryptography", "release", "Signing bundles") from None
    return serialization, ed25519


def _read_pem(source: str | Path, what: str) -> bytes:
    """PEM bytes from a file path, or the PEM text itself (e.g. a CI secret in MBUILD_SIGNING_KEY)."""
    text = str(source)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    path = Path(text).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{what} {path}: file not found") from None
    except OSError as e:
        raise SigningKeyError(f"{what} {path}: cannot read it ({e.strerror})") from None


def load_private_key(source: str | Path):
    """An Ed25519 private key from a PEM file (PKCS#8, unencrypted) or PEM text."""
    serialization, ed25519 = _crypto()
    data = _read_pem(source, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        hint = "" if b"PRIVATE KEY" in data else " (is it the public key? signing needs the private one)"
        raise SigningKeyError(f"signing key {_label(source)} is not an unencrypted PEM private key{hint}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {_label(source)} is a {type(key).__name__}, not Ed25519; "
                              "create one with: mbuild keygen release.pem")
    return key


def load_public_key(source: str | Path):
    """An Ed25519 public key from a PEM file (SubjectPublicKeyInfo) or PEM text."""
    serialization, ed25519 = _crypto()
    data = _read_pem(source, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except Exception as e:  # noqa: BLE001 - cryptography raises ValueError, TypeError or UnsupportedAlgorithm
        hint = " (it is a private key; pass the .pub.pem file)" if b"PRIVATE KEY" in data else ""
        raise SigningKeyError(f"public key {_label(source)} is not a PEM public key{hint}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningKeyError(f"public key {_label(source)} is a {type(key).__name__}, not Ed25519")
    return key


def _label(source) -> str:
    return "(PEM text)" if str(source).lstrip().startswith("-----BEGIN") else str(source)


def key_id(public_key) -> str:
    """Short fingerprint of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: Path, public_path: Path | None = None) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair (private key mode 0600); refuses to overwrite an existing key."""
    serialization, ed25519 = _crypto()
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path else private_path.with_name(private_path.stem + ".pub.pem")
    for p in (private_path, public_path):
        if p.exists():
            raise SigningKeyError(f"{p} already exists; refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def read_entries(bundle_path: Path) -> dict[str, bytes]:
    """Every entry of a verified bundle (strict reader: names, indexes and checksums already checked)."""
    from mbuild.bundle.reader import MAX_ENTRY_BYTES, BundleReader
    from mbuild.bundle.verify import check_bundle

    check_bundle(Path(bundle_path))
    with BundleReader(Path(bundle_path)) as reader:
        return {name: reader.read(name, MAX_ENTRY_BYTES) for name in reader.names}


def signature_text(sums: bytes, private_key) -> bytes:
    sig = private_key.sign(sums)
    return (f"algorithm: ed25519\nsigned: {SIGNED_ENTRY}\nkey-id: {key_id(private_key.public_key())}\n"
            f"signature: {base64.b64encode(sig).decode()}\n").encode()


def signed_entries(entries: dict[str, bytes], private_key) -> dict[str, bytes]:
    """The entries with any old signature dropped and a fresh one over SHA256SUMS added."""
    if SIGNED_ENTRY not in entries:
        raise BundleError(f"the bundle has no {SIGNED_ENTRY}; only bundles made by 'mbuild build' can be signed")
    out = {k: v for k, v in entries.items() if k not in _UNSIGNED}
    out[SIGNATURE_ENTRY] = signature_text(entries[SIGNED_ENTRY], private_key)
    return out


def sign_bundle(bundle_path: Path, key_source: str | Path, out_path: Path | None = None) -> str:
    """Sign ``bundle_path`` (in place unless ``out_path``); return the key id. Deterministic."""
    from mbuild._io import atomic_path

    key = load_private_key(key_source)
    entries = signed_entries(read_entries(Path(bundle_path)), key)
    with atomic_path(Path(out_path or bundle_path)) as tmp:
        write_archive(tmp, entries)
    return key_id(key.public_key())


_SIGNATURE_TEXT = re.compile(r"algorithm: ed25519\nsigned: SHA256SUMS\nkey-id: (sha256:[0-9a-f]{16})\n"
                             r"signature: ([A-Za-z0-9+/]{86}==)\n")


def parse_signature(text: bytes, where: str) -> dict[str, str]:
    """The signature entry exactly as :func:`signature_text` writes it; anything else (extra lines too) is refused."""
    m = _SIGNATURE_TEXT.fullmatch(text.decode("ascii", "replace"))
    if not m:
        raise BundleError(f"{where}: {SIGNATURE_ENTRY} is malformed (expected the four lines algorithm: ed25519, "
                          f"signed: {SIGNED_ENTRY}, key-id: sha256:<16 hex>, signature: <base64 of 64 bytes>)")
    return {"algorithm": "ed25519", "signed": SIGNED_ENTRY, "key-id": m.group(1), "signature": m.group(2)}


def check_signature(checked, public_keys) -> str:
    """The id of the one key among ``public_keys`` that signed a checked bundle; BundleError otherwise.

    ``checked`` is a :class:`mbuild.bundle.verify.CheckedBundle`: every entry already matches its
    SHA256SUMS, so a valid signature over SHA256SUMS covers the whole bundle. The key id the entry
    claims is only compared after the signature verified; it is never what decides.
    """
    from cryptography.exceptions import InvalidSignature

    path, fields = str(checked.path), checked.signature
    if fields is None:
        raise BundleError(f"{path}: the bundle is not signed (no {SIGNATURE_ENTRY} entry); "
                          "sign it with: mbuild release MANIFEST --key PRIVATE.pem")
    sig = base64.b64decode(fields["signature"], validate=True)
    for public in public_keys:
        try:
            public.verify(sig, checked.sums)
        except InvalidSignature:
            continue
        verified = key_id(public)
        if fields["key-id"] != verified:
            raise BundleError(f"{path}: {SIGNATURE_ENTRY} names key {fields['key-id']} but was made with {verified}")
        return verified
    if len(public_keys) == 1:
        raise BundleError(f"{path}: the signature does not verify with the given key {key_id(public_keys[0])}: "
                          f"{SHA256SUMS_HINT}")
    raise BundleError(f"{path}: the signature does not verify with any of the {len(public_keys)} trusted keys: "
                      f"{SHA256SUMS_HINT}")


SHA256SUMS_HINT = (f"another key signed it, or the bundle or its signature was altered after signing (the signature "
                   f"does not match {SIGNED_ENTRY})")


def signature_info(bundle_path: Path) -> dict[str, str] | None:
    """The parsed, unchecked signature entry of a verified bundle, or None when it is unsigned."""
    from mbuild.bundle.verify import check_bundle

    return check_bundle(Path(bundle_path)).signature


def verify_signature(bundle_path: Path, pubkey_path) -> str:
    """Verify the bundle (archive, checksums, schema) and its signature with one public key; return the key id."""
    from mbuild.bundle.verify import check_bundle

    public = load_public_key(pubkey_path)
    return check_signature(check_bundle(Path(bundle_path)), [public])
