"""Capacity estimate: a roofline with a per-inference floor, a thermal factor and concurrency.

An estimate, always labelled ``"kind": "estimate"`` and never shown as a measurement::

    compute_ms   = flops / (peak_flops_per_s[accelerator] * efficiency[accelerator])
    memory_ms    = bytes_moved / (memory_bandwidth * memory_efficiency)
    latency_ms   = max(compute_ms, memory_ms) + overhead_ms[accelerator]     # a cool phone
    sustained_ms = latency_ms / sustained_ratio                              # a hot phone
    networks_per_frame = floor(frame_ms / latency_ms), and the same with sustained_ms

``bytes_moved`` is the variant's weights plus its largest single-op activation set (``memory`` in
bundle.json), activations halved for fp16 variants: a lower bound on the real traffic. Peaks come from
the device database (every figure with its source); the constants below are assumptions, each labelled,
tuned on the published latencies in ``calibration.yaml`` (ratios in docs/devices.md).

* ``ane``   -> ``ane.tops`` x 1e12 (Apple's quoted operations/s; only where Core ML can use it)
* ``gpu``   -> ``gpu_gflops_fp16`` for fp16 variants when known, else ``gpu_gflops_fp32``
* ``cpu``   -> ``cpu_gflops_fp32`` when published, else the fastest ``cpu_threads`` cores of
  ``cpu_clusters`` x GHz x ``CPU_FLOP_PER_CYCLE``
* ``nnapi`` -> ``npu.tops`` when known, else the GPU peak (NNAPI hands the graph to a vendor driver)
* ``any``   -> (Core ML compute_units all) the Neural Engine where Core ML can use it, else the GPU, else the CPU

``sustained_ratio`` is the device's 3DMark stress-test stability when the database has it (sustained /
peak GPU throughput), else the ``derating`` assumption.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

from mbuild.errors import MbuildError
from mbuild.manifest.model import DEFAULT_CAPACITY

__all__ = ["DEFAULT_ASSUMPTIONS", "ASSUMPTIONS", "FORMULA", "merge_assumptions", "peak_flops_per_s",
           "bandwidth_bytes_per_s", "estimate", "estimate_variant", "resolve_accelerator", "variant_bytes_moved", "describe"]

DEFAULT_ASSUMPTIONS: dict = copy.deepcopy(DEFAULT_CAPACITY)
FORMULA = ("latency_ms = max(flops / (peak * efficiency), bytes / (bandwidth * memory_efficiency)) + overhead_ms; "
           "sustained_ms = latency_ms / sustained_ratio; networks_per_frame = floor(frame_ms / latency)")
ACCELERATORS = ("cpu", "gpu", "ane", "nnapi")
FP16_PRECISIONS = {"fp16", "float16", "half"}
# Fixed cost of one inference whatever its size (dispatch, synchronisation, copies in and out).
# Assumption, tuned on calibration.yaml; the small digits CNN is dominated by it.
OVERHEAD_MS = {"cpu": 0.05, "gpu": 1.0, "ane": 0.5, "nnapi": 1.5}
# Share of the peak DRAM bandwidth a network's streaming reads reach. Assumption.
MEMORY_EFFICIENCY = 0.6
# FP32 FLOPs per core per cycle: two 128-bit NEON/ASIMD FMA pipes (2 x 4 lanes x 2). Assumption for
# every core type; per-chip differences end up in the calibrated CPU efficiency.
CPU_FLOP_PER_CYCLE = 16
# Threads an app's CPU runtime uses: what the calibration's TFLite benchmarks used. Assumption.
CPU_THREADS = {"android": 4, "ios": 2}
ASSUMPTIONS = {
    "overhead_ms": OVERHEAD_MS, "memory_efficiency": MEMORY_EFFICIENCY, "cpu_flop_per_cycle": CPU_FLOP_PER_CYCLE,
    "cpu_threads": CPU_THREADS,
    "note": "assumptions, not measurements: efficiency and overhead_ms are tuned on mbuild/devices/calibration.yaml "
            "(published per-device latencies); see docs/devices.md for predicted/published ratios",
}


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


def _fig(device, name: str, scale: float) -> tuple[float | None, str]:
    value = device.value(name)
    if value is None:
        return None, ""
    return float(value) * scale, f"{name} = {value} ({device.figure(name).source})"


def _cpu_peak(device) -> tuple[float | None, str]:
    """Published CPU GFLOPS, else the fastest cores the runtime's threads use x clock x FLOP/cycle."""
    peak, basis = _fig(device, "cpu_gflops_fp32", 1e9)
    if peak:
        return peak, basis
    clusters = device.value("cpu_clusters")
    if not clusters:
        return None, ""
    threads = CPU_THREADS.get(device.platform, 4)
    ghz_total, left = 0.0, threads
    for count, ghz in sorted(clusters, key=lambda c: -float(c[1])):
        used = min(int(count), left)
        ghz_total += used * float(ghz)
        left -= used
        if not left:
            break
    source = device.figure("cpu_clusters").source
    return (ghz_total * 1e9 * CPU_FLOP_PER_CYCLE,
            f"{threads} fastest cores of cpu_clusters = {clusters} ({source}) x {CPU_FLOP_PER_CYCLE} FLOP/cycle (assumption)")


