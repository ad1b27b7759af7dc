"""Searches that need the validation set while building: ``exclude: auto`` and ``recipe: auto``.

``exclude: auto`` keeps the most damaging layers in float, one at a time (as the runtime's
error attribution ranks them), until the tolerance holds or ``exclude_max`` is reached.
``recipe: auto`` builds every candidate recipe and keeps the smallest variant that passes.
Every attempt is recorded in variant.json under ``search`` so the report shows the whole search.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild._io import write_json_atomic
from mbuild.errors import BuildError
from mbuild.targets import get_runtime

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest

log = logging.getLogger(__name__)


# recipe: auto keeps the smallest passing variant, unless one at most SIZE_SLACK larger runs at least
# SPEEDUP times faster on the build host (a wide margin, so that timing noise cannot flip the choice).
SIZE_SLACK = 0.10
SPEEDUP = 1.5


def _evaluate(manifest: "Manifest", target_name: str, staging: Path, record: dict) -> dict:
    from mbuild.steps import check_variant, make_context

    ctx = make_context(manifest, target_name, staging, recipe_name=record["recipe"])
    report = check_variant(ctx, record, measure=False)
    validation = report["validation"]
    validation["host_median_ms"] = (report.get("latency") or {}).get("median_ms")
    return validation


def _summary(record: dict, validation: dict) -> dict:
    metrics = validation.get("metrics") or {}
    return {"recipe": record["recipe"], "size_bytes": record["size_bytes"],
            "quantization": record["quantization"].get("summary"),
            "excluded": record["quantization"].get("excluded", []),
            "status": validation["status"], "metrics": metrics, "host_median_ms": validation.get("host_median_ms"),
            "failures": [f["message"] for f in validation.get("failures", [])]}


def build_searched_variant(manifest: "Manifest", target_name: str, parent: Path) -> Path:
    """The staging folder of the variant to keep, with its search recorded in variant.json."""
    target = manifest.targets[target_name]
    if target.recipe != "auto":
        staging, record, search = _build_recipe(manifest, target_name, parent, target.recipe)
        if search:
            record["search"] = {"kind": "exclude: auto", "attempts": search}
            write_json_atomic(staging / "variant.json", record)
        return staging
    candidates = list(target.candidates or manifest.recipes)
    runtime = get_runtime(target.runtime)
    from mbuild.recipes import recipe_features

    attempts, passing = [], []
    for name in candidates:
        if recipe_features(manifest.recipes[name]) - runtime.features:
            attempts.append({"recipe": name, "status": "refused", "reason": f"not offered by {runtime.name}"})
            continue
        print(f"variant:{manifest.name}/{target_name}: recipe auto: trying {name!r}", flush=True)
        try:
            staging, record, sub = _build_recipe(manifest, target_name, parent, name)
        except BuildError as e:
            attempts.append({"recipe": name, "status": "error", "reason": str(e)})
            continue
        validation = _evaluate(manifest, target_name, staging, record)
        entry = _summary(record, validation)
        if sub:
            entry["exclude_search"] = sub
        attempts.append(entry)
        if validation["status"] == "passed":
            passing.append((staging, record, entry))
        else:
            shutil.rmtree(staging, ignore_errors=True)
    if not passing:
        lines = "; ".join(f"{a['recipe']}: {a['status']} ({'; '.join(a.get('failures', [])) or a.get('reason', '')})"
                          for a in attempts)
        raise BuildError(f"recipe: auto found no candidate that passes the tolerance: {lines}")
    kept = _choose(passing)
    for staging, _, _ in passing:
        if staging != kept[0]:
            shutil.rmtree(staging, ignore_errors=True)
    staging, record, _ = kept
    record["search"] = {"kind": "recipe: auto", "chosen": record["recipe"],
                        "rule": f"smallest variant that passes, unless one at most {SIZE_SLACK:.0%} larger runs "
                                f"{SPEEDUP}x faster or more on the build host", "attempts": attempts}
    write_json_atomic(staging / "variant.json", record)
    return staging


def _choose(passing: list[tuple]) -> tuple:
    """Smallest passing variant, or a near-smallest one that is faster (dynamic int8 is often slower than fp32)."""
    smallest = min(passing, key=lambda p: p[1]["size_bytes"])
    base_ms = smallest[2].get("host_median_ms")
    near = [p for p in passing if p[1]["size_bytes"] <= smallest[1]["size_bytes"] * (1 + SIZE_SLACK)
            and p[2].get("host_median_ms") is not None]
    if base_ms is None or not near:
        return smallest
    fastest = min(near, key=lambda p: (p[2]["host_median_ms"], p[1]["size_bytes"]))
    return fastest if fastest[2]["host_median_ms"] * SPEEDUP <= base_ms else smallest


def _build_recipe(manifest: "Manifest", target_name: str, parent: Path, recipe_name: str):
    """Build one recipe; with ``exclude: auto`` keep adding float layers until the tolerance holds."""
    from mbuild.steps import build_in_staging, make_context

    recipe = manifest.recipes[recipe_name]
    q = recipe.quantize
    staging, record = build_in_staging(manifest, target_name, parent, recipe_name)
    if not (q and q.exclude == "auto"):
        return staging, record, []
    runtime = get_runtime(manifest.targets[target_name].runtime)
    excluded: list[str] = []
    attempts = []
    while True:
        validation = _evaluate(manifest, target_name, staging, record)
        attempts.append(_summary(record, validation))
        if validation["status"] == "passed" or len(excluded) >= q.exclude_max:
            if validation["status"] != "passed":
                log.warning("exclude: auto reached its bound of %d float layer(s) without meeting the tolerance",
                            q.exclude_max)
            return staging, record, attempts
        ctx = make_context(manifest, target_name, staging, recipe_name=recipe_name)
        ranking = runtime.attribute_error(ctx, staging / record["artifact"], ctx.validation_inputs())
        new = next((layer for layer in ranking.get("layers", [])
                    if not set(layer["exclude"]) <= set(excluded)), None)
        if new is None:
            return staging, record, attempts
        excluded += [n for n in new["exclude"] if n not in excluded]
        print(f"variant:{manifest.name}/{target_name}: exclude auto: keeping {new['node']!r} ({new['op']}) in float "
              f"(quantizing {new['tensor']!r} costs {new['damage_db']:.1f} dB downstream)", flush=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging, record = build_in_staging(manifest, target_name, parent, recipe_name, tuple(excluded))
