"""The ANE lint: a static estimate of which ops of an ML Program the Neural Engine will not run.

Apple documents no op list for the Neural Engine, so the rules live in ``data/ane_rules.yaml``,
each with its source and confidence. The result is labelled a static estimate; on macOS
:func:`compute_plan_lint` adds what Core ML's own compute plan says.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from mbuild.targets.base import LintResult
from mbuild.targets.coreml.mil import CONST_OPS, Op, Program

RULES_FILE = Path(__file__).parent / "data" / "ane_rules.yaml"
UNSUPPORTED_BELOW = 0.5  # coverage under which the verdict is 'unsupported'
_SPATIAL_KERNEL_OPS = {"conv", "conv_transpose"}


@lru_cache(maxsize=1)
def load_rules() -> tuple[dict, ...]:
    """The rule table (parsed once); every rule carries id, kind, reason, confidence and sources."""
    import yaml

    data = yaml.safe_load(RULES_FILE.read_text())
    return tuple(data["rules"])


def ane_lint(program: Program) -> LintResult:
    """Apply every rule to every compute op (constants and compressed weights are not ops that run)."""
    producers = program.producers()
    compute = [op for op in program.ops if op.type not in CONST_OPS and not op.type.startswith("constexpr_")]
    boundary = _boundary_casts(program, compute)
    offenders = []
    rule_hits: dict[str, int] = {}
    for op in compute:
        hits = [r for r in load_rules() if _matches(r, op, program, producers, boundary)]
        if not hits:
            continue
        for r in hits:
            rule_hits[r["id"]] = rule_hits.get(r["id"], 0) + 1
        offenders.append({"op": op.type, "name": op.name, "reason": "; ".join(r["reason"] for r in hits),
                          "rules": [r["id"] for r in hits],
                          "confidence": min((r["confidence"] for r in hits), key=_CONFIDENCE.index)})
    total = len(compute)
    coverage = round(1 - len(offenders) / total, 4) if total else None
    if not offenders:
        verdict = "clean"
    elif coverage is not None and coverage < UNSUPPORTED_BELOW:
        verdict = "unsupported"
    else:
        verdict = "partial"
    details = {
        "rules_file": "mbuild/targets/coreml/data/ane_rules.yaml",
        "rule_hits": dict(sorted(rule_hits.items())),
        "sources": {r["id"]: r["sources"] for r in load_rules() if r["id"] in rule_hits},
        "note": ("static estimate from documented/community-reported ANE limits; Core ML decides placement at "
                 "load time per device and OS - confirm with Xcode's performance report or MLComputePlan"),
        "flexible_inputs": program.flexible_inputs,
    }
    return LintResult(name="ane", kind="static estimate", verdict=verdict, coverage=coverage, ops_total=total,
                      offenders=offenders, details=details)


_CONFIDENCE = ["low", "medium", "high"]


def _boundary_casts(program: Program, compute: list[Op]) -> set[str]:
    """Casts that only convert model inputs/outputs between fp32 I/O and fp16 compute."""
    inputs, outputs = set(program.inputs), set(program.outputs)
    names = set()
    for op in compute:
        if op.type != "cast":
            continue
        if any(n in inputs for n in op.inputs.get("x", ())) or any(t.name in outputs for t in op.outputs):
            names.add(op.name)
    return names


def _matches(rule: dict, op: Op, program: Program, producers: dict[str, Op], boundary: set[str]) -> bool:
    kind = rule["kind"]
    if kind == "op_type":
        return op.type in rule["ops"]
    if kind == "conv_dilation":
        return op.type in rule["ops"] and any(v > 1 for v in _const_ints(op, "dilations", producers))
    if kind == "kernel_max":
        return op.type in rule["ops"] and any(k > rule["limit"] for k in _kernel(op, producers))
    if kind == "dim_max":
        return any(d is not None and d > rule["limit"] for t in op.outputs for d in t.shape)
    if kind == "dtype":
        return op.name not in boundary and any(t.dtype in rule["dtypes"] for t in op.outputs)
    if kind == "dynamic_shape":
        if any(v == "enumerated" for v in program.flexible_inputs.values()):
            return False  # enumerated shapes are compiled per shape; Apple recommends them
        return any(t.dtype and not t.static for t in op.outputs)
    raise ValueError(f"unknown ANE rule kind {kind!r} in {RULES_FILE.name}")


def _const_ints(op: Op, arg: str, producers: dict[str, Op]) -> list[int]:
    out: list[int] = []
    for name in op.inputs.get(arg, ()):
        src = producers.get(name)
        if src is not None and src.value is not None:
            out.extend(int(v) for v in src.value)
    return out


def _kernel(op: Op, producers: dict[str, Op]) -> list[int]:
    """Spatial kernel sizes: from the weight shape for convolutions, from kernel_sizes for pooling."""
    if op.type in _SPATIAL_KERNEL_OPS:
        for name in op.inputs.get("weight", ()):
            src = producers.get(name)
            if src is not None and src.outputs:
                return [d for d in src.outputs[0].shape[2:] if d is not None]
        return []
    return _const_ints(op, "kernel_sizes", producers)


def compute_plan_lint(package: Path, compute_units: str) -> LintResult:
    """What Core ML itself plans to run on the Neural Engine (macOS only; measured on this Mac)."""
    import tempfile

    import coremltools as ct
    from coremltools.models.compute_device import MLNeuralEngineComputeDevice
    from coremltools.models.compute_plan import MLComputePlan

    from mbuild.targets.coreml.convert import compute_unit

    with tempfile.TemporaryDirectory() as tmp:
        compiled = ct.utils.compile_model(str(package), str(Path(tmp) / "model.mlmodelc"))
        plan = MLComputePlan.load_from_path(path=compiled, compute_units=compute_unit(compute_units))
        fn = plan.model_structure.program.functions["main"]
        offenders, total = [], 0
        for op in _flat_ops(fn.block):
            if op.operator_name in CONST_OPS or op.operator_name.startswith("constexpr_"):
                continue
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            if usage is None:
                continue
            total += 1
            if not isinstance(usage.preferred_compute_device, MLNeuralEngineComputeDevice):
                offenders.append({"op": op.operator_name, "name": op.outputs[0].name if op.outputs else "",
                                  "reason": f"planned on {type(usage.preferred_compute_device).__name__}"})
    coverage = round(1 - len(offenders) / total, 4) if total else None
    verdict = "clean" if not offenders else ("unsupported" if (coverage or 0) < UNSUPPORTED_BELOW else "partial")
    return LintResult(name="ane_compute_plan", kind="analyzer", verdict=verdict, coverage=coverage, ops_total=total,
                      offenders=offenders, details={"tool": f"coremltools.models.compute_plan {ct.__version__}"})


def _flat_ops(block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _flat_ops(inner)


def summarize(result: LintResult) -> str:
    """One line for logs and warnings."""
    if result.coverage is None:
        return f"{result.name}: no ops"
    names = ", ".join(f"{o['op']} {o['name']}" for o in result.offenders[:5])
    more = f" (+{len(result.offenders) - 5} more)" if len(result.offenders) > 5 else ""
    return (f"{result.name} ({result.kind}): {math.floor(result.coverage * 1000) / 10}% of {result.ops_total} ops "
            f"expected on the ANE" + (f"; offenders: {names}{more}" if names else ""))
