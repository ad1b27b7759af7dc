"""Validation records from other hosts: made by ``mbuild check --runtime R``, merged by the bundle step.

A record is bound to the sha256 of the variant's artifact (the same digest bundle.json lists),
names its target and the host that ran it (OS, machine, runtime versions), and carries that
run's validation. The bundle step merges a record only when its digest is the artifact's;
any other record is refused with a warning and the variant keeps its own validation (for
Core ML on Linux: ``skipped``).
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

from mbuild._io import read_json, sha256_tree, write_json_atomic
from mbuild.layout import layout_for

RECORD_FORMAT = "mbuild-host-validation/1"
RECORD_NAME = "host-validation.json"
HOST_KEYS = ("os", "os_version", "machine", "runtime")


def record_path(manifest, target: str) -> Path:
    return layout_for(manifest).target_dir(target) / RECORD_NAME


def artifact_digest(manifest, target: str) -> str | None:
    """sha256 of the built artifact (file or .mlpackage folder), None when the target was not built."""
    lay = layout_for(manifest)
    vj = lay.variant_json(target)
    if not vj.exists():
        return None
    variant = read_json(vj)
    if "artifact" not in variant:
        return None
    artifact = lay.variant_dir(target) / variant["artifact"]
    return sha256_tree(artifact) if artifact.exists() else None


def host_description(runtime) -> dict:
    return {"node": platform.node(), "os": platform.system(), "os_version": platform.release(),
            "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "runtime": runtime.name, "versions": runtime.versions()}


def make_record(manifest, target: str, report: dict, runtime) -> dict:
    return {"format": RECORD_FORMAT, "bundle": manifest.name, "target": target,
            "artifact_sha256": artifact_digest(manifest, target), "recipe": report.get("recipe"),
            "validation": {k: v for k, v in report["validation"].items() if k != "attribution"},
            "host": host_description(runtime), "created": time.time()}


def record_problem(manifest, target: str, record: dict, digest: str | None) -> str | None:
    """Why a record cannot stand for this variant, or None when it can."""
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return f"not a {RECORD_FORMAT} record"
    if record.get("bundle") != manifest.name or record.get("target") != target:
        return f"it is for {record.get('bundle')}/{record.get('target')}, not {manifest.name}/{target}"
    if digest is None:
        return "the variant was not built here"
    if record.get("artifact_sha256") != digest:
        return (f"it was made for artifact sha256 {str(record.get('artifact_sha256'))[:16]}..., this variant's "
                f"artifact is {digest[:16]}...")
    validation, host = record.get("validation"), record.get("host")
    status = validation.get("status") if isinstance(validation, dict) else None
    if status not in ("passed", "failed") or not isinstance(validation.get("metrics"), dict):
        return f"its validation ({status!r}) is not a passed/failed run with metrics"
    if not isinstance(host, dict) or not all(isinstance(host.get(k), str) for k in HOST_KEYS):
        return f"it does not name its host ({', '.join(HOST_KEYS)})"
    return None


def find_records(manifest, target: str, digest: str | None) -> list[tuple[str, dict]]:
    """Candidate records: the local file (e.g. a CI artifact of the macOS job), then the cache's."""
    found = []
    local = record_path(manifest, target)
    if local.exists():
        try:
            found.append((str(local.relative_to(manifest.root)), read_json(local)))
        except ValueError:
            found.append((str(local.relative_to(manifest.root)), {}))
    if digest is not None:
        from mbuild.cache.store import project_store

        store = project_store(manifest)
        if store is not None:
            try:
                record = store.get_record(digest, target)
            except Exception as e:  # noqa: BLE001 - an unreachable cache leaves the local validation
                print(f"warning: bundle:{manifest.name}: cannot read host records from {store.config.url}: {e}")
                record = None
            if record is not None:
                found.append((store.record_path(digest, target), record))
    return found


def merge_host_records(manifest) -> dict[str, dict]:
    """Put each valid host record's validation into the target's report.json; returns what was merged."""
    lay = layout_for(manifest)
    merged = {}
    for target in manifest.targets:
        rj = lay.report_json(target)
        if not rj.exists():
            continue
        digest = artifact_digest(manifest, target)
        for where, record in find_records(manifest, target, digest):
            problem = record_problem(manifest, target, record, digest)
            if problem:
                print(f"warning: bundle:{manifest.name}: refused the host validation record {where} for {target}: "
                      f"{problem}; {target} keeps its own validation")
                continue
            report = read_json(rj)
            validation = dict(record["validation"])
            validation["host"] = record["host"]
            if report.get("validation", {}).get("host") != record["host"] or report["validation"] != validation:
                report.setdefault("build_host_validation", report.get("validation"))
                report["validation"] = validation
                write_json_atomic(rj, report)
            host = record["host"]
            print(f"bundle:{manifest.name}: {target}: validation {validation['status']} on {host['os']} "
                  f"{host['os_version']} {host['machine']} ({host['runtime']} {_runtime_version(host)}), "
                  f"from {where}")
            merged[target] = record
            break
    return merged


def _runtime_version(host: dict) -> str:
    versions = host.get("versions") or {}
    return ", ".join(f"{k} {v}" for k, v in versions.items()) or "version unknown"
