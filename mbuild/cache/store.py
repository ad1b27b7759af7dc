"""The cache's storage: an fsspec filesystem holding ``ac/``, ``cas/``, ``records/`` and ``durations/``.

Blobs are named by the sha256 of their bytes, so readers can check them and writers never
overwrite a good one. fsspec (and s3fs for ``s3://``) is imported only when a cache is configured.
"""
from __future__ import annotations

import hashlib
import json
import re

from mbuild.cache.config import CacheConfig
from mbuild.errors import MbuildError

FORMAT = "mbuild-cache/1"


class CorruptBlobError(MbuildError):
    """A blob whose bytes do not hash to its name: refused, never used."""


class ReadOnlyCacheError(MbuildError):
    """A write was asked of a cache opened read-only."""

    exit_code = 2


class CacheStore:
    """One cache location. Writes raise :class:`ReadOnlyCacheError` unless the mode is ``read-write``."""

    def __init__(self, config: CacheConfig):
        from fsspec.core import url_to_fs

        self.config = config
        options = dict(config.storage_options)
        if config.url.startswith(("file://", "/")) or "://" not in config.url:
            options.setdefault("auto_mkdir", True)
        self.fs, self.base = url_to_fs(config.url, **options)
        self.base = self.base.rstrip("/")

    # paths -----------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def entry_path(self, key: str) -> str:
        return self._p("ac", key[:2], f"{key}.json")

    def blob_path(self, sha: str) -> str:
        return self._p("cas", sha[:2], sha)

    def record_path(self, artifact_sha: str, target: str) -> str:
        return self._p("records", artifact_sha, f"{_safe(target)}.json")

    def duration_path(self, task: str) -> str:
        return self._p("durations", f"{_safe(task)}.json")

    # reads -----------------------------------------------------------------
    def _read(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def _read_json(self, path: str) -> dict | None:
        data = self._read(path)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def get_entry(self, key: str) -> dict | None:
        entry = self._read_json(self.entry_path(key))
        if entry is None or entry.get("format") != FORMAT or entry.get("key") != key:
            return None
        return entry

    def get_blob(self, sha: str) -> bytes:
        """The blob's bytes, checked against its name; raises CorruptBlobError or FileNotFoundError."""
        data = self.fs.cat_file(self.blob_path(sha))
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise CorruptBlobError(f"blob {sha[:16]}... in {self.config.url} hashes to {actual[:16]}... "
                                   f"({len(data)} bytes): corrupt or tampered with")
        return data

    def get_record(self, artifact_sha: str, target: str) -> dict | None:
        return self._read_json(self.record_path(artifact_sha, target))

    def get_duration(self, task: str) -> float | None:
        value = self._read_json(self.duration_path(task))
        seconds = (value or {}).get("seconds")
        return float(seconds) if isinstance(seconds, (int, float)) else None

    def has_blob(self, sha: str) -> bool:
        return self.fs.exists(self.blob_path(sha))

    def list(self, prefix: str) -> dict[str, dict]:
        """Every object under ``prefix`` (path -> fsspec info), empty when there is none."""
        self.fs.invalidate_cache()
        try:
            return self.fs.find(self._p(prefix), detail=True)
        except FileNotFoundError:
            return {}

    # writes ----------------------------------------------------------------
    def _write(self, path: str, data: bytes) -> None:
        if not self.config.writable:
            raise ReadOnlyCacheError(f"the cache {self.config.url} is read-only here ({self.config.source}); "
                                     "set mode = \"read-write\" or MBUILD_CACHE_MODE=read-write on CI")
        self.fs.pipe_file(path, data)

    def put_blob(self, data: bytes, replace: bool = False) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if replace or not self.has_blob(sha):
            self._write(self.blob_path(sha), data)
        return sha

    def put_entry(self, entry: dict) -> None:
        self._write(self.entry_path(entry["key"]), _dumps(entry))

    def put_record(self, record: dict) -> str:
        path = self.record_path(record["artifact_sha256"], record["target"])
        self._write(path, _dumps(record))
        return path

    def put_duration(self, task: str, seconds: float) -> None:
        self._write(self.duration_path(task), _dumps({"task": task, "seconds": round(seconds, 3)}))

    def remove(self, path: str) -> None:
        if not self.config.writable:
            raise ReadOnlyCacheError(f"the cache {self.config.url} is read-only here; removing needs read-write")
        self.fs.rm_file(path)


def _dumps(obj: dict) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def open_store(config: CacheConfig) -> CacheStore:
    return CacheStore(config)


def project_store(manifest):
    """The store the manifest's project configures (.mbuild/cache.yaml or MBUILD_CACHE_URL), or None."""
    from pathlib import Path

    from mbuild.cache.config import load_cache_config

    config = load_cache_config(Path(manifest.root))
    return None if config is None else open_store(config)
