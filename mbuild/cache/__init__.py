"""A shared build cache on object storage: action cache + content-addressed blobs, host validation records.

``ac/<key>.json`` maps a task digest (the digests mbuild's tasks already compute, the
digests of their input files, and the platform) to the files the task wrote; ``cas/<sha256>``
holds each file's bytes. Every restored blob is hashed again before it is used. CI writes
(``read-write``); developers only read (``read-only``, the default). See docs/ci.md.
"""
from mbuild.cache.config import CacheConfig, load_cache_config

__all__ = ["CacheConfig", "load_cache_config"]
