"""What was applied, measured from the artifact: the weight census decides the recorded precision.

A converter can keep weights in float32 while the recipe says fp16 (Core ML keeps LSTM weights
fp32 under fp16 compute precision), or a quantized file can come out larger than its float
sibling; both are flagged, and ``quantization.weights`` says what the file really stores.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import RecipeConfig
    from mbuild.targets.base import BuildContext

FLOAT32_SHARE_FLAG = 0.05  # an fp16 recipe may keep a few small tensors in float32


def apply_census(record: dict, recipe: "RecipeConfig") -> list[str]:
    """Rewrite ``record['quantization']['weights']`` from the audit's census; return flags for surprises."""
    audit = record.get("audit") or {}
    census = audit.get("by_dtype") or {}
    quant = record.setdefault("quantization", {})
    if not census:
        return []
    total = sum(d["bytes"] for d in census.values()) or 1
    dominant = max(census, key=lambda k: census[k]["bytes"])
    said = quant.get("weights")
    quant["weights_census"] = {k: {"tensors": v["tensors"], "bytes": v["bytes"], "share": round(v["bytes"] / total, 4)}
                               for k, v in sorted(census.items())}
    quant["weights"] = dominant
    if said and said != dominant:
        quant["weights_stated_by_converter"] = said
    flags = []
    if recipe.precision == "fp16" and not recipe.quantize and not recipe.palettize:
        f32 = census.get("float32")
        if f32 and f32["bytes"] / total > FLOAT32_SHARE_FLAG:
            ops = sorted({t["op"] for t in audit.get("float_left") or [] if t.get("dtype") == "float32"})
            flags.append(f"the recipe asks for fp16 weights, but {f32['tensors']} weight tensor(s) "
                         f"({f32['bytes']:,} bytes, {f32['bytes'] / total:.0%} of the weights) are stored as float32"
                         + (f" (ops: {', '.join(ops)})" if ops else ""))
            quant["summary"] = (f"{quant.get('summary', '')}; measured in the file: {f32['bytes'] / total:.0%} of the "
                                f"weight bytes are float32" + (f" ({', '.join(ops)})" if ops else ""))
    return flags


def size_flags(record: dict, ctx: "BuildContext") -> list[str]:
    """A quantized or fp16 variant that is not smaller than its fp32 sibling has gained nothing."""
    if ctx.recipe.family == "fp32":
        return []
    fp32 = (record.get("details") or {}).get("float_bytes")
    if fp32 is None and record.get("runtime") == "onnxruntime" and ctx.canonical_onnx.is_file():
        fp32 = ctx.canonical_onnx.stat().st_size
    size = record.get("size_bytes")
    if fp32 and size and size >= fp32:
        return [f"the {ctx.recipe.family} variant ({size:,} bytes) is not smaller than its fp32 sibling "
                f"({fp32:,} bytes)"]
    return []
