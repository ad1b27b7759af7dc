"""What an ExecuTorch program runs in a delegate and what falls back to portable kernels.

Without a partitioner (or for ops the partitioner refuses) nothing fails: the program runs on
ExecuTorch's portable kernels, reference implementations about 100x slower than XNNPACK. Counting
``executorch_call_delegate`` calls against the kernels left outside them is the only way to know.
"""
from __future__ import annotations

from pathlib import Path

from mbuild.targets.base import LintResult

PORTABLE_SHARE_FLAG = 0.5  # flag when more than half of the estimated compute runs on portable kernels
# Bookkeeping nodes that are no kernel call of their own.
NOT_OPS = {"getitem", "executorch_call_delegate", "alloc"}
QDQ = ("quantized_decomposed.quantize", "quantized_decomposed.dequantize")


def op_type(target) -> str:
    """'aten.cumsum' for any overload of an ATen/edge op (the overload says nothing about the kernel)."""
    name = getattr(target, "name", None)
    text = str(name()) if callable(name) else str(getattr(target, "__name__", target))
    text = text.replace("::", ".")
    parts = text.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else text


def op_cost(node) -> int:
    """Multiply-accumulates of a conv / matmul node, output elements for anything else (an estimate)."""
    val = node.meta.get("val")
    out = int(val.numel()) if hasattr(val, "numel") else 1
    kind = op_type(node.target).split(".")[-1]
    args = [a.meta.get("val") if hasattr(a, "meta") else None for a in node.args[:3]]
    try:
        if kind in ("convolution", "conv2d", "conv1d") and args[1] is not None:
            return out * int(args[1][0].numel())  # per output element: Cin/groups x kh x kw
        if kind == "linear" and args[1] is not None:
            return out * int(args[1].shape[-1])
        if kind in ("mm", "bmm", "matmul") and args[0] is not None:
            return out * int(args[0].shape[-1])
        if kind == "addmm" and args[1] is not None:
            return out * int(args[1].shape[-1])
    except (AttributeError, IndexError, TypeError):
        pass
    return max(out, 1)


def _is_op(node) -> bool:
    return (node.op == "call_function" and op_type(node.target) not in NOT_OPS
            and getattr(node.target, "__name__", "") not in NOT_OPS)


def _ops(graph) -> list:
    return [n for n in graph.nodes if _is_op(n)]


def summarize(program) -> dict:
    """Delegated vs portable ops of a lowered (edge) program, counted and weighed by estimated compute."""
    module = program.graph_module
    delegates: list[dict] = []
    portable: dict[str, dict] = {}
    delegated_cost = portable_cost = 0
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        if getattr(node.target, "__name__", "") == "executorch_call_delegate":
            lowered = getattr(module, node.args[0].target)
            # quantize/dequantize pairs inside a delegate are folded into its integer kernels: not ops of their own
            inner = [n for n in _ops(lowered.original_module.graph) if not op_type(n.target).startswith(QDQ)]
            cost = sum(op_cost(n) for n in inner)
            delegated_cost += cost
            types: dict[str, int] = {}
            for n in inner:
                types[op_type(n.target)] = types.get(op_type(n.target), 0) + 1
            delegates.append({"backend": lowered.backend_id, "ops": len(inner), "op_types": dict(sorted(types.items())),
                              "cost": cost})
        elif _is_op(node):
            entry = portable.setdefault(op_type(node.target), {"count": 0, "cost": 0, "nodes": []})
            entry["count"] += 1
            cost = op_cost(node)
            entry["cost"] += cost
            entry["nodes"].append(node.name)
            portable_cost += cost
    total = delegated_cost + portable_cost
    delegated_ops = sum(d["ops"] for d in delegates)
    portable_ops = sum(p["count"] for p in portable.values())
    return {"delegates": delegates, "delegated_ops": delegated_ops, "portable_ops": portable_ops,
            "portable": dict(sorted(portable.items())),
            "portable_cost_share": round(portable_cost / total, 4) if total else 0.0,
            "cost_unit": "multiply-accumulates for conv/matmul ops, output elements for the others (estimate)"}


def read_pte(path: Path) -> dict:
    """What the ``.pte`` itself executes: its delegate calls (by backend) and its portable kernel calls."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from mbuild.targets.executorch.quiet import quiet

    with quiet():
        parsed = deserialize_pte_binary(Path(path).read_bytes())
    program = getattr(parsed, "program", parsed)
    plan = program.execution_plan[0]
    kernels: dict[str, int] = {}
    delegate_calls: dict[str, int] = {}
    for chain in plan.chains:
        for instruction in chain.instructions:
            args = instruction.instr_args
            if type(args).__name__ == "KernelCall":
                name = plan.operators[args.op_index].name.replace("::", ".")
                kernels[name] = kernels.get(name, 0) + 1
            elif type(args).__name__ == "DelegateCall":
                backend = plan.delegates[args.delegate_index].id
                delegate_calls[backend] = delegate_calls.get(backend, 0) + 1
    return {"kernel_calls": dict(sorted(kernels.items())), "delegate_calls": dict(sorted(delegate_calls.items()))}


def delegation_lint(artifact: Path, summary: dict | None, partitioner: str) -> LintResult:
    """The delegation report: read from the ``.pte`` (what runs), weighed with the lowering's summary."""
    shipped = read_pte(artifact)
    kernels, calls = shipped["kernel_calls"], shipped["delegate_calls"]
    details: dict = {"partitioner": partitioner, "delegate_calls": calls, "portable_kernel_calls": kernels,
                     "tool": "executorch.exir (to_edge_transform_and_lower, .pte instructions)"}
    portable_ops = sum(kernels.values())
    if summary:
        delegated_ops = summary["delegated_ops"]
        share = summary["portable_cost_share"]
        details.update({"delegated_ops": delegated_ops, "portable_ops": summary["portable_ops"],
                        "portable_compute_share": share, "cost_unit": summary["cost_unit"],
                        "delegates": summary["delegates"]})
        if summary.get("kept_off_delegate"):  # taken by the partitioner's op list, but not lowerable (lower.py)
            details["kept_off_delegate"] = summary["kept_off_delegate"]
        offenders = [{"op": op, "name": ", ".join(p["nodes"][:5]), "count": p["count"],
                      "reason": f"not taken by the {partitioner} partitioner: runs on ExecuTorch's portable kernels"}
                     for op, p in summary["portable"].items()]
    else:  # a .pte we did not lower: op counts inside delegates are unknown; flag on calls alone
        delegated_ops = None
        share = 1.0 if portable_ops and not calls else (0.0 if not portable_ops else None)
        offenders = [{"op": op, "count": n, "reason": "runs on ExecuTorch's portable kernels"}
                     for op, n in kernels.items()]
    total = (delegated_ops or 0) + portable_ops
    coverage = round(delegated_ops / total, 4) if delegated_ops is not None and total else None
    if not calls:
        verdict = "unsupported"
    elif portable_ops:
        verdict = "partial"
    else:
        verdict = "clean"
    if share is not None and share > PORTABLE_SHARE_FLAG:
        details["flag"] = (f"most of the compute ({share:.0%}, estimated) runs on ExecuTorch's portable kernels, "
                           f"not in the {partitioner} delegate: expect it to run far slower (portable kernels are "
                           f"reference implementations, ~100x slower than XNNPACK); portable ops: "
                           f"{', '.join(kernels) or 'none'}")
    return LintResult(name=f"executorch_{partitioner}", kind="analyzer", verdict=verdict, coverage=coverage,
                      ops_total=total, offenders=offenders, details=details)
