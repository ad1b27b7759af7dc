"""The cache's commands for ``mbuild``: ``cache stats|prune|verify``, ``check --runtime``, ``build --shard``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mbuild.errors import MbuildError


def add_cache_commands(sub) -> None:
    c = sub.add_parser("cache", help="the shared build cache: stats, prune, verify (docs/ci.md)")
    csub = c.add_subparsers(dest="cache_command", required=True)
    st = csub.add_parser("stats", help="entries, blobs and bytes in the cache; hits and misses of this checkout")
    st.add_argument("--json", action="store_true")
    pr = csub.add_parser("prune", help="drop entries older than N days and the blobs nothing names (read-write)")
    pr.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    pr.add_argument("--dry-run", action="store_true")
    ve = csub.add_parser("verify", help="re-hash every blob and check every entry's blobs exist")
    ve.add_argument("--delete", action="store_true", help="remove corrupt blobs and the entries using them (read-write)")
    c.set_defaults(func=cmd_cache)
    ch = sub.add_parser("check", help="run the checks of one runtime on this host and record them for the bundle")
    ch.add_argument("--runtime", required=True, help="e.g. coreml on a macOS host")
    ch.add_argument("--target", action="append", help="only this target (repeatable)")
    ch.add_argument("--manifests", help="comma-separated manifest paths (default: manifests/*.yaml)")
    ch.add_argument("--build-platform", help="the platform tag the builders pushed under, e.g. Linux-x86_64-py3.11")
    ch.set_defaults(func=cmd_check)


def _store():
    from mbuild.cache.config import load_cache_config
    from mbuild.cache.store import open_store

    config = load_cache_config(Path.cwd())
    if config is None:
        raise MbuildError("no cache configured: set url in [tool.mbuild.cache] (pyproject.toml), [cache] "
                          "(mbuild.toml) or MBUILD_CACHE_URL")
    return open_store(config)


def cmd_cache(args) -> int:
    from mbuild.cache import maintenance

    store = _store()
    if args.cache_command == "stats":
        stats = maintenance.cache_stats(store, Path.cwd())
        if args.json:
            print(json.dumps(stats, indent=2))
        else:
            print(f"{stats['url']} ({stats['mode']}): {stats['entries']} entries, {stats['blobs']} blobs, "
                  f"{stats['blob_bytes']:,} bytes, {stats['records']} host validation records")
            print("this checkout: " + (", ".join(f"{k} {v}" for k, v in sorted(stats["this_checkout"].items()))
                                       or "no cache use recorded"))
        return 0
    if args.cache_command == "prune":
        if not store.config.writable and not args.dry_run:
            raise MbuildError(f"the cache {store.config.url} is read-only here; prune with MBUILD_CACHE_MODE="
                              "read-write (CI), or add --dry-run")
        r = maintenance.prune_cache(store, args.older_than, args.dry_run)
        print(("would remove" if r["dry_run"] else "removed") + f" {r['entries_removed']} entries and "
              f"{r['blobs_removed']} blobs ({r['bytes_freed']:,} bytes); {r['entries_kept']} entries kept")
        return 0
    problems = maintenance.verify_cache(store, delete=args.delete)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {store.config.url}" + (" (removed)" if args.delete else
                                                                     "; `mbuild cache verify --delete` on CI removes them"))
        return 1
    print(f"ok: every blob in {store.config.url} matches its digest and every entry's blobs exist")
    return 0


def cmd_check(args) -> int:
    from mbuild.cache.host_check import check_runtime_here

    return check_runtime_here(Path.cwd(), args.runtime, args.target, args.manifests, args.build_platform)


def shard_argv(root: Path, shard: str) -> list[str]:
    """The doit task names of ``--shard I/N`` (printed with their estimated cost)."""
    import os

    from mbuild.cache.shard import parse_shard, shard_tasks
    from mbuild.tasks import load_project

    index, count = parse_shard(shard)
    project = load_project(root, os.environ.get("MBUILD_MANIFESTS"))
    names, costs = shard_tasks(project, index, count)
    shown = ", ".join(f"{u} ({c:.1f} s)" if c is not None else f"{u} (not timed yet)" for u, c in costs.items())
    print(f"shard {index}/{count}: {shown or 'no targets'}")
    return names
