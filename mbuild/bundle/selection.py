"""The selection rules stored in bundle.json: an order of variants and a fallback that always matches."""
from __future__ import annotations

from mbuild.bundle.select import SELECTION_ALGORITHM


def selection_rules(manifest, variants: list[dict]) -> dict:
    ids = [v["id"] for v in variants]
    order = [t for t in manifest.select_order if t in ids] or list(ids)
    for i in ids:
        if i not in order:
            order.append(i)
    fallback = manifest.fallback if manifest.fallback in ids else None
    if fallback is None:
        cpu = [v["id"] for v in variants if v["runtime"] == "onnxruntime"]
        fallback = cpu[-1] if cpu else (order[-1] if order else None)
    return {"order": order, "fallback": fallback, "algorithm": SELECTION_ALGORITHM}
