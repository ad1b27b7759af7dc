"""A second run of a variant (another consumer, other device settings), judged like the check itself.

Same metrics, same tolerance, against the same source reference; the verdict is its own and is
recorded beside the check's (``also_checked`` in the report), never instead of it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from mbuild.targets.base import BuildContext


def judge(ctx: "BuildContext", outputs: dict[str, "np.ndarray"]) -> dict:
    """status (passed/failed), metrics and failures of ``outputs`` (the first samples of the validation set)."""
    from mbuild.recipes import tolerance_for
    from mbuild.sources.data import read_labels
    from mbuild.validate import check_tolerance, compare_outputs

    count = len(next(iter(outputs.values())))
    reference = {n: r[:count] for n, r in ctx.reference_outputs().items()}
    labels = read_labels(ctx.source_dir / "data" / "validation.npz")
    labels = labels[:count] if labels is not None else None
    shaped = {}
    for name, ref in reference.items():
        out = outputs[name]
        if out.size != ref.size:
            return {"status": "failed", "reason": f"output {name!r} has shape {list(out.shape[1:])} per sample, "
                                                  f"the reference {list(ref.shape[1:])}", "metrics": {}, "failures": []}
        shaped[name] = out.reshape(ref.shape).astype(ref.dtype, copy=False)
    metrics = compare_outputs(reference, shaped, ctx.manifest.outputs, labels)
    failures, notes = check_tolerance(metrics, tolerance_for(ctx.manifest, ctx.target, ctx.recipe))
    result = {"status": "failed" if failures else "passed", "metrics": metrics, "failures": failures}
    if notes:
        result["notes"] = notes
    return result
