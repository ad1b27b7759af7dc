"""Where the shared cache lives and whether this machine may write to it.

Read from ``[tool.mbuild.cache]`` in pyproject.toml or ``[cache]`` in mbuild.toml at the
project root, then overridden by ``MBUILD_CACHE_URL``, ``MBUILD_CACHE_MODE`` and
``MBUILD_CACHE_ENDPOINT_URL`` (CI sets these; ``MBUILD_CACHE=off`` turns the cache off).
"""
from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mbuild.errors import MbuildError

MODES = ("read-only", "read-write")
KEYS = ("url", "mode", "storage_options")


class CacheConfigError(MbuildError):
    """A cache setting that cannot be used (file and key named in the message)."""

    exit_code = 2


@dataclass(frozen=True)
class CacheConfig:
    """A cache URL (any fsspec URL), its mode and the options passed to the fsspec filesystem."""

    url: str
    mode: str = "read-only"
    storage_options: dict = field(default_factory=dict)
    source: str = "defaults"

    @property
    def writable(self) -> bool:
        return self.mode == "read-write"


def load_cache_config(root: Path, environ: dict | None = None) -> CacheConfig | None:
    """The project's cache settings, or None when no cache is configured (or ``MBUILD_CACHE=off``)."""
    env = os.environ if environ is None else environ
    if env.get("MBUILD_CACHE", "").lower() in ("off", "0", "false", "no"):
        return None
    table, source = _file_table(Path(root))
    values = dict(table)
    if env.get("MBUILD_CACHE_URL"):
        values["url"], source = env["MBUILD_CACHE_URL"], "MBUILD_CACHE_URL"
    if env.get("MBUILD_CACHE_MODE"):
        values["mode"] = env["MBUILD_CACHE_MODE"]
    options = dict(values.get("storage_options") or {})
    if env.get("MBUILD_CACHE_ENDPOINT_URL"):
        options["endpoint_url"] = env["MBUILD_CACHE_ENDPOINT_URL"]
    if not values.get("url"):
        return None
    mode = values.get("mode", "read-only")
    if mode not in MODES:
        raise CacheConfigError(f"{source}: cache mode {mode!r} is not one of {', '.join(MODES)} "
                               "(set mode = \"read-only\" or \"read-write\", or MBUILD_CACHE_MODE)")
    return CacheConfig(url=str(values["url"]), mode=mode, storage_options=options, source=source)


def _file_table(root: Path) -> tuple[dict, str]:
    """``[cache]`` of mbuild.toml, else ``[tool.mbuild.cache]`` of pyproject.toml, else nothing."""
    for name, path in (("mbuild.toml", ("cache",)), ("pyproject.toml", ("tool", "mbuild", "cache"))):
        file = root / name
        if not file.is_file():
            continue
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as e:
            raise CacheConfigError(f"{file}: not valid TOML: {e}") from e
        for part in path:
            data = data.get(part) if isinstance(data, dict) else None
        if data is None:
            continue
        where = f"{file}: [{'.'.join(path)}]"
        if not isinstance(data, dict):
            raise CacheConfigError(f"{where} must be a table")
        for key in data:
            if key not in KEYS:
                close = difflib.get_close_matches(key, KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(KEYS)})"
                raise CacheConfigError(f"{where}: unknown key {key!r}{hint}")
        return data, where
    return {}, "defaults"
