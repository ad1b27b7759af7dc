"""The selection rules stored in bundle.json: an order of variants and a fallback that always matches.

With ``select.order`` the manifest's order is used as written (targets left out of it are never chosen,
except as the fallback; ``mbuild validate`` warns about them). Without it, accelerated platform-specific
variants come first (Neural Engine, NNAPI, GPU), then platform-specific CPU ones, then ``platform: any``,
keeping the manifest's order within each rank — so an iPhone no longer gets ``cpu-fp32`` just because it
was written first.
"""
from __future__ import annotations

from mbuild.bundle.select import SELECTION_ALGORITHM

__all__ = ["selection_rules", "default_order", "target_soc_rules"]

# NNAPI before GPU: an NNAPI variant is the narrower one (API 27-34), so it must be tried first.
ACCELERATOR_RANK = {"ane": 0, "nnapi": 1, "gpu": 2, "cpu": 3}


def _rank(variant: dict) -> tuple[int, int]:
    req = variant.get("requirements") or {}
    platform_any = (req.get("platform") or "any") == "any"
    return (1 if platform_any else 0, ACCELERATOR_RANK.get(req.get("accelerator") or "cpu", 3))


def default_order(variants: list[dict]) -> list[str]:
    """Variant ids, accelerated and platform-specific first; a stable sort keeps the manifest's order in ties."""
    return [v["id"] for v in sorted(variants, key=_rank)]


def target_soc_rules(manifest, name: str) -> dict:
    """``soc_allow`` / ``soc_deny`` of a target (lower-cased), for the variant's requirements."""
    spec = (manifest.raw.get("targets") or {}).get(name) or {}
    return {key: [str(s).lower() for s in spec[key]] for key in ("soc_allow", "soc_deny") if spec.get(key)}


def selection_rules(manifest, variants: list[dict]) -> dict:
    ids = [v["id"] for v in variants]
    if manifest.select_order:
        order = [t for t in manifest.select_order if t in ids]
    else:
        order = default_order(variants)
    fallback = manifest.fallback if manifest.fallback in ids else None
    if fallback is None:
        cpu = [v["id"] for v in variants if v["runtime"] == "onnxruntime"]
        fallback = cpu[-1] if cpu else (order[-1] if order else None)
    return {"order": order, "fallback": fallback, "algorithm": SELECTION_ALGORITHM}
