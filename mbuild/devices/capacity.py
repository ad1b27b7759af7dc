"""Back-of-the-envelope capacity estimate: how fast a network of N FLOPs roughly runs on a device.

This is the estimate ML engineers do by hand, written down once so every bundle states it the same
way — and always labelled ``"kind": "estimate"``, never as a measurement::

    latency_s          = flops / (peak_flops_per_s * efficiency[accelerator] * derating)
    latency_ms         = 1000 * latency_s
    fps                = 1000 / latency_ms
    networks_per_frame = floor((1000 / fps_budget) / latency_ms)

``efficiency`` is the share of the vendor's peak a real network reaches on that accelerator;
``derating`` is sustained/peak throughput once the phone is warm (0 < derating <= 1). Peaks:

* ``ane``   -> ``ane.tops`` x 1e12: the Neural Engine operations/s as Apple quotes them (Apple does
  not state the precision with every figure; treat it as an upper bound).
* ``gpu``   -> ``gpu_gflops_fp16`` x 1e9 for fp16 variants, else ``gpu_gflops_fp32`` x 1e9.
* ``cpu``   -> ``cpu_gflops_fp32`` x 1e9.
* ``nnapi`` -> ``npu.tops`` x 1e12 when known, else the GPU fp16 peak, else unknown.

When the device lacks the figure the estimate has ``latency_ms: None`` and a ``reason``.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

from mbuild.errors import MbuildError
from mbuild.manifest.model import DEFAULT_CAPACITY

__all__ = ["DEFAULT_ASSUMPTIONS", "FORMULA", "merge_assumptions", "peak_flops_per_s", "estimate", "estimate_variant"]

DEFAULT_ASSUMPTIONS: dict = copy.deepcopy(DEFAULT_CAPACITY)
FORMULA = ("latency_ms = 1000 * flops / (peak_flops_per_s * efficiency[accelerator] * derating); "
           "fps = 1000 / latency_ms; networks_per_frame = floor((1000 / fps_budget) / latency_ms)")
ACCELERATORS = ("cpu", "gpu", "ane", "nnapi")
FP16_PRECISIONS = {"fp16", "float16", "half"}


def merge_assumptions(assumptions: dict | None = None) -> dict:
    """Defaults overlaid with the manifest's ``capacity:`` block, checked so estimates stay meaningful."""
    merged = copy.deepcopy(DEFAULT_ASSUMPTIONS)
    for key, value in (assumptions or {}).items():
        if key == "efficiency":
            merged["efficiency"].update(value or {})
        elif key in merged:
            merged[key] = value
        else:
            raise MbuildError(f"capacity assumption {key!r} is unknown; expected efficiency, derating or fps")
    for acc, eff in merged["efficiency"].items():
        if not 0 < float(eff) <= 1:
            raise MbuildError(f"capacity.efficiency.{acc} = {eff} must be in (0, 1]")
    if not 0 < float(merged["derating"]) <= 1:
        raise MbuildError(f"capacity.derating = {merged['derating']} must be in (0, 1] (sustained / peak)")
    if not float(merged["fps"]) > 0:
        raise MbuildError(f"capacity.fps = {merged['fps']} must be > 0")
    return merged


def peak_flops_per_s(device, accelerator: str, precision: str = "fp32") -> tuple[float | None, str, str]:
    """(peak FLOP/s or None, which figure it came from, why it is missing) for one accelerator."""
    def fig(name: str, scale: float) -> tuple[float | None, str]:
        value = device.value(name)
        if value is None:
            return None, ""
        source = device.figure(name).source
        return float(value) * scale, f"{name} = {value} ({source})"

    if accelerator == "ane":
        if device.value("ane_usable_by_coreml") is False or device.value("ane_present") is False:
            return None, "", f"{device.label} has no Neural Engine usable by Core ML"
        peak, basis = fig("ane_tops", 1e12)
        return peak, basis, "" if peak else "Neural Engine TOPS unknown in the device database"
    if accelerator == "gpu":
        if precision in FP16_PRECISIONS:
            peak, basis = fig("gpu_gflops_fp16", 1e9)
            if peak:
                return peak, basis, ""
        peak, basis = fig("gpu_gflops_fp32", 1e9)
        return peak, basis, "" if peak else "GPU GFLOPS unknown in the device database"
    if accelerator == "cpu":
        peak, basis = fig("cpu_gflops_fp32", 1e9)
        return peak, basis, "" if peak else "CPU GFLOPS unknown in the device database"
    if accelerator == "nnapi":
        for name, scale in (("npu_tops", 1e12), ("gpu_gflops_fp16", 1e9)):
            peak, basis = fig(name, scale)
            if peak:
                return peak, basis, ""
        return None, "", "neither NPU TOPS nor GPU fp16 GFLOPS known in the device database"
    raise MbuildError(f"unknown accelerator {accelerator!r}; expected one of {ACCELERATORS}")


def estimate(flops: float, device, accelerator: str, assumptions: dict | None = None,
             precision: str = "fp32") -> dict[str, Any]:
    """One device/accelerator estimate; echoes the assumptions so the number is never mistaken for a measurement."""
    used = merge_assumptions(assumptions)
    efficiency = float(used["efficiency"][accelerator]) if accelerator in used["efficiency"] else None
    result: dict[str, Any] = {
        "kind": "estimate", "device": device.id, "accelerator": accelerator, "precision": precision,
        "flops": flops, "formula": FORMULA,
        "assumptions": {"efficiency": efficiency, "derating": float(used["derating"]), "fps": float(used["fps"])},
        "peak_flops_per_s": None, "peak_basis": None,
        "latency_ms": None, "fps": None, "networks_per_frame": None, "reason": None,
    }
    if efficiency is None:
        raise MbuildError(f"no efficiency assumption for accelerator {accelerator!r}")
    peak, basis, missing = peak_flops_per_s(device, accelerator, precision)
    if not peak:
        result["reason"] = missing
        return result
    if not flops or flops <= 0:
        result["reason"] = "the variant states no FLOP count"
        return result
    latency_ms = 1000.0 * float(flops) / (peak * efficiency * float(used["derating"]))
    budget_ms = 1000.0 / float(used["fps"])
    result.update(peak_flops_per_s=peak, peak_basis=basis, latency_ms=round(latency_ms, 6),
                  fps=round(1000.0 / latency_ms, 3), networks_per_frame=math.floor(budget_ms / latency_ms))
    return result


def estimate_variant(variant: dict, devices: Iterable, assumptions: dict | None = None) -> dict[str, dict]:
    """Estimates for every device the variant's requirements allow, keyed by device id (sorted).

    Reads ``variant["flops"]``, ``variant["requirements"]`` (platform, OS/API range, accelerator, RAM,
    SoC lists) and optionally ``variant["precision"]`` ("fp16" picks the GPU fp16 peak). Each device is
    judged at the newest OS the database knows for it.
    """
    from mbuild.bundle.select import check_requirements, device_properties

    req = variant.get("requirements") or {}
    accelerator = req.get("accelerator") or "cpu"
    precision = str(variant.get("precision") or "fp32").lower()
    out: dict[str, dict] = {}
    for device in sorted(devices, key=lambda d: d.id):
        if check_requirements(req, device_properties(device)):
            continue
        out[device.id] = estimate(variant.get("flops") or 0, device, accelerator, assumptions, precision)
    return out
