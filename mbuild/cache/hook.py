"""The cache's two calls in a task's action: :func:`before_step` (restore) and :func:`after_step` (push).

Without a configured cache both return at once and import nothing. A cache that cannot be
reached, or a blob that fails its digest, never fails the build: the step runs locally and
the line printed says why.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from mbuild.cache.keys import CACHED_STEPS, output_dir, output_files, task_key, task_name
from mbuild.cache.store import project_store

_started: dict[str, float] = {}


def before_step(manifest, step: str, rest: list[str]) -> bool:
    """True when the step's outputs were restored from the cache (the step must not run)."""
    _started["t"] = time.monotonic()
    if step == "bundle":
        from mbuild.cache.records import merge_host_records

        merge_host_records(manifest)
        return False
    store = project_store(manifest)
    if store is None or step not in CACHED_STEPS:
        return False
    target = rest[0] if rest else None
    name = task_name(manifest, step, target)
    try:
        key = task_key(manifest, step, target)
        entry = store.get_entry(key) if key else None
    except Exception as e:  # noqa: BLE001 - an unreachable cache means a local build, not a failed one
        print(f"warning: cache: {name}: cannot read {store.config.url} ({type(e).__name__}: {e}); building locally")
        return False
    if entry is not None and not entry.get("files"):
        entry = None  # an entry that restores nothing cannot stand for a step's outputs
    if entry is None:
        log_event(manifest, name, "miss", key=key)
        if os.environ.get("MBUILD_CACHE_ON_MISS") == "fail":  # a bundle job must not convert anything itself
            from mbuild.errors import BuildError

            raise BuildError(f"{name} is not in the cache {store.config.url} (key {str(key)[:12]}) and "
                             "MBUILD_CACHE_ON_MISS=fail: did every shard job succeed and push?")
        return False
    from mbuild.cache.store import CorruptBlobError

    try:
        size = restore_entry(store, manifest, step, target, entry)
    except CorruptBlobError as e:
        print(f"warning: cache: {name}: refused: {e}; building it locally")
        log_event(manifest, name, "refused", key=key, reason=str(e))
        _started["refused"] = True
        return False
    except Exception as e:  # noqa: BLE001
        print(f"warning: cache: {name}: restore failed ({type(e).__name__}: {e}); building locally")
        log_event(manifest, name, "error", key=key, reason=str(e))
        return False
    print(f"{name}: restored from the cache ({len(entry['files'])} files, {size:,} bytes, key {key[:12]}, "
          f"built in {entry.get('seconds', 0):.1f} s on {entry.get('host', '?')})")
    log_event(manifest, name, "restored", key=key, seconds=time.monotonic() - _started["t"])
    return True


def after_step(manifest, step: str, rest: list[str]) -> None:
    """Record the step's duration and, in read-write mode, push its outputs and action entry."""
    store = project_store(manifest)
    if store is None or step not in CACHED_STEPS:
        return
    target = rest[0] if rest else None
    name = task_name(manifest, step, target)
    seconds = time.monotonic() - _started.get("t", time.monotonic())
    _save_duration(manifest, name, seconds)
    log_event(manifest, name, "ran", seconds=seconds)
    if not store.config.writable:
        return
    try:
        key = task_key(manifest, step, target)
        if key is None:
            return
        if not output_files(manifest, step, target):
            return
        entry = push_outputs(store, manifest, step, target, key, seconds, replace=bool(_started.get("refused")))
        store.put_duration(name, seconds)
    except Exception as e:  # noqa: BLE001 - a failed push leaves the cache without this task, nothing worse
        print(f"warning: cache: {name}: push to {store.config.url} failed ({type(e).__name__}: {e})")
        return
    print(f"{name}: pushed to the cache ({len(entry['files'])} files, key {key[:12]})")
    log_event(manifest, name, "pushed", key=key)


def push_outputs(store, manifest, step, target, key, seconds, replace=False) -> dict:
    """Blobs first, the action entry last: a reader never sees an entry whose blobs are missing."""
    import platform

    root = Path(manifest.root)
    files = {}
    for path in output_files(manifest, step, target):
        data = path.read_bytes()
        files[path.relative_to(root).as_posix()] = {"sha256": store.put_blob(data, replace=replace),
                                                    "size": len(data)}
    from mbuild.cache.store import FORMAT

    entry = {"format": FORMAT, "key": key, "task": task_name(manifest, step, target), "files": files,
             "seconds": round(seconds, 3), "created": time.time(), "host": platform.node() or "?"}
    store.put_entry(entry)
    return entry


def restore_entry(store, manifest, step, target, entry) -> int:
    """Fetch and check every blob into a staging folder, then replace the step's outputs with it."""
    root = Path(manifest.root).resolve()
    folder = output_dir(manifest, step, target)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore.", dir=folder.parent))
    try:
        placed, size = [], 0
        for rel, meta in sorted(entry["files"].items()):
            dest = (root / rel).resolve()
            if not dest.is_relative_to(folder.resolve()):
                raise _corrupt(f"entry {entry['key'][:12]} names {rel}, outside {folder.relative_to(root)}")
            data = store.get_blob(meta["sha256"])
            tmp = staging / str(len(placed))
            tmp.write_bytes(data)
            placed.append((tmp, dest))
            size += len(data)
        for old in output_files(manifest, step, target):
            old.unlink()
        for tmp, dest in placed:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        return size
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _corrupt(message: str):
    from mbuild.cache.store import CorruptBlobError

    return CorruptBlobError(message)


def log_event(manifest, task: str, event: str, **fields) -> None:
    """One line per cache decision in .mbuild/cache-log.jsonl (what `mbuild cache stats` counts)."""
    path = Path(manifest.root) / ".mbuild" / "cache-log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps({"time": time.time(), "task": task, "event": event, **fields}) + "\n")


def _save_duration(manifest, task: str, seconds: float) -> None:
    from mbuild._io import write_json_atomic

    path = Path(manifest.root) / ".mbuild" / "durations.json"
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        known = {}
    known[task] = round(seconds, 3)
    write_json_atomic(path, known)
