"""``mbuild check --runtime R``: run the checks of one runtime on this host and publish their records.

The Core ML checks need macOS: a macOS job gets the variants the Linux jobs built (from the
cache, or their ``build/`` folder as a CI artifact), runs the same check mbuild runs everywhere,
and writes a record bound to the artifact's sha256 (build/<name>/targets/<t>/host-validation.json,
and the cache's records/ in read-write mode). The bundle job merges it (see records.py).
"""
from __future__ import annotations

import os
from pathlib import Path

from mbuild.errors import BuildError, MbuildError, ToleranceError


def check_runtime_here(root: Path, runtime_name: str, targets: list[str] | None = None,
                       manifests: str | None = None, build_platform: str | None = None) -> int:
    from mbuild.tasks import load_project

    if build_platform:
        os.environ["MBUILD_CACHE_PLATFORM"] = build_platform  # restore what the builders' platform pushed
    project = load_project(Path(root), manifests)
    if project.errors:
        raise MbuildError(f"{len(project.errors)} manifest(s) failed to load (see above)")
    chosen = [(m, n) for m in project.manifests for n, t in m.targets.items()
              if t.runtime == runtime_name and (not targets or n in targets)]
    if not chosen:
        raise MbuildError(f"no target with runtime {runtime_name!r}" + (f" among {', '.join(targets)}" if targets
                          else "") + " in the project's manifests; see `doit list --all check`")
    worst = 0
    for manifest, target in chosen:
        worst = max(worst, _check_one(manifest, target))
    return worst


def _check_one(manifest, target: str) -> int:
    from mbuild._io import read_json, write_json_atomic
    from mbuild.cache.records import make_record, record_path
    from mbuild.cache.store import project_store
    from mbuild.layout import layout_for
    from mbuild.steps import run_check
    from mbuild.targets import get_runtime
    from mbuild.tasks import conversions_of

    _ensure_outputs(manifest, "source", None)
    for path in conversions_of(manifest, manifest.targets[target]):  # the variant task's inputs: restore them first
        _ensure_outputs(manifest, "convert", path)
    _ensure_outputs(manifest, "variant", target)
    try:
        run_check(manifest, target)
    except ToleranceError as e:
        print(f"error: {e}")
    report = read_json(layout_for(manifest).report_json(target))
    runtime = get_runtime(manifest.targets[target].runtime)
    record = make_record(manifest, target, report, runtime)
    status = record["validation"]["status"]
    if status not in ("passed", "failed"):
        raise BuildError(f"check:{manifest.name}/{target}: {status} on this host too "
                         f"({record['validation'].get('reason')}); no record written - run it where {runtime.name} runs")
    local = record_path(manifest, target)
    write_json_atomic(local, record)
    where = [str(local.relative_to(manifest.root))]
    store = project_store(manifest)
    if store is not None and store.config.writable:
        where.append(store.put_record(record))
    host = record["host"]
    print(f"check:{manifest.name}/{target}: {status} on {host['os']} {host['os_version']} {host['machine']}; record for "
          f"artifact {record['artifact_sha256'][:16]}... written to {', '.join(where)}")
    return 0 if status == "passed" else 1


def _ensure_outputs(manifest, step: str, unit: str | None) -> None:
    """The step's outputs as built elsewhere: already here (a CI artifact), or restored from the cache.

    ``unit`` is the target of a variant, the conversion path of a convert step, None for the source.
    """
    from mbuild.cache.hook import restore_entry
    from mbuild.cache.keys import output_dir, output_files, task_key, task_name
    from mbuild.cache.store import project_store

    if output_files(manifest, step, unit):
        return
    name = task_name(manifest, step, unit)
    store = project_store(manifest)
    key = task_key(manifest, step, unit)
    entry = store.get_entry(key) if store is not None and key else None
    if entry is None:
        where = "no cache is configured" if store is None else f"not in the cache{' (key ' + key[:12] + ')' if key else ''}"
        raise BuildError(f"{name} is neither built here ({os.path.relpath(output_dir(manifest, step, unit))}) and "
                         f"{where}; run the build jobs first, download their build/ folder, or pass --build-platform "
                         "of the builders")
    restore_entry(store, manifest, step, unit, entry)
    print(f"{name}: restored from the cache (key {key[:12]})")
