"""The selection rules stored in bundle.json: an order of variants and a fallback that always matches.

With ``select.order`` the manifest's order is used as written (targets left out of it are never chosen,
except as the fallback; ``mbuild validate`` warns about them). Without it, accelerated platform-specific
variants come first (Neural Engine, NNAPI, GPU), then platform-specific CPU ones, then ``platform: any``,
keeping the manifest's order within each rank — so an iPhone no longer gets ``cpu-fp32`` just because it
was written first.
"""
from __future__ import annotations

from mbuild.bundle.select import SELECTION_ALGORITHM

__all__ = ["selection_rules", "default_order", "target_soc_rules", "always_matches", "selection_warnings"]

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


def always_matches(requirements: dict) -> bool:
    """True when no device can fail these requirements (RAM aside: it is set from the built size)."""
    req = requirements or {}
    return ((req.get("platform") or "any") == "any" and (req.get("accelerator") or "cpu") == "cpu"
            and all(req.get(k) is None for k in ("min_os", "max_os", "min_api", "max_api"))
            and not req.get("soc_allow"))


def manifest_requirements(manifest) -> dict[str, dict]:
    """Each target's device requirements as the bundle will state them, without building anything."""
    from mbuild.targets import get_runtime

    return {name: {**get_runtime(t.runtime).requirements(manifest, t), **target_soc_rules(manifest, name)}
            for name, t in manifest.targets.items()}


def selection_warnings(manifest) -> list[str]:
    """What ``mbuild validate`` warns about the selection: unreachable targets, a fallback that may not
    match, targets left out of ``select.order``. Each message names the place in the manifest."""
    reqs = manifest_requirements(manifest)
    given = bool(manifest.select_order)
    order = list(manifest.select_order) if given else default_order(
        [{"id": n, "requirements": r} for n, r in reqs.items()])
    fallback = manifest.fallback or next((n for n, t in reversed(list(manifest.targets.items()))
                                          if t.runtime == "onnxruntime"), None)
    pos = manifest.positions

    def at(*path) -> str:
        loc = pos.of(path)
        return f"{loc}: " if loc else ""

    out: list[str] = []
    catch_all = next((n for n in order if always_matches(reqs[n])), None)
    if catch_all is not None:
        after = order[order.index(catch_all) + 1:]
        unreachable = [n for n in after if n != fallback]
        if unreachable:
            where = at("select", "order") if given else at("targets")
            out.append(f"{where}select.order: {', '.join(unreachable)} can never be chosen: "
                       f"{catch_all!r} comes first and matches every device; move it to the end")
    if fallback is None:
        out.append(f"{at('targets')}select.fallback: no onnxruntime target to fall back on; a device that "
                   f"matches nothing has no variant; add a platform-any CPU target and name it in select.fallback")
    elif not always_matches(reqs[fallback]):
        req = reqs[fallback]
        needs = ", ".join(f"{k}={v}" for k, v in req.items() if v is not None and k not in ("ram_mb_min",)
                          and not (k == "accelerator" and v == "cpu"))
        out.append(f"{at('select', 'fallback')}select.fallback: {fallback!r} does not match every device "
                   f"({needs}); the fallback must always match: name a platform-any CPU (onnxruntime) target")
    if given:
        missing = [n for n in manifest.targets if n not in order and n != fallback]
        if missing:
            out.append(f"{at('select', 'order')}select.order: leaves out {', '.join(missing)}; "
                       f"{'it is' if len(missing) == 1 else 'they are'} built and shipped but never chosen; "
                       f"list {'it' if len(missing) == 1 else 'them'} or drop the target")
    return out
