"""Which shared base conversions a manifest's targets need: a pure function of the manifest and the runtimes.

Task definition (every ``doit``, no-ops included), the steps and the shared cache all ask this; it
imports no step code, so loading dodo.py does not import what the steps need.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mbuild.recipes import recipe_features
from mbuild.targets import get_runtime

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest


def recipe_names(manifest: "Manifest", target) -> tuple[str, ...]:
    """The recipes a target builds: its own, or the candidates (default: every recipe) of ``recipe: auto``."""
    return (target.candidates or tuple(manifest.recipes)) if target.recipe == "auto" else (target.recipe,)


def _target_conversions(manifest: "Manifest", target):
    """(recipe name, Conversion) for each recipe of the target its runtime can build and converts through a base."""
    runtime = get_runtime(target.runtime)
    for recipe_name in recipe_names(manifest, target):
        recipe = manifest.recipes[recipe_name]
        if recipe_features(recipe) - runtime.features:
            continue  # recipe: auto refuses it without converting
        conv = runtime.conversion(manifest, target, recipe)
        if conv is not None:
            yield recipe_name, conv


def conversions(manifest: "Manifest") -> dict[str, tuple]:
    """Every shared base conversion of a manifest: path -> (runtime, Conversion, first target, recipe using it)."""
    found: dict[str, tuple] = {}
    for name, target in manifest.targets.items():
        for recipe_name, conv in _target_conversions(manifest, target):
            if conv.path not in found:
                found[conv.path] = (get_runtime(target.runtime), conv, name, recipe_name)
    return found


def conversions_of(manifest: "Manifest", target) -> list[str]:
    """The base conversions a target's variant reads (one per candidate recipe for recipe: auto)."""
    return list(dict.fromkeys(conv.path for _, conv in _target_conversions(manifest, target)))


def conversion_users(manifest: "Manifest", path: str) -> list[str]:
    """The targets whose variants read base conversion ``path``."""
    return [name for name, target in manifest.targets.items() if path in conversions_of(manifest, target)]
