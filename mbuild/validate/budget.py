"""Budgets as gates: size, host latency vs the fp32 sibling, accelerator coverage, estimated device latency.

A manifest-wide ``budget:`` applies to every target; a target's own ``budget:`` overrides it key by key::

    budget:
      size_mb_max: 2.0
      host_latency_ratio_max: 1.1          # variant median / fp32 sibling median, on the build host
      accelerator_coverage_min: 0.95       # share of ops the ANE / GPU delegate / NNAPI is expected to run
      estimated_latency_ms_max: {device_class: "iOS 2016-2018", ms: 5}   # or {device: iphone-7, ms: 5}
      mode: fail                           # or warn: report the broken budget and keep the variant

:func:`check_budget` is pure: a budget and the variant's numbers in, one failure dict per broken limit out,
each with a message holding the numbers. :func:`apply_budget` gathers those numbers for a check step.
"""
from __future__ import annotations

from typing import Any

__all__ = ["BUDGET_KEYS", "budget_for", "check_budget", "variant_numbers", "apply_budget"]

BUDGET_KEYS = ("size_mb_max", "host_latency_ratio_max", "accelerator_coverage_min", "estimated_latency_ms_max", "mode")
MIB = 1024 * 1024


def budget_for(manifest, target_name: str) -> dict:
    """The manifest-wide budget overlaid with the target's own (the target wins per key)."""
    raw = manifest.raw or {}
    merged = dict(raw.get("budget") or {})
    merged.update(((raw.get("targets") or {}).get(target_name) or {}).get("budget") or {})
    return merged


def check_budget(budget: dict, numbers: dict[str, Any]) -> list[dict]:
    """Every broken limit of ``budget`` given ``numbers`` (size_bytes, host_latency_ratio, coverage, estimates).

    ``numbers["estimates"]`` maps device id -> (device class, latency_ms or None). A number the build could
    not produce (no fp32 sibling, no coverage lint, no estimate for the class) is a failure too: a budget
    that cannot be checked is not met.
    """
    failures: list[dict] = []

    def fail(key: str, value, limit, message: str) -> None:
        failures.append({"metric": f"budget.{key}", "tolerance": key, "value": value, "limit": limit,
                         "message": f"budget: {message}"})

    if budget.get("size_mb_max") is not None:
        limit = float(budget["size_mb_max"])
        mb = numbers["size_bytes"] / MIB
        if mb > limit:
            fail("size_mb_max", round(mb, 4), limit, f"size {mb:.3f} MB is above size_mb_max {limit:g} MB")
    if budget.get("host_latency_ratio_max") is not None:
        limit = float(budget["host_latency_ratio_max"])
        ratio = numbers.get("host_latency_ratio")
        if ratio is None:
            fail("host_latency_ratio_max", None, limit, "host latency vs the fp32 sibling was not measured, so "
                 f"host_latency_ratio_max {limit:g} cannot be checked")
        elif ratio > limit:
            fail("host_latency_ratio_max", ratio, limit, f"host latency is {ratio:.3f}x the fp32 sibling's, above "
                 f"host_latency_ratio_max {limit:g}")
    if budget.get("accelerator_coverage_min") is not None:
        limit = float(budget["accelerator_coverage_min"])
        coverage = numbers.get("coverage")
        if coverage is None:
            fail("accelerator_coverage_min", None, limit, "the variant has no accelerator coverage estimate "
                 f"(a CPU variant, or no lint), so accelerator_coverage_min {limit:g} cannot be checked")
        elif coverage < limit:
            fail("accelerator_coverage_min", coverage, limit, f"accelerator coverage {coverage:.3f} is below "
                 f"accelerator_coverage_min {limit:g}")
    spec = budget.get("estimated_latency_ms_max")
    if spec is not None:
        failures += _check_estimate(spec, numbers.get("estimates") or {})
    return failures


