"""Action keys and outputs of cached tasks, from the same task dicts doit runs (mbuild/tasks.py).

A key covers what doit itself checks: every ``config_changed`` digest of the task (its manifest
slice, converter and runtime versions, mbuild's code digest), the sha256 of every ``file_dep``,
and the platform, which doit does not need to know but a shared cache does.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from mbuild._io import digest, sha256_file
from mbuild.layout import layout_for

CACHED_STEPS = ("source", "convert", "variant", "check")
KEY_FORMAT = 1
# Files of a target folder that are never a check result: logs and validation records of other hosts.
LOCAL_ONLY = ("-error.log", "host-validation.json")


def platform_tag() -> str:
    """OS, machine and Python: converters can emit different bytes on each. MBUILD_CACHE_PLATFORM overrides it."""
    return os.environ.get("MBUILD_CACHE_PLATFORM") or (
        f"{platform.system()}-{platform.machine()}-py{sys.version_info.major}.{sys.version_info.minor}")


def task_dict(manifest, step: str, target: str | None) -> dict:
    from mbuild import tasks

    if step == "source":
        return tasks.source_task(manifest)
    if step == "convert":  # target is the conversion's path (convert:<model>/<path>)
        from mbuild.conversions import conversions

        runtime, conversion, _, _ = conversions(manifest)[target]
        return tasks.convert_task(manifest, target, runtime, conversion)
    if step == "variant":
        return tasks.variant_task(manifest, target)
    return tasks.check_task(manifest, target)


def task_name(manifest, step: str, target: str | None) -> str:
    return f"{step}:{manifest.name}" + (f"/{target}" if target else "")


def task_key(manifest, step: str, target: str | None) -> str | None:
    """The action key, or None when an input file is missing (doit would not run the task then either)."""
    task = task_dict(manifest, step, target)
    configs = [u.config for u in task.get("uptodate", []) if hasattr(u, "config")]
    files = {}
    for rel in task.get("file_dep", []):
        path = Path(manifest.root) / rel
        if not path.is_file():
            return None
        files[Path(rel).as_posix()] = sha256_file(path)
    return digest({"format": KEY_FORMAT, "task": task_name(manifest, step, target), "config": configs,
                   "files": files, "platform": platform_tag()})


def output_dir(manifest, step: str, target: str | None) -> Path:
    lay = layout_for(manifest)
    if step == "source":
        return lay.source_dir
    if step == "convert":
        return lay.convert_dir(target)
    if step == "variant":
        return lay.variant_dir(target)
    return lay.target_dir(target)


def output_files(manifest, step: str, target: str | None) -> list[Path]:
    """Every file the step wrote: its whole folder (a check: its target folder minus the variant)."""
    folder = output_dir(manifest, step, target)
    if not folder.is_dir():
        return []
    if step != "check":
        return sorted(p for p in folder.rglob("*") if p.is_file())
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(LOCAL_ONLY))
