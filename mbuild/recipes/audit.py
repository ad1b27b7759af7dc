"""The quantization audit: what a quantizer really did to the weights, whatever it reported.

Every runtime lists its constant weight tensors as :class:`WeightTensor` and calls
:func:`make_audit`. A recipe that asked for integer weights and got none (or only some)
is flagged ``none``/``partial``; the build fails on that unless the recipe allows it.
"""
from __future__ import annotations

from dataclasses import dataclass

from mbuild.recipes import MIN_WEIGHT_ELEMENTS


@dataclass(frozen=True)
class WeightTensor:
    """One constant weight tensor of a built artifact, as its runtime lists it for the audit."""

    name: str
    op_type: str  # the op that consumes it (Conv, Gemm, FULLY_CONNECTED, const ...)
    dtype: str  # storage type: float32, float16, int8, uint8, int4, palettized-4bit ...
    elements: int
    nbytes: int
    node: str = ""  # the consuming node, when the format names nodes


def _is_integer(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "palettized", "lut"))


def make_audit(requested: str | None, tensors: list[WeightTensor], *, allow_partial: bool = False,
               excluded_nodes: set[str] | frozenset[str] = frozenset()) -> dict:
    """Summarize ``tensors``; ``requested`` is the weight type the recipe asked for (None: float recipe).

    Weights of nodes the recipe keeps in float on purpose (``exclude``, ``keep_outputs_float``) are
    listed as ``kept_float`` and do not make the result partial.
    """
    all_weights = [t for t in tensors if t.elements >= MIN_WEIGHT_ELEMENTS]
    kept = [t for t in all_weights if t.node and t.node in excluded_nodes and not _is_integer(t.dtype)]
    weights = [t for t in all_weights if t not in kept]
    by_dtype: dict[str, dict] = {}
    by_op: dict[str, dict] = {}
    for t in weights:
        d = by_dtype.setdefault(t.dtype, {"tensors": 0, "elements": 0, "bytes": 0})
        d["tensors"] += 1
        d["elements"] += t.elements
        d["bytes"] += t.nbytes
        o = by_op.setdefault(t.op_type, {"quantized": 0, "float": 0})
        o["quantized" if _is_integer(t.dtype) else "float"] += 1
    quantized = [t for t in weights if _is_integer(t.dtype)]
    q_elems = sum(t.elements for t in quantized)
    total_elems = sum(t.elements for t in weights) or 1
    if requested is None or requested.startswith("fp") or requested == "float":
        status = "not_requested"
    elif not quantized:
        status = "none"
    elif len(quantized) == len(weights):
        status = "full"
    else:
        status = "partial"
    float_left = sorted((t for t in weights if not _is_integer(t.dtype)), key=lambda t: -t.elements)
    return {
        "requested": requested or "float",
        "status": status,
        "allowed_partial": allow_partial,
        "weight_tensors": len(weights),
        "quantized_tensors": len(quantized),
        "quantized_share": round(q_elems / total_elems, 6),
        "by_dtype": dict(sorted(by_dtype.items())),
        "by_op": dict(sorted(by_op.items())),
        "float_left": [{"name": t.name, "op": t.op_type, "dtype": t.dtype, "elements": t.elements} for t in float_left[:20]],
        "kept_float": [{"name": t.name, "op": t.op_type, "node": t.node, "elements": t.elements} for t in kept],
    }


def audit_problem(audit: dict) -> str | None:
    """A failure message when integer weights were asked for and not (fully) delivered."""
    status = audit.get("status")
    if audit.get("allowed_partial"):
        return None
    if status == "none":
        return (f"the quantizer reported success but no weight is stored as {audit['requested']} "
                f"({audit['weight_tensors']} weight tensors stayed float); check that weights are initializers, "
                f"not Constant nodes or subgraph values (or set 'allow_partial: true' to ship it anyway)")
    if status == "partial" and not audit.get("allowed_partial"):
        left = ", ".join(f"{t['name']} ({t['op']})" for t in audit["float_left"][:5])
        return (f"only {audit['quantized_tensors']} of {audit['weight_tensors']} weight tensors were quantized; "
                f"float: {left}; set 'allow_partial: true' in the recipe's quantize block to accept this")
    return None
