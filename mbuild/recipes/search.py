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


def _evaluate(manifest: "Manifest", target_name: str, staging: Path, record: dict) -> dict:
    from mbuild.steps import check_variant, make_context

    ctx = make_context(manifest, target_name, staging, recipe_name=record["recipe"])
    validation = check_variant(ctx, record, measure=False)["validation"]
    return validation


def _summary(record: dict, validation: dict) -> dict:
    metrics = validation.get("metrics") or {}
    return {"recipe": record["recipe"], "size_bytes": record["size_bytes"],
            "quantization": record["quantization"].get("summary"),
            "excluded": record["quantization"].get("excluded", []),
            "status": validation["status"], "metrics": metrics,
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

    attempts, kept = [], None
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
        if validation["status"] == "passed" and (kept is None or record["size_bytes"] < kept[1]["size_bytes"]):
            if kept:
                shutil.rmtree(kept[0], ignore_errors=True)
            kept = (staging, record)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    if kept is None:
        lines = "; ".join(f"{a['recipe']}: {a['status']} ({'; '.join(a.get('failures', [])) or a.get('reason', '')})"
                          for a in attempts)
        raise BuildError(f"recipe: auto found no candidate that passes the tolerance: {lines}")
    staging, record = kept
    record["search"] = {"kind": "recipe: auto", "chosen": record["recipe"],
                        "rule": "smallest variant whose validation passes", "attempts": attempts}
    write_json_atomic(staging / "variant.json", record)
    return staging


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
