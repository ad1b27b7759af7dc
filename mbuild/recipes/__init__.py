"""The recipe vocabulary: which features a recipe needs, its default tolerances, and how to describe it."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest, RecipeConfig, TargetConfig

# Tensors smaller than this (biases, scales, BN params) are not counted as weights (see audit.py).
MIN_WEIGHT_ELEMENTS = 64


def recipe_features(recipe: "RecipeConfig") -> frozenset[str]:
    """Features a runtime must offer to build ``recipe`` (compared with ``Runtime.features``)."""
    feats = {recipe.precision}
    q = recipe.quantize
    if q:
        if q.scheme == "static":
            feats.add("int16x8" if q.activations == "int16" else "int8-static")
            if q.granularity == "per_block":
                feats.add("per-block")
        elif q.scheme == "dynamic":
            feats.add("int8-dynamic")
        else:
            feats.add(f"weight-only-{q.weights}")
            if q.granularity == "per_block":
                feats.add("per-block")
        if q.exclude == "auto":
            feats.add("exclude-auto")
    if recipe.palettize:
        feats.add("palettize")
    if recipe.prune:
        feats.add("prune")
    return frozenset(feats)


def tolerance_for(manifest: "Manifest", target: "TargetConfig", recipe: "RecipeConfig") -> dict[str, dict[str, float]]:
    """The effective tolerance of each output: defaults for its kind and the recipe's family, then
    ``validate.default``, ``validate.<recipe>`` and the target's ``validate`` (later wins); at each level
    the general keys first, then that level's ``outputs.<name>``."""
    from mbuild.validate.defaults import default_tolerance

    levels = [manifest.validate.get("default", {}), manifest.validate.get(recipe.name, {}), target.validate]
    result = {}
    for name, spec in manifest.outputs.items():
        out = default_tolerance(recipe.family, spec.kind)
        parts: dict[str, dict] = {}
        for level in levels:
            out.update({k: v for k, v in (level or {}).items() if k != "outputs"})
            entry = ((level or {}).get("outputs") or {}).get(name, {})
            out.update({k: v for k, v in entry.items() if k != "parts"})
            for part, limits in (entry.get("parts") or {}).items():
                parts.setdefault(part, {}).update(limits)
        if parts:
            out["parts"] = parts
        result[name] = out
    return result


def tolerance_inputs(manifest: "Manifest", target: "TargetConfig", recipe_names) -> dict:
    """The manifest entries a target's tolerance is made from (a check depends on these, not on all of validate)."""
    return {"default": manifest.raw.get("validate", {}).get("default"),
            "recipes": {n: manifest.raw.get("validate", {}).get(n) for n in recipe_names},
            "families": {n: manifest.recipes[n].family for n in recipe_names if n in manifest.recipes},
            "target": target.validate}


def describe_requested(recipe: "RecipeConfig") -> str:
    """One line saying what the recipe asks for (what was applied is the runtime's to say)."""
    parts = []
    q = recipe.quantize
    if q:
        if q.scheme == "static":
            act = "16" if q.activations == "int16" else "8"
            parts.append(f"{q.weights} static {q.granularity.replace('_', '-')} W{q.weights[-1]}A{act}")
        elif q.scheme == "dynamic":
            parts.append(f"{q.weights} dynamic (weights {q.granularity.replace('_', '-')}, activations at run time)")
        else:
            parts.append(f"{q.weights} weight-only {q.granularity.replace('_', '-')}")
    if recipe.palettize:
        parts.append(f"{recipe.palettize['nbits']}-bit palettization")
    if recipe.prune:
        parts.append(f"{recipe.prune['sparsity']:.0%} pruning")
    parts.append(f"{recipe.precision} compute")
    return ", ".join(parts)
