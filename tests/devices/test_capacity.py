"""The capacity estimate: roofline + per-inference overhead + thermal factor + concurrency, calibrated."""
from __future__ import annotations

import math

import pytest

from mbuild.devices import get_device
from mbuild.devices.calibration import calibration_rows, median_ratio
from mbuild.devices.capacity import (
    DEFAULT_ASSUMPTIONS,
    MEMORY_EFFICIENCY,
    OVERHEAD_MS,
    describe,
    estimate,
    merge_assumptions,
)
from mbuild.errors import MbuildError


def test_roofline_takes_the_larger_term_and_adds_the_overhead():
    device = get_device("iphone-12")                        # ANE 11 TOPS, 34.1 GB/s
    a = {"efficiency": {"ane": 0.25}, "derating": 0.5, "fps": 30}
    compute_bound = estimate(2.2e9, device, "ane", a, "fp16", bytes_moved=1e6)
    # 2.2e9 / (11e12 * 0.25) = 0.8 ms compute; 1e6 / (34.1e9 * 0.6) = 0.049 ms memory; + 0.5 ms overhead
    assert compute_bound["compute_ms"] == pytest.approx(0.8)
    assert compute_bound["memory_ms"] == pytest.approx(1e6 / (34.1e9 * MEMORY_EFFICIENCY) * 1000, abs=1e-6)
    assert compute_bound["bound"] == "compute"
    assert compute_bound["latency_ms"] == pytest.approx(0.8 + OVERHEAD_MS["ane"])
    memory_bound = estimate(2.2e9, device, "ane", a, "fp16", bytes_moved=200e6)
    assert memory_bound["bound"] == "memory"
    assert memory_bound["latency_ms"] == pytest.approx(200e6 / (34.1e9 * 0.6) * 1000 + OVERHEAD_MS["ane"])
    tiny = estimate(1e5, device, "ane", a, "fp16", bytes_moved=1e5)
    assert tiny["bound"] == "overhead" and tiny["latency_ms"] >= OVERHEAD_MS["ane"]   # a floor, never 0.002 ms


def test_thermal_factor_and_concurrency():
    device = get_device("iphone-11")                        # sourced stress-test stability 0.71
    est = estimate(1.1e9, device, "gpu", precision="fp16", bytes_moved=2e7)
    assert est["sustained_ratio"] == 0.71 and "nanoreview" in est["sustained_basis"]
    assert est["sustained_latency_ms"] == pytest.approx(est["latency_ms"] / 0.71)
    assert est["networks_per_frame"] == math.floor((1000 / 30) / est["latency_ms"])
    assert est["networks_per_frame_sustained"] == math.floor((1000 / 30) / est["sustained_latency_ms"])
    unknown = estimate(1.1e9, get_device("iphone-16"), "gpu", {"derating": 0.6}, "fp16", bytes_moved=2e7)
    assert unknown["sustained_ratio"] == 0.6 and "assumption" in unknown["sustained_basis"]


def test_iphone_7_estimates_come_with_their_assumptions():
    """AC2: iPhone 7 (A10) - no Neural Engine; the GPU and CPU estimates state every assumption."""
    iphone7 = get_device("iphone-7")
    assert estimate(1e9, iphone7, "ane")["reason"].endswith("has no Neural Engine usable by Core ML")
    gpu = estimate(1137480704, iphone7, "gpu", precision="fp16", bytes_moved=16927904 + 3211264)
    text = describe(gpu)
    for needle in ("an estimate, not a measurement", "gpu_gflops_fp32 = 115.0", "x0.4 efficiency",
                   "mem_bandwidth_gbs = 14.9", "ms fixed overhead per inference (assumption)",
                   "derating = 0.7 (assumption", "networks per 33.3 ms frame"):
        assert needle in text, needle
    cpu = estimate(1137480704, iphone7, "cpu", bytes_moved=16927904 + 6422528)
    assert "2 fastest cores of cpu_clusters = [[2, 2.34]]" in cpu["peak_basis"]
    assert "16 FLOP/cycle (assumption)" in cpu["peak_basis"]


def test_calibration_median_within_2x_of_published_latencies():
    rows = calibration_rows()
    known = [r for r in rows if r["ratio"] is not None]
    assert len(known) >= 10
    assert 0.5 <= median_ratio(rows) <= 2.0
    assert all(r["source"].startswith("https://") for r in rows)
    assert {r["device"] for r in known} >= {"iphone-7", "pixel-4", "iphone-xs"}


def test_missing_figure_gives_a_reason_not_a_number():
    est = estimate(1e9, get_device("redmi-note-12-pro"), "gpu")
    assert est["latency_ms"] is None and "GPU GFLOPS unknown" in est["reason"]


def test_capacity_defaults_match_the_manifest_defaults():
    assert merge_assumptions() == DEFAULT_ASSUMPTIONS


def test_capacity_rejects_bad_assumptions():
    with pytest.raises(MbuildError, match="derating"):
        merge_assumptions({"derating": 1.5})


def test_estimate_cli_prints_the_iphone_7_estimate_for_the_bench_mobilenet_with_assumptions():
    from tests.conftest import run_mbuild

    proc = run_mbuild("estimate", "iphone-7", "--workload", "bench_mobilenet_v2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("iPhone 7 (Apple A10 Fusion): the bench MobileNetV2")
    assert "has no Neural Engine usable by Core ML" in out
    assert out.count("an estimate, not a measurement") == 2            # cpu and gpu
    assert "such networks per 33.3 ms frame cool" in out and "hot" in out
