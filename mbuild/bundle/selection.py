"""The selection rules stored in bundle.json: an order of variants and a fallback that always matches."""
from __future__ import annotations

SELECTION_ALGORITHM = (
    "1. Walk 'order' from first to last. "
    "2. For each variant id, look up its entry in 'variants' and test every key of its 'requirements' against the "
    "device: platform equal ('any' matches every device); OS version >= min_os and <= max_os (iOS); API level >= "
    "min_api and <= max_api (Android); the accelerator present and usable (ane: a Neural Engine Core ML can use; "
    "nnapi: NNAPI available at the device's API level; gpu: a GPU; cpu: always); RAM >= ram_mb_min. "
    "3. The first variant whose requirements all hold is the one to load. "
    "4. If none holds, load 'fallback', which has no requirements beyond a CPU."
)


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
    try:
        from mbuild.bundle.select import SELECTION_ALGORITHM as algorithm
    except ImportError:
        algorithm = SELECTION_ALGORITHM
    return {"order": order, "fallback": fallback, "algorithm": algorithm}