def peak_flops_per_s(device, accelerator: str, precision: str = "fp32") -> tuple[float | None, str, str]:
    """(peak FLOP/s or None, which figure it came from, why it is missing) for one accelerator."""
    if accelerator == "ane":
        if device.value("ane_usable_by_coreml") is False or device.value("ane_present") is False:
            return None, "", f"{device.label} has no Neural Engine usable by Core ML"
        peak, basis = _fig(device, "ane_tops", 1e12)
        return peak, basis, "" if peak else "Neural Engine TOPS unknown in the device database"
    if accelerator == "gpu":
        if precision in FP16_PRECISIONS:
            peak, basis = _fig(device, "gpu_gflops_fp16", 1e9)
            if peak:
                return peak, basis, ""
        peak, basis = _fig(device, "gpu_gflops_fp32", 1e9)
        return peak, basis, "" if peak else "GPU GFLOPS unknown in the device database"
    if accelerator == "cpu":
        peak, basis = _cpu_peak(device)
        return peak, basis, "" if peak else "neither CPU GFLOPS nor CPU cores and clocks known in the device database"
    if accelerator == "nnapi":
        for name, scale in (("npu_tops", 1e12), ("gpu_gflops_fp16", 1e9), ("gpu_gflops_fp32", 1e9)):
            peak, basis = _fig(device, name, scale)
            if peak:
                return peak, basis, ""
        return None, "", "neither NPU TOPS nor GPU GFLOPS known in the device database"
    raise MbuildError(f"unknown accelerator {accelerator!r}; expected one of {ACCELERATORS}")


def bandwidth_bytes_per_s(device) -> tuple[float | None, str]:
    """Peak DRAM bandwidth and the figure it came from (None when the database does not know it)."""
    return _fig(device, "mem_bandwidth_gbs", 1e9)


def _sustained(device, used: dict) -> tuple[float, str]:
    ratio = device.value("sustained_ratio")
    if ratio:
        return float(ratio), f"sustained_ratio = {ratio} ({device.figure('sustained_ratio').source})"
    return float(used["derating"]), f"derating = {used['derating']} (assumption: no stress-test figure for the device)"


def estimate(flops: float, device, accelerator: str, assumptions: dict | None = None,
             precision: str = "fp32", bytes_moved: float | None = None) -> dict[str, Any]:
    """One device/accelerator estimate; echoes every input so it is never mistaken for a measurement."""
    used = merge_assumptions(assumptions)
    if accelerator not in used["efficiency"]:
        raise MbuildError(f"no efficiency assumption for accelerator {accelerator!r}")
    efficiency = float(used["efficiency"][accelerator])
    overhead = OVERHEAD_MS[accelerator]
    result: dict[str, Any] = {
        "kind": "estimate", "device": device.id, "accelerator": accelerator, "precision": precision,
        "flops": flops, "bytes_moved": bytes_moved, "formula": FORMULA,
        "assumptions": {"efficiency": efficiency, "overhead_ms": overhead, "memory_efficiency": MEMORY_EFFICIENCY,
                        "derating": float(used["derating"]), "fps": float(used["fps"])},
        "peak_flops_per_s": None, "peak_basis": None, "bandwidth_bytes_per_s": None, "bandwidth_basis": None,
        "compute_ms": None, "memory_ms": None, "bound": None, "sustained_ratio": None, "sustained_basis": None,
        "latency_ms": None, "sustained_latency_ms": None, "fps": None,
        "networks_per_frame": None, "networks_per_frame_sustained": None, "reason": None,
    }
    peak, basis, missing = peak_flops_per_s(device, accelerator, precision)
    if not peak:
        result["reason"] = missing
        return result
    if not flops or flops <= 0:
        result["reason"] = "the variant states no FLOP count"
        return result
    compute_ms = 1000.0 * float(flops) / (peak * efficiency)
    bandwidth, bw_basis = bandwidth_bytes_per_s(device)
    memory_ms = (1000.0 * float(bytes_moved) / (bandwidth * MEMORY_EFFICIENCY)
                 if bandwidth and bytes_moved else None)
    roof = max(compute_ms, memory_ms or 0.0)
    latency_ms = roof + overhead
    bound = "overhead" if overhead > roof else ("memory" if memory_ms and memory_ms > compute_ms else "compute")
    ratio, ratio_basis = _sustained(device, used)
    sustained_ms = latency_ms / ratio
    frame_ms = 1000.0 / float(used["fps"])
    result.update(peak_flops_per_s=peak, peak_basis=basis, bandwidth_bytes_per_s=bandwidth,
                  bandwidth_basis=bw_basis or "memory bandwidth unknown in the device database: memory term left out",
                  compute_ms=round(compute_ms, 6), memory_ms=None if memory_ms is None else round(memory_ms, 6),
                  bound=bound, sustained_ratio=ratio, sustained_basis=ratio_basis,
                  latency_ms=round(latency_ms, 6), sustained_latency_ms=round(sustained_ms, 6),
                  fps=round(1000.0 / latency_ms, 3), networks_per_frame=math.floor(frame_ms / latency_ms),
                  networks_per_frame_sustained=math.floor(frame_ms / sustained_ms))
    return result


