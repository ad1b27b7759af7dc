"""The runtime registry: one explicit table, runtimes imported only when asked for."""
from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from mbuild.errors import ManifestError
from mbuild.manifest._schema import suggest

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import Manifest
    from mbuild.targets.base import Runtime

RUNTIMES = {
    "onnxruntime": "mbuild.targets.onnxruntime.runtime:OnnxRuntime",
    "tflite": "mbuild.targets.tflite.runtime:TFLiteRuntime",
    "coreml": "mbuild.targets.coreml.runtime:CoreMLRuntime",
    "ncnn": "mbuild.targets.ncnn.runtime:NcnnRuntime",
    "executorch": "mbuild.targets.executorch.runtime:ExecuTorchRuntime",
    "tfjs": "mbuild.targets.tfjs.runtime:TfjsRuntime",
}


@cache
def get_runtime(name: str) -> "Runtime":
    """The runtime registered as ``name`` (its module imports no SDK at import time)."""
    try:
        spec = RUNTIMES[name]
    except KeyError:
        raise ManifestError(f"unknown runtime {name!r}{suggest(name, RUNTIMES)}") from None
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)()


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def check_manifest_targets(manifest: "Manifest") -> None:
    """Refuse targets their runtime cannot build from this source/recipe, before any SDK loads."""
    from mbuild.recipes import recipe_features

    kind = manifest.source.kind
    for name, target in manifest.targets.items():
        runtime = get_runtime(target.runtime)
        key = ("targets", name)
        if kind not in runtime.sources:
            possible = sorted(n for n in RUNTIMES if kind in get_runtime(n).sources)
            raise ManifestError(
                f"runtime {target.runtime!r} cannot be built from {_article(kind)} {kind} source; "
                f"runtimes possible for {kind}: {', '.join(possible)}",
                manifest.positions.of(key + ("runtime",)), f"targets.{name}.runtime")
        recipe_names = target.candidates if target.recipe == "auto" else (target.recipe,)
        if target.recipe == "auto" and not recipe_names:
            recipe_names = tuple(manifest.recipes)
        for rname in recipe_names:
            recipe = manifest.recipes[rname]
            missing = recipe_features(recipe) - runtime.features
            where = key + ("recipe",)
            reason = runtime.check_target(manifest, target, recipe)
            if reason:
                raise ManifestError(reason, manifest.positions.of(where), f"targets.{name}")
            if missing:
                raise ManifestError(
                    f"recipe {rname!r} needs {', '.join(sorted(missing))}, which runtime {target.runtime!r} "
                    f"does not offer (it offers {', '.join(sorted(runtime.features))})",
                    manifest.positions.of(where), f"targets.{name}.recipe")
        try:
            runtime.parse_options(target)
        except ValueError as e:
            raise ManifestError(str(e), manifest.positions.of(key), f"targets.{name}") from None