def _check_estimate(spec: dict, estimates: dict[str, tuple[str, float | None]]) -> list[dict]:
    limit = float(spec["ms"])
    if not spec.get("device") and not spec.get("device_class"):
        return [{"metric": "budget.estimated_latency_ms_max", "tolerance": "estimated_latency_ms_max", "limit": limit,
                 "value": None, "message": "budget: estimated_latency_ms_max names neither a device nor a "
                                           "device_class, so it cannot be checked"}]
    wanted = spec.get("device") or spec.get("device_class")
    key = "device" if spec.get("device") else "device_class"
    picked = {dev: ms for dev, (cls, ms) in estimates.items() if (dev if key == "device" else cls) == wanted}
    known = {dev: ms for dev, ms in picked.items() if ms is not None}
    base = {"metric": "budget.estimated_latency_ms_max", "tolerance": "estimated_latency_ms_max", "limit": limit}
    if not known:
        why = "no device of that class can run the variant" if not picked else "no estimate could be made there"
        return [{**base, "value": None, "message": f"budget: estimated latency on {key} {wanted!r} cannot be checked "
                 f"({why}), so estimated_latency_ms_max {limit:g} ms is not met"}]
    worst_dev = max(known, key=known.get)
    worst = known[worst_dev]
    if worst <= limit:
        return []
    return [{**base, "value": round(worst, 4), "device": worst_dev,
             "message": f"budget: estimated latency {worst:.3f} ms on {worst_dev} ({key} {wanted!r}) is above "
                        f"estimated_latency_ms_max {limit:g} ms (an estimate: see docs/devices.md)"}]


def variant_numbers(record: dict, report: dict, source: dict, manifest) -> dict[str, Any]:
    """What a check step knows about the variant: size, host latency ratio, coverage, capacity estimates."""
    from mbuild.bundle.report import device_class
    from mbuild.devices import load_devices
    from mbuild.devices.capacity import estimate_variant

    coverages = [lint.get("coverage") for lint in record.get("lint") or [] if lint.get("coverage") is not None]
    analysis = source.get("analysis") or {}
    memory = analysis.get("memory") or {}
    variant = {"flops": analysis.get("flops"), "requirements": record.get("requirements") or {},
               "precision": manifest.recipes[record["recipe"]].precision,
               "memory": {"weights_bytes": record["size_bytes"],
                          "peak_activation_bytes": memory.get("peak_activation_bytes") or 0}}
    devices = {d.id: d for d in load_devices()}
    estimates = {dev: (device_class(dev, devices), est.get("latency_ms"))
                 for dev, est in estimate_variant(variant, devices.values(), manifest.capacity).items()}
    return {"size_bytes": record["size_bytes"], "host_latency_ratio": (report.get("latency") or {}).get("ratio_to_fp32"),
            "coverage": min(coverages) if coverages else None, "estimates": estimates}


def apply_budget(manifest, target_name: str, record: dict, report: dict, source: dict) -> bool:
    """Judge the target's budget; fail mode marks the check failed, warn mode prints. True if the report changed."""
    budget = budget_for(manifest, target_name)
    if not budget:
        return False
    failures = check_budget(budget, variant_numbers(record, report, source, manifest))
    mode = budget.get("mode", "fail")
    report["budget"] = {"limits": {k: v for k, v in budget.items() if k != "mode"}, "mode": mode,
                        "status": "failed" if failures else "passed", "failures": failures}
    for f in failures:
        word = "warning" if mode == "warn" else "error"
        print(f"{word}: check:{manifest.name}/{target_name}: {f['message']}")
    if failures and mode != "warn":
        validation = report["validation"]
        validation["status"] = "failed"
        validation.setdefault("failures", []).extend(failures)
    return True


DEVICE_CLASSES = tuple(f"{p} {e}" for p in ("iOS", "Android") for e in ("2016-2018", "2019-2021", "2022+", "unknown year"))


def budget_warnings(manifest) -> list[str]:
    """``mbuild validate``: an estimated-latency budget naming a device or class that does not exist."""
    from mbuild.devices import device_ids

    ids = set(device_ids())
    out = []
    for name in manifest.targets:
        spec = budget_for(manifest, name).get("estimated_latency_ms_max") or {}
        dev, cls = spec.get("device"), spec.get("device_class")
        if dev and dev not in ids:
            out.append(f"targets.{name}.budget.estimated_latency_ms_max.device: {dev!r} is not in the device "
                       "database (mbuild devices); the budget can never be met")
        if cls and cls not in DEVICE_CLASSES:
            out.append(f"targets.{name}.budget.estimated_latency_ms_max.device_class: {cls!r} is not a device class; "
                       f"expected one of {', '.join(DEVICE_CLASSES)}")
    return out
