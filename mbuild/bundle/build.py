"""The ``bundle:`` task: gather built variants and their checks into dist/<name>-<version>.mbundle."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild import __version__
from mbuild._io import atomic_path, canonical_json, digest, files_of, read_json, sha256_tree, write_json_atomic
from mbuild.bundle.archive import write_archive
from mbuild.errors import BuildError
from mbuild.layout import layout_for

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest


def gather(manifest: "Manifest") -> tuple[list, list[str], dict[str, str]]:
    """Variant records with their check reports; problems for required targets; why optional ones are left out."""
    lay = layout_for(manifest)
    records, problems, omitted = [], [], {}
    for name, target in manifest.targets.items():
        vj, rj = lay.variant_json(name), lay.report_json(name)
        record = read_json(vj) if vj.exists() else None
        report = read_json(rj) if rj.exists() and record is not None else None
        if record is None:
            why = f"no variant was built (see the variant:{manifest.name}/{name} task's error)"
        elif record.get("status") == "not built":  # only optional targets record this (steps.record_optional_failure)
            why = f"not built: {record.get('reason')}"
        elif report is None or report.get("recipe") != record.get("recipe"):
            why = f"the variant has not been checked (run check:{manifest.name}/{name})"
        elif report["validation"]["status"] == "failed":
            why = "failed its tolerance (" + "; ".join(f["message"] for f in report["validation"]["failures"]) + ")"
        elif report["validation"]["status"] not in ("passed", "skipped"):  # 'error': an optional check that crashed
            why = f"not checked: {report['validation'].get('reason')}"
        else:
            records.append((name, record, report))
            continue
        if target.required:
            problems.append(f"{name}: {why}")
        else:
            omitted[name] = why
    return records, problems, omitted


def build_bundle(manifest: "Manifest") -> Path:
    lay = layout_for(manifest)
    records, problems, omitted = gather(manifest)
    if problems:
        raise BuildError(f"refusing to package {manifest.bundle_id}: required target(s) not ready:\n  - "
                         + "\n  - ".join(problems))
    if not records:
        raise BuildError(f"refusing to package {manifest.bundle_id}: no target was built and validated:\n  - "
                         + "\n  - ".join(f"{n}: {why}" for n, why in omitted.items()))
    _refuse_unvalidated_files(manifest, records)
    source = read_json(lay.source_json)
    entries: dict[str, bytes | Path] = {}
    variants = []
    for name, record, report in records:
        vdir = lay.variant_dir(name)
        files = [record["artifact"], *record.get("files", [])]
        stored = []
        for f in files:
            p = vdir / f
            for sub in files_of(p):
                entries[f"variants/{name}/{sub.relative_to(vdir).as_posix()}"] = sub
            stored.append({"path": f"variants/{name}/{f}", "sha256": sha256_tree(p), "size_bytes": record["size_bytes"]
                           if f == record["artifact"] else record["files_size_bytes"][f]})
        variants.append(variant_entry(manifest, name, record, report, source, stored))
    for out in manifest.outputs.values():
        if out.labels is not None:
            entries[f"labels/{out.safe_name}.txt"] = out.labels
    bundle = bundle_document(manifest, source, variants)
    bundle["build_id"] = digest({"bundle": bundle, "files": {k: sha256_tree(v) if isinstance(v, Path) else
                                                              hashlib.sha256(v).hexdigest() for k, v in entries.items()}})[:32]
    from mbuild.bundle.schema import check_bundle_document

    check_bundle_document(bundle)
    entries["bundle.json"] = canonical_json(bundle).encode()
    entries["SHA256SUMS"] = sha256sums(entries).encode()
    from mbuild.bundle.released import guard_released, write_build_record

    if not guard_released(manifest, lay, entries["SHA256SUMS"]):
        with atomic_path(lay.bundle_path) as tmp:
            write_archive(tmp, entries)
            _check_written(manifest, tmp, records)
    write_build_record(lay, entries["SHA256SUMS"], bundle["build_id"])
    write_json_atomic(lay.dist_dir / f"{manifest.bundle_id}.report.json", build_report(bundle, records, omitted))
    for name, why in omitted.items():
        print(f"warning: bundle:{manifest.name}: left out optional target {name}: {why}")
    return lay.bundle_path


def _refuse_unvalidated_files(manifest: "Manifest", records) -> None:
    """Package only files whose bytes are the ones check: validated (digests in variant.json and report.json)."""
    from mbuild.integrity import packaging_problems

    lay = layout_for(manifest)
    problems = [f"{name}: {p}" for name, record, report in records
                for p in packaging_problems(lay.variant_dir(name), record, report)]
    if problems:
        raise BuildError(f"refusing to package {manifest.bundle_id}: a file differs from the one its check "
                         "validated:\n  - " + "\n  - ".join(problems))


def _check_written(manifest: "Manifest", path: Path, records) -> None:
    """Read the written archive back with the strict reader: each variant file has its validated digest."""
    from mbuild.bundle.verify import check_bundle

    digests = check_bundle(path).digests
    for name, _record, report in records:
        for rel, sha in report["validated"]["digests"].items():
            if digests.get(f"variants/{name}/{rel}") != sha:
                raise BuildError(f"refusing to package {manifest.bundle_id}: variants/{name}/{rel} changed while "
                                 "it was packaged; run doit again")


def sha256sums(entries: dict[str, bytes | Path]) -> str:
    lines = []
    for name in sorted(entries):
        data = entries[name]
        h = hashlib.sha256(data if isinstance(data, bytes) else Path(data).read_bytes()).hexdigest()
        lines.append(f"{h}  {name}")
    return "\n".join(lines) + "\n"


def variant_entry(manifest, name, record, report, source, stored) -> dict:
    analysis = source["analysis"]
    memory = analysis.get("memory") or {}
    peak = int(memory.get("peak_activation_bytes") or 0)
    weights = int(record["size_bytes"])
    total = weights + peak
    requirements = dict(record.get("requirements") or {})
    requirements.setdefault("ram_mb_min", max(1, math.ceil(total / 2**20)))
    validation = {k: v for k, v in report["validation"].items() if k != "attribution"}
    entry = {
        "id": name,
        "file": stored[0]["path"],
        "files": stored,
        "sha256": stored[0]["sha256"],
        "size_bytes": weights,
        "runtime": record["runtime"],
        "format": record["format"],
        "recipe": record["recipe"],
        "precision": manifest.recipes[record["recipe"]].precision,
        "recipe_requested": record.get("recipe_requested", ""),
        "quantization": record.get("quantization", {}),
        "audit": record.get("audit"),
        "requirements": requirements,
        "flops": analysis.get("flops"),
        "params": analysis.get("params"),
        "memory": {"weights_bytes": weights, "peak_activation_bytes": peak, "total_bytes": total,
                   "kind": "estimate"},
        "validation": validation,
        "accelerator_coverage": record.get("lint", []),
        "io": record.get("io", {}),
        "notes": record.get("notes", []),
        "flags": record.get("flags", []),
        "converters": record.get("versions", {}),
    }
    if report.get("also_checked"):  # second consumers' own verdicts (never the variant's); timings stay out
        entry["also_checked"] = {name: {k: v for k, v in found.items() if k != "median_ms"}
                                 for name, found in report["also_checked"].items()}
    if record.get("search"):
        entry["recipe_search"] = _without_timings(record["search"])
    from mbuild.devices import load_devices
    from mbuild.devices.capacity import estimate_variant

    entry["capacity"] = estimate_variant(entry, load_devices(), manifest.capacity)
    return entry


def _without_timings(value):
    """The search record minus host timings: measured latency stays out of the reproducible bundle."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "host_median_ms"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def bundle_document(manifest: "Manifest", source: dict, variants: list[dict]) -> dict:
    from mbuild.bundle.selection import selection_rules

    converters: dict[str, str] = {}
    for v in variants:
        converters.update(v.get("converters", {}))
    converters.update(source.get("versions", {}))
    return {
        "format": 1,
        "name": manifest.name,
        "version": manifest.version,
        "description": manifest.description,
        "author": manifest.author,
        "license": manifest.license,
        "mbuild_version": __version__,
        "converters": dict(sorted(converters.items())),
        "source": {
            "framework": manifest.source.kind,
            "model": source["model"],
            "params": source["analysis"].get("params"),
            "flops": source["analysis"].get("flops"),
            "flops_counter": source["analysis"].get("flops_counter"),
            "memory": source["analysis"].get("memory"),
            "reference_accuracy": source.get("reference_accuracy"),
            "validation_data": source["data"]["validation"],
        },
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "layout": i.layout,
                    "range": list(i.range) if i.range else None, "image": i.image}
                   for i in manifest.inputs.values()],
        "outputs": [output_entry(o, (source.get("outputs") or {}).get(o.name, {})) for o in manifest.outputs.values()],
        "variants": variants,
        "selection": selection_rules(manifest, variants),
    }


def output_entry(spec, semantics: dict) -> dict:
    """An output as an app needs it: its name (and the model's tensor name), what it means, its labels file."""
    entry = {"name": spec.name, "safe_name": spec.safe_name, "kind": spec.kind}
    if spec.tensor:
        entry["tensor"] = spec.tensor
    for key in ("shape", "dtype", "axis", "classes", "parts"):
        if semantics.get(key) is not None:
            entry[key] = semantics[key]
    if spec.kind == "sequence":
        entry["decode"] = {"method": spec.decode, "blank": spec.blank}
    if spec.state_input:
        entry["state"] = {"input": spec.state_input}
    if spec.labels is not None:
        entry["labels"] = f"labels/{spec.safe_name}.txt"
    return entry


def build_report(bundle: dict, records, omitted: dict[str, str]) -> dict:
    """What is measured per build (latency) and which optional targets were left out, kept out of bundle.json."""
    return {"bundle": f"{bundle['name']}-{bundle['version']}.mbundle", "build_id": bundle["build_id"],
            "variants": {name: {"latency": report.get("latency"), "validation": report["validation"],
                                "size_bytes": record["size_bytes"]}
                         for name, record, report in records},
            "omitted": omitted}
