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
from pathlib import Path

from mbuild.bundle.archive import open_archive, write_archive
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
    """Every file entry of a bundle (names already checked for zip-slip by open_archive)."""
    with open_archive(bundle_path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


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


def parse_signature(text: bytes, where: str) -> dict[str, str]:
    fields = {}
    for line in text.decode("utf-8", "replace").splitlines():
        k, sep, v = line.partition(": ")
        if sep:
            fields[k.strip()] = v.strip()
    if fields.get("algorithm") != "ed25519" or fields.get("signed") != SIGNED_ENTRY or "signature" not in fields:
        raise BundleError(f"{where}: {SIGNATURE_ENTRY} is malformed (expected algorithm ed25519 over {SIGNED_ENTRY})")
    return fields


def signature_info(bundle_path: Path) -> dict[str, str] | None:
    """The parsed signature entry of a bundle, or None when it is unsigned (nothing is checked here)."""
    with open_archive(Path(bundle_path)) as zf:
        if SIGNATURE_ENTRY not in zf.namelist():
            return None
        return parse_signature(zf.read(SIGNATURE_ENTRY), str(bundle_path))


def verify_signature(bundle_path: Path, pubkey_path: Path) -> str:
    """Check the bundle's signature over SHA256SUMS with the given public key; return the key id.

    Run after :func:`mbuild.bundle.verify.verify_bundle`, which checks every entry against
    SHA256SUMS; together they prove no entry changed since signing. Raises BundleError naming
    the cause (unsigned, malformed, another key, or altered content).
    """
    public = load_public_key(pubkey_path)
    from cryptography.exceptions import InvalidSignature

    path = str(bundle_path)
    with open_archive(Path(bundle_path)) as zf:
        names = zf.namelist()
        if SIGNATURE_ENTRY not in names:
            raise BundleError(f"{path}: the bundle is not signed (no {SIGNATURE_ENTRY} entry); "
                              "sign it with: mbuild release MANIFEST --key PRIVATE.pem")
        if SIGNED_ENTRY not in names:
            raise BundleError(f"{path}: missing {SIGNED_ENTRY}, which the signature covers")
        try:
            fields = parse_signature(zf.read(SIGNATURE_ENTRY), path)
            sums = zf.read(SIGNED_ENTRY)
        except Exception as e:  # zipfile.BadZipFile: CRC mismatch
            if isinstance(e, BundleError):
                raise
            raise BundleError(f"{path}: the signature entry or {SIGNED_ENTRY} was altered ({e})") from None
    try:
        sig = base64.b64decode(fields["signature"], validate=True)
    except ValueError:
        raise BundleError(f"{path}: {SIGNATURE_ENTRY} holds a signature that is not valid base64") from None
    expected_id = key_id(public)
    try:
        public.verify(sig, sums)
    except InvalidSignature:
        if fields.get("key-id") and fields["key-id"] != expected_id:
            raise BundleError(f"{path}: signed with key {fields['key-id']}, "
                              f"not with the given key {expected_id}") from None
        raise BundleError(f"{path}: the signature does not match {SIGNED_ENTRY} (the bundle or its signature "
                          f"was altered after signing)") from None
    if fields.get("key-id") not in (None, expected_id):
        raise BundleError(f"{path}: {SIGNATURE_ENTRY} names key {fields['key-id']} but was made with {expected_id}")
    return expected_id
