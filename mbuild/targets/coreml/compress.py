"""Recipe -> coremltools.optimize.coreml: linear weight quantization, palettization, pruning.

Also the rules saying which recipe needs which deployment target, so ``mbuild validate`` can
refuse an impossible target before coremltools is imported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mbuild.errors import BuildError
from mbuild.recipes import MIN_WEIGHT_ELEMENTS

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import RecipeConfig

# Compress every tensor the audit counts as a weight (coremltools' own default skips tensors < 2048).
WEIGHT_THRESHOLD = MIN_WEIGHT_ELEMENTS
WORKING_RECIPES = ("precision fp16/fp32", "quantize {scheme: weight_only, weights: int8|uint8|int4}",
                   "palettize {nbits}", "prune {sparsity}")


def os_needed(recipe: RecipeConfig) -> tuple[int, str] | None:
    """(minimum iOS major, why) for the recipe's compression ops, or None when any ML Program OS works."""
    q, pal, prune = recipe.quantize, recipe.palettize, recipe.prune
    needs: list[tuple[int, str]] = []
    if q and q.scheme == "weight_only":
        needs.append((16, "weight quantization (constexpr_affine_dequantize)"))
        if q.weights == "int4":
            needs.append((18, "int4 weights (constexpr_blockwise_shift_scale)"))
        if q.granularity == "per_block":
            needs.append((18, "per-block quantization"))
    if q and q.scheme == "static":
        needs.append((17, "activation quantization (quantize/dequantize ops)"))
    if pal:
        needs.append((16, "palettization (constexpr_lut_to_dense)"))
        if pal.get("granularity") == "per_grouped_channel":
            needs.append((18, "per_grouped_channel palettization"))
        if pal["nbits"] == 3:
            needs.append((18, "3-bit palettization"))
    if prune:
        needs.append((16, "pruning (constexpr_sparse_to_dense)"))
        if q or pal:
            needs.append((18, "pruning combined with quantization or palettization (joint compression)"))
    return max(needs) if needs else None


def compress(mlmodel, recipe: RecipeConfig, calibration: list[dict] | None = None):
    """Apply the recipe's compression in coremltools' order (prune, then palettize or quantize)."""
    from mbuild.targets.coreml.convert import quiet

    done: list[str] = []
    step = "configuration"
    try:
        with quiet():
            for step, apply in _steps(recipe, calibration):
                mlmodel = apply(mlmodel)
                done.append(step)
    except Exception as e:
        after = f" (after {', '.join(done)})" if done else ""
        raise BuildError(f"coremltools.optimize.coreml {step}{after}: {type(e).__name__}: {e}") from e
    return mlmodel


def _steps(recipe: RecipeConfig, calibration):
    """(name, MLModel -> MLModel) for each compression the recipe asks for, in order."""
    import coremltools.optimize.coreml as cto

    q, pal, prune = recipe.quantize, recipe.palettize, recipe.prune
    joint = bool(prune and (q or pal))
    if prune:
        cfg = cto.OpMagnitudePrunerConfig(target_sparsity=float(prune["sparsity"]), weight_threshold=WEIGHT_THRESHOLD)
        yield "prune_weights", lambda m: cto.prune_weights(m, cto.OptimizationConfig(global_config=cfg))
    if pal:
        pcfg = cto.OpPalettizerConfig(nbits=int(pal["nbits"]), mode=pal.get("mode", "kmeans"),
                                      granularity=pal.get("granularity", "per_tensor"),
                                      group_size=int(pal.get("group_size", 32)), weight_threshold=WEIGHT_THRESHOLD)
        yield "palettize_weights", lambda m: cto.palettize_weights(
            m, cto.OptimizationConfig(global_config=pcfg), joint_compression=joint)
    if q and q.scheme == "static":
        act = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
        yield "linear_quantize_activations", lambda m: cto.linear_quantize_activations(m, act, calibration or [])
    if q:
        qcfg = cto.OptimizationConfig(global_config=_linear_config(q))
        yield "linear_quantize_weights", lambda m: cto.linear_quantize_weights(m, qcfg, joint_compression=joint)


def _linear_config(q):
    import coremltools.optimize.coreml as cto

    kwargs = {"block_size": int(q.block_size)} if q.granularity == "per_block" else {}
    return cto.OpLinearQuantizerConfig(mode=_mode(q), dtype=q.weights, granularity=q.granularity,
                                       weight_threshold=WEIGHT_THRESHOLD, **kwargs)


def _mode(q) -> str:
    return "linear" if q.weights.startswith("uint") else "linear_symmetric"


def describe(recipe: RecipeConfig, calibration_samples: int = 0) -> dict:
    """What was applied, in the words the bundle uses ('int8 weight-only linear per-channel (symmetric), ...')."""
    q, pal, prune = recipe.quantize, recipe.palettize, recipe.prune
    parts: list[str] = []
    info: dict = {"compute_precision": recipe.precision, "weight_threshold": WEIGHT_THRESHOLD,
                  "tool": f"coremltools.optimize.coreml {_version()}"}
    if prune:
        parts.append(f"{prune['sparsity']:.0%} magnitude pruning (sparse weights)")
        info["pruning"] = {"sparsity": prune["sparsity"], "method": "magnitude"}
    if pal:
        gran = pal.get("granularity", "per_tensor")
        extra = f", groups of {pal.get('group_size', 32)} channels" if gran == "per_grouped_channel" else ""
        parts.append(f"{pal['nbits']}-bit palettization ({pal.get('mode', 'kmeans')}, {gran.replace('_', '-')}{extra})")
        info["palettization"] = {"nbits": pal["nbits"], "mode": pal.get("mode", "kmeans"), "granularity": gran}
    if q:
        gran = q.granularity.replace("_", "-") + (f" (blocks of {q.block_size})" if q.granularity == "per_block" else "")
        sym = "asymmetric" if _mode(q) == "linear" else "symmetric"
        if q.scheme == "static":
            parts.append(f"{q.weights} static W8A8 linear {gran} ({sym}), activations calibrated on "
                         f"{calibration_samples} samples")
            info.update(activations="int8", calibration_samples=calibration_samples)
        else:
            parts.append(f"{q.weights} weight-only linear {gran} ({sym})")
            info["activations"] = recipe.precision.replace("fp", "float")
        info.update(scheme=q.scheme, weights=q.weights, granularity=q.granularity, block_size=q.block_size)
    else:
        info.update(scheme="none" if not (pal or prune) else "weight_compression",
                    weights="float16" if recipe.precision == "fp16" and not (pal or prune) else
                    ("float32" if not (pal or prune) else "compressed"),
                    activations=recipe.precision.replace("fp", "float"))
    parts.append(f"{recipe.precision} compute")
    summary = ", ".join(parts) if (q or pal or prune) else f"none ({recipe.precision} weights and compute)"
    info["summary"] = summary
    return info


def requested_weights(recipe: RecipeConfig) -> str | None:
    """The weight storage the audit should find (None: a float recipe, nothing to verify)."""
    if recipe.quantize:
        return recipe.quantize.weights
    if recipe.palettize:
        return f"palettized-{recipe.palettize['nbits']}bit"
    return None


def _version() -> str:
    from mbuild._io import dist_version

    return dist_version("coremltools", missing="unknown")
