"""The recipe vocabulary: which features a recipe needs, its default tolerances, and how to describe it."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest, RecipeConfig, TargetConfig

# Defaults per recipe family; manifests override them (defaults -> validate.default -> validate.<recipe> -> target).
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"cosine_min": 0.9999, "channel_snr_db_min": 30, "top1_agreement_min": 0.99, "accuracy_drop_max": 0.5},
    "fp16": {"cosine_min": 0.999, "channel_snr_db_min": 25, "top1_agreement_min": 0.98, "accuracy_drop_max": 1.0},
    "int8-static": {"cosine_min": 0.98, "channel_snr_db_min": 8, "top1_agreement_min": 0.95, "accuracy_drop_max": 2.0},
    "int16x8": {"cosine_min": 0.99, "channel_snr_db_min": 15, "top1_agreement_min": 0.97, "accuracy_drop_max": 1.0},
    "int8-dynamic": {"cosine_min": 0.98, "channel_snr_db_min": 8, "top1_agreement_min": 0.95, "accuracy_drop_max": 2.0},
    "weight-only": {"cosine_min": 0.99, "channel_snr_db_min": 15, "top1_agreement_min": 0.97, "accuracy_drop_max": 1.5},
    "compressed": {"cosine_min": 0.95, "channel_snr_db_min": 5, "top1_agreement_min": 0.9, "accuracy_drop_max": 3.0},
}


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


def tolerance_for(manifest: "Manifest", target: "TargetConfig", recipe: "RecipeConfig") -> dict[str, float]:
    """The effective tolerance: family default, then manifest default, recipe, target (later wins)."""
    out = dict(DEFAULT_TOLERANCES.get(recipe.family, DEFAULT_TOLERANCES["fp32"]))
    out.update(manifest.validate.get("default", {}))
    out.update(manifest.validate.get(recipe.name, {}))
    out.update(target.validate)
    return out


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
