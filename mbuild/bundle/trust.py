"""Pinned trust: which public keys a project accepts, and the verdict every reading command applies.

A valid signature proves only that *some* key signed the bundle; the key id inside the bundle is
the signer's own claim. Trust comes from outside the bundle: the project names its public keys
in ``pyproject.toml``::

    [tool.mbuild]
    trusted_keys = ["keys/release.pub.pem"]   # PEM files; one file may hold several keys
    require_signed = true                      # optional: every read needs a trusted signature

Reading ``dist/releases/`` and running ``mbuild release`` always require a trusted signature.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mbuild.errors import BundleError, MbuildError

PYPROJECT = "pyproject.toml"
_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.S)


class TrustConfigError(MbuildError):
    """The project's trust settings cannot be read (bad TOML, a missing key file)."""

    exit_code = 2


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys to accept and where they were named (for messages)."""

    keys: tuple = ()
    source: str = ""
    require_signed: bool = False


@dataclass(frozen=True)
class Verdict:
    """A bundle that passed verification: its bundle.json and one line saying what was proven."""

    doc: dict
    key_id: str | None
    note: str


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start``."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        candidate = folder / PYPROJECT
        if candidate.is_file():
            return candidate
    return None


def project_trust(root: Path | None = None) -> TrustedKeys:
    """The keys named by ``[tool.mbuild]`` in the nearest pyproject.toml (none when there is no such entry)."""
    import tomllib

    pyproject = find_pyproject(root or Path.cwd())
    if pyproject is None:
        return TrustedKeys()
    try:
        config = tomllib.loads(pyproject.read_text()).get("tool", {}).get("mbuild", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise TrustConfigError(f"{pyproject}: cannot read [tool.mbuild] ({e})") from None
    names = config.get("trusted_keys", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TrustConfigError(f"{pyproject}: [tool.mbuild] trusted_keys must be a list of PEM file paths")
    require = config.get("require_signed", False)
    if not isinstance(require, bool):
        raise TrustConfigError(f"{pyproject}: [tool.mbuild] require_signed must be true or false")
    keys = []
    for name in names:
        keys += _keys_in(pyproject.parent / name, f"{os.path.relpath(pyproject)} [tool.mbuild] trusted_keys")
    return TrustedKeys(tuple(keys), f"{os.path.relpath(pyproject)} [tool.mbuild] trusted_keys", require)


def key_file_trust(path: str | Path) -> TrustedKeys:
    """The keys in one PEM file given on the command line (``--key PUB.pem``); implies a required signature."""
    return TrustedKeys(tuple(_keys_in(Path(path), "--key")), f"--key {path}", True)


def _keys_in(path: Path, where: str) -> list:
    from mbuild.bundle.sign import SigningKeyError, load_public_key

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TrustConfigError(f"{where}: key file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TrustConfigError(f"{where}: cannot read key file {path} ({e})") from None
    blocks = _PEM_BLOCK.findall(text)
    if not blocks:
        if "PRIVATE KEY" in text:
            raise SigningKeyError(f"public key {path} is not a PEM public key (it is a private key; pass the "
                                  ".pub.pem file)")
        raise TrustConfigError(f"{where}: {path} holds no PEM public key")
    return [load_public_key(block) for block in blocks]


def is_release_path(path: Path) -> bool:
    """A bundle under ``dist/releases/``: what shipped, so it must carry a trusted signature."""
    parent = Path(path).resolve().parent
    return parent.name == "releases" and parent.parent.name == "dist"


def verify_trusted(path: Path, *, key: str | Path | None = None, require_signed: bool | None = None,
                   trusted: TrustedKeys | None = None) -> Verdict:
    """Verify a bundle and judge its signature against pinned keys; BundleError on any failure.

    ``key`` (a public key file) replaces the project's keys. A signature is required when
    ``require_signed`` says so, else when the key is given, the project asks for it, or the
    bundle sits in dist/releases/. A signed bundle is refused when keys are pinned and none of
    them made the signature; it passes with "not checked" only when no key is pinned at all.
    """
    from mbuild.bundle.sign import check_signature
    from mbuild.bundle.verify import check_bundle

    path = Path(path)
    checked = check_bundle(path)
    if trusted is None:
        trusted = key_file_trust(key) if key else project_trust()
    required = require_signed if require_signed is not None else (trusted.require_signed or is_release_path(path))
    base = f"{checked.doc['name']} {checked.doc['version']}, {len(checked.doc['variants'])} variant(s), " \
           "archive, checksums and schema valid"
    if checked.signature is None:
        if required:
            raise BundleError(f"{path}: the bundle is not signed, and a trusted signature is required"
                              + (" (dist/releases/)" if is_release_path(path) else ""))
        return Verdict(checked.doc, None, f"{base}; unsigned (integrity only: nothing says who made it)")
    if not trusted.keys:
        if required:
            raise BundleError(f"{path}: a trusted signature is required but no key is pinned: add "
                              "[tool.mbuild] trusted_keys = [\"keys/release.pub.pem\"] to pyproject.toml, "
                              "or pass --key PUB.pem")
        return Verdict(checked.doc, None, f"{base}; signed, but the signature was NOT checked: no trusted key is "
                                          "pinned ([tool.mbuild] trusted_keys in pyproject.toml, or --key PUB.pem)")
    key_id = check_signature(checked, list(trusted.keys))
    return Verdict(checked.doc, key_id, f"{base}, signature valid: key {key_id} (trusted by {trusted.source})")
