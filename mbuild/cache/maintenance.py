"""``mbuild cache stats|prune|verify``: what the cache holds, dropping old entries, finding bad blobs."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path


def _entries(store) -> dict[str, dict]:
    out = {}
    for path in store.list("ac"):
        if path.endswith(".json"):
            try:
                out[path] = json.loads(store.fs.cat_file(path))
            except (ValueError, FileNotFoundError):
                out[path] = {}
    return out


def _blobs(store) -> dict[str, dict]:
    return {path.rsplit("/", 1)[-1]: {"path": path, "size": int(info.get("size") or 0)}
            for path, info in store.list("cas").items()}


def cache_stats(store, root: Path) -> dict:
    entries, blobs = _entries(store), _blobs(store)
    records = [p for p in store.list("records") if p.endswith(".json")]
    events: dict[str, int] = {}
    log = Path(root) / ".mbuild" / "cache-log.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                event = json.loads(line)["event"]
            except (ValueError, KeyError):
                continue
            events[event] = events.get(event, 0) + 1
    return {"url": store.config.url, "mode": store.config.mode, "entries": len(entries), "blobs": len(blobs),
            "blob_bytes": sum(b["size"] for b in blobs.values()), "records": len(records), "this_checkout": events}


def verify_cache(store, delete: bool = False) -> list[str]:
    """Every blob re-hashed and every entry's blobs present; with ``delete``, remove what is bad."""
    problems, bad_blobs = [], set()
    blobs = _blobs(store)
    for sha, blob in sorted(blobs.items()):
        actual = hashlib.sha256(store.fs.cat_file(blob["path"])).hexdigest()
        if actual != sha:
            problems.append(f"{blob['path']}: content hashes to {actual[:16]}...: corrupt")
            bad_blobs.add(sha)
    bad_entries = []
    for path, entry in sorted(_entries(store).items()):
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict):
            problems.append(f"{path}: not a cache entry")
            bad_entries.append(path)
            continue
        lost = [rel for rel, meta in files.items() if meta.get("sha256") not in blobs or meta["sha256"] in bad_blobs]
        if lost:
            problems.append(f"{path} ({entry.get('task')}): {len(lost)} file(s) without a good blob, e.g. {lost[0]}")
            bad_entries.append(path)
    if delete:
        for sha in bad_blobs:
            store.remove(blobs[sha]["path"])
        for path in bad_entries:
            store.remove(path)
    return problems


def prune_cache(store, older_than_days: float, dry_run: bool = False) -> dict:
    """Drop entries created more than N days ago, then every blob no remaining entry names."""
    cutoff = time.time() - older_than_days * 86400
    entries = _entries(store)
    old = [p for p, e in entries.items() if float((e or {}).get("created") or 0) < cutoff]
    kept = {meta.get("sha256") for p, e in entries.items() if p not in old
            for meta in ((e or {}).get("files") or {}).values()}
    blobs = _blobs(store)
    orphans = [b for sha, b in blobs.items() if sha not in kept]
    if not dry_run:
        for path in old:
            store.remove(path)
        for blob in orphans:
            store.remove(blob["path"])
    return {"entries_removed": len(old), "entries_kept": len(entries) - len(old), "blobs_removed": len(orphans),
            "bytes_freed": sum(b["size"] for b in orphans), "dry_run": dry_run}