def variant_bytes_moved(variant: dict) -> float | None:
    """Weights plus the largest single-op activation set (halved for fp16), from bundle.json's memory."""
    memory = variant.get("memory") or {}
    weights = memory.get("weights_bytes", variant.get("size_bytes"))
    if weights is None:
        return None
    act = float(memory.get("peak_activation_bytes") or 0)
    if str(variant.get("precision") or "fp32").lower() in FP16_PRECISIONS:
        act *= 0.5
    return float(weights) + act


def estimate_variant(variant: dict, devices: Iterable, assumptions: dict | None = None) -> dict[str, dict]:
    """Estimates for every device the variant's requirements allow, keyed by device id (sorted).

    Reads ``variant["flops"]``, ``variant["requirements"]``, ``variant["precision"]`` and
    ``variant["memory"]``. Each device is judged at the newest OS the database knows for it.
    """
    from mbuild.bundle.select import check_requirements, device_properties

    req = variant.get("requirements") or {}
    requested = req.get("accelerator") or "cpu"
    precision = str(variant.get("precision") or "fp32").lower()
    moved = variant_bytes_moved(variant)
    out: dict[str, dict] = {}
    for device in sorted(devices, key=lambda d: d.id):
        props = device_properties(device)
        if check_requirements(req, props):
            continue
        accelerator = resolve_accelerator(requested, props)
        est = estimate(variant.get("flops") or 0, device, accelerator, assumptions, precision, moved)
        if accelerator != requested:
            est["accelerator_basis"] = ANY_BASIS
        out[device.id] = est
    return out


# Core ML with compute_units 'all' (accelerator 'any') places the model itself; the estimate assumes it
# takes the fastest unit the device offers Core ML. Assumption, labelled on every such estimate.
ANY_BASIS = ("accelerator 'any' (Core ML compute_units all): assumed the Neural Engine where Core ML can use it, "
             "else the GPU, else the CPU (assumption: Core ML decides per device)")


def resolve_accelerator(accelerator: str, props: dict) -> str:
    """The accelerator an estimate uses: 'any' becomes the fastest one the device offers (see ``ANY_BASIS``)."""
    if accelerator != "any":
        return accelerator
    if props.get("has_ane_coreml"):
        return "ane"
    return "gpu" if props.get("has_gpu") else "cpu"


def describe(est: dict) -> str:
    """One readable paragraph: the numbers, what bounds them and every assumption behind them."""
    if est.get("latency_ms") is None:
        return f"capacity estimate: unknown ({est.get('reason')})"
    a = est["assumptions"]
    frame = 1000.0 / a["fps"]
    if est.get("memory_ms") is not None:
        memory = f"memory {est['memory_ms']:.3f} ms ({est['bandwidth_basis']}, x{a['memory_efficiency']} efficiency)"
    elif est.get("bandwidth_bytes_per_s"):
        memory = "memory term left out (the variant states no bytes moved)"
    else:
        memory = est.get("bandwidth_basis") or "memory term left out"
    return (f"capacity estimate (an estimate, not a measurement) on {est['accelerator']}: "
            f"{est['latency_ms']:.3f} ms cool, {est['sustained_latency_ms']:.3f} ms hot "
            f"(x{1 / est['sustained_ratio']:.2f}; {est['sustained_basis']}); "
            f"{est['networks_per_frame']} such networks per {frame:.1f} ms frame cool, "
            f"{est['networks_per_frame_sustained']} hot.\n"
            f"  {est['bound']}-bound: compute {est['compute_ms']:.3f} ms ({est['flops']:,.0f} FLOPs at "
            f"{est['peak_basis']}, x{a['efficiency']} efficiency), {memory}, + {a['overhead_ms']} ms fixed "
            f"overhead per inference (assumption).\n  {FORMULA}")
