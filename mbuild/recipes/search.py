"""Searches that need the validation set while building: ``exclude: auto`` and ``recipe: auto``.

``exclude: auto`` keeps the most damaging layers in float, one at a time (as the runtime's
error attribution ranks them), until the tolerance holds or ``exclude_max`` is reached.
``recipe: auto`` builds every candidate recipe and keeps the smallest variant that passes.
Every attempt is recorded in variant.json under ``search`` so the report shows the whole search.
The step layer that calls the search hands it the three step functions it needs (:class:`SearchSteps`),
so the search never imports the steps back.
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SearchSteps:
    """The step functions a search calls (mbuild.steps passes its own): build, context, check."""

    build: Callable  # (manifest, target, parent, recipe_name, exclude_extra=()) -> (staging, record)
    context: Callable  # (manifest, target, out_dir, recipe_name=...) -> BuildContext
    check: Callable  # (ctx, record, measure=...) -> report


def _evaluate(steps: SearchSteps, manifest: "Manifest", target_name: str, staging: Path, record: dict) -> dict:
    ctx = steps.context(manifest, target_name, staging, recipe_name=record["recipe"])
    report = steps.check(ctx, record, measure=False)
    validation = report["validation"]
    validation["host_median_ms"] = (report.get("latency") or {}).get("median_ms")
    return validation


def _summary(record: dict, validation: dict) -> dict:
    from mbuild.validate.gates import shortfall

    metrics = validation.get("metrics") or {}
    failures = validation.get("failures", [])
    return {"recipe": record["recipe"], "size_bytes": record["size_bytes"],
            "quantization": record["quantization"].get("summary"),
            "excluded": record["quantization"].get("excluded", []),
            "excluded_modules": record["quantization"].get("excluded_modules", []),
            "status": validation["status"], "metrics": metrics, "host_median_ms": validation.get("host_median_ms"),
            "failures": [f["message"] for f in failures],
            "task_failures": [f["message"] for f in failures if f.get("task_metric")],
            "shortfall": round(shortfall(failures), 6), "flags": record.get("flags", [])}


def build_searched_variant(steps: SearchSteps, manifest: "Manifest", target_name: str, parent: Path) -> Path:
    """The staging folder of the variant to keep, with its search recorded in variant.json."""
    target = manifest.targets[target_name]
    if target.recipe != "auto":
        staging, record, search = _build_recipe(steps, manifest, target_name, parent, target.recipe)
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
            staging, record, sub = _build_recipe(steps, manifest, target_name, parent, name)
        except BuildError as e:
            attempts.append({"recipe": name, "status": "error", "reason": str(e)})
            continue
        validation = _evaluate(steps, manifest, target_name, staging, record)
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


# A layer is kept in float only when quantizing it measurably costs the task: its attributed damage is at
# least MIN_DAMAGE_DB, and excluding it brings the variant measurably closer to its tolerance.
MIN_DAMAGE_DB = 0.5
MIN_IMPROVEMENT = 0.01  # relative drop of the summed shortfall (see mbuild.validate.gates.shortfall)


def _build_recipe(steps: SearchSteps, manifest: "Manifest", target_name: str, parent: Path, recipe_name: str):
    """Build one recipe; with ``exclude: auto`` keep layers in float, one at a time, while that helps the task.

    The runtime's error attribution ranks layers; a candidate is kept only if the rebuilt variant is
    measurably closer to its tolerance (task metrics included), otherwise it is dropped again and the
    next one is tried. Attribution that fails falls back to a simpler ranking, said so in the record.
    """
    recipe = manifest.recipes[recipe_name]
    q = recipe.quantize
    staging, record = steps.build(manifest, target_name, parent, recipe_name)
    if not (q and q.exclude == "auto"):
        return staging, record, []
    runtime = get_runtime(manifest.targets[target_name].runtime)
    excluded: list[str] = []
    attempts = []
    validation = _evaluate(steps, manifest, target_name, staging, record)
    attempts.append(_summary(record, validation))
    tried: set[str] = set()
    ranking = None
    current = attempts[-1]["shortfall"]
    trials = 0
    while validation["status"] != "passed" and len(excluded) < q.exclude_max and trials < 3 * q.exclude_max:
        if ranking is None:
            ctx = steps.context(manifest, target_name, staging, recipe_name=recipe_name)
            ranking = _ranking(runtime, ctx, staging / record["artifact"], attempts)
        candidate = next((layer for layer in ranking if layer["node"] not in tried
                          and not set(layer["exclude"]) <= set(excluded)), None)
        if candidate is None:
            attempts[-1]["stopped"] = "no further layer whose quantization measurably costs the task"
            break
        tried.add(candidate["node"])
        trials += 1
        trial = excluded + [n for n in candidate["exclude"] if n not in excluded]
        cost = f"{candidate['damage_db']:.1f} dB downstream" if candidate.get("damage_db") is not None else "unranked"
        print(f"variant:{manifest.name}/{target_name}: exclude auto: trying {candidate['module']!r} "
              f"({candidate['op']}) in float ({cost})", flush=True)
        new_staging, new_record = steps.build(manifest, target_name, parent, recipe_name, tuple(trial))
        new_record["quantization"]["excluded_modules"] = sorted(
            {*record["quantization"].get("excluded_modules", []), candidate["module"]})
        new_validation = _evaluate(steps, manifest, target_name, new_staging, new_record)
        entry = _summary(new_record, new_validation)
        entry["tried"] = candidate["module"]
        before, after = current, entry["shortfall"]
        helped = new_validation["status"] == "passed" or after < before * (1 - MIN_IMPROVEMENT)
        entry["kept"] = helped
        attempts.append(entry)
        if helped:
            shutil.rmtree(staging, ignore_errors=True)
            staging, record, validation, excluded, current = new_staging, new_record, new_validation, trial, after
            ranking = None  # the damage moves once a layer is float: rank again, and retry what did not help alone
            tried = set()
        else:
            shutil.rmtree(new_staging, ignore_errors=True)
            attempts[-1]["note"] = (f"keeping {candidate['module']!r} in float did not bring the variant closer to its "
                                    f"tolerance (shortfall {before:.4g} -> {after:.4g}); dropped")
    if validation["status"] != "passed" and len(excluded) >= q.exclude_max:
        log.warning("exclude: auto reached its bound of %d float layer(s) without meeting the tolerance", q.exclude_max)
    write_json_atomic(staging / "variant.json", record)
    return staging, record, attempts


def _ranking(runtime, ctx, artifact: Path, attempts: list[dict]) -> list[dict]:
    """Layers worth keeping in float, most damaging first; a fallback ranking when attribution cannot run."""
    try:
        result = runtime.attribute_error(ctx, artifact, ctx.validation_inputs())
        layers = [x for x in result.get("layers", []) if (x.get("damage_db") or 0) >= MIN_DAMAGE_DB]
        skipped = [x for x in result.get("layers", []) if (x.get("damage_db") or 0) < MIN_DAMAGE_DB]
        if skipped:
            attempts[-1]["not_candidates"] = [f"{x.get('module') or x['node']}: {x['damage_db']:.2f} dB"
                                              for x in skipped[:5]]
        if result.get("unmatched"):
            attempts[-1]["attribution_note"] = result["unmatched"]
        if layers:
            return [_named(x) for x in layers]
        reason = "attribution found no layer costing at least " f"{MIN_DAMAGE_DB} dB"
    except Exception as e:  # noqa: BLE001 - attribution is a diagnostic: fall back, never a traceback
        reason = f"attribution failed ({type(e).__name__}: {str(e)[:200]})"
    fallback = getattr(runtime, "fallback_ranking", None)
    layers = fallback(ctx, artifact) if fallback else []
    attempts[-1]["ranking"] = f"{reason}; " + ("fell back to the layers nearest the outputs first" if layers
                                                 else "no fallback ranking for this runtime")
    return [_named(x) for x in layers]


def _named(layer: dict) -> dict:
    return {**layer, "module": layer.get("module") or module_path(layer["node"])}


def module_path(node: str) -> str:
    """The source module a converter's node name comes from ('/blocks.5/gate/Conv' -> 'blocks.5.gate')."""
    name = node.split(";")[0]
    if name.startswith("/") and name.count("/") >= 2:
        return ".".join(p for p in name.strip("/").split("/")[:-1] if p) or name
    if len(name) > 80:
        return name[:38] + "..." + name[-38:]
    return name
