"""Vulkan coverage of an ncnn model: which of its layers have a Vulkan implementation in ncnn.

Asked of the installed ncnn itself (``ncnn.create_layer(type).support_vulkan``), so the table
follows the wheel's version; a layer without one runs on the CPU between GPU layers, with the
upload/download that costs. Nothing runs on a GPU here: it is a static estimate and says so.
"""
from __future__ import annotations

from pathlib import Path

from mbuild._io import dist_version
from mbuild.targets.base import LintResult
from mbuild.targets.ncnn.model import read_param

NOT_COMPUTE = {"Input"}  # holds the input blob; never a kernel


def vulkan_lint(param: Path) -> LintResult:
    from mbuild.targets.ncnn.io import import_ncnn

    ncnn = import_ncnn()
    layers = [layer for layer in read_param(param) if layer.type not in NOT_COMPUTE]
    offenders = []
    for layer in layers:
        made = ncnn.create_layer(layer.type)
        if made is None:
            offenders.append({"op": layer.type, "name": layer.name, "reason": "not a layer type this ncnn knows"})
        elif not made.support_vulkan:
            offenders.append({"op": layer.type, "name": layer.name, "reason": "no Vulkan implementation: runs on the CPU"})
    total = len(layers)
    coverage = (total - len(offenders)) / total if total else None
    verdict = "clean" if not offenders else ("unsupported" if len(offenders) == total else "partial")
    return LintResult(name="ncnn_vulkan", kind="static estimate", verdict=verdict,
                      coverage=round(coverage, 4) if coverage is not None else None, ops_total=total,
                      offenders=offenders,
                      details={"tool": f"ncnn {dist_version('ncnn')} layer registry (create_layer().support_vulkan)"})
