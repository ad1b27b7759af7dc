"""Delegate compatibility reports for .tflite variants: GPU delegate and NNAPI.

GPU: the TFLite model analyzer with ``gpu_compatibility=True`` is run and its per-op
warnings parsed. The analyzer in TF 2.21 / ai-edge-litert 2.3 wheels says "looks compatible"
for every model (its GPU check is not compiled in), so the ops are also checked against the
GPU delegate's own op list (data/gpu_ops.json); the report says which of the two decided.
NNAPI: the share of ops the NNAPI delegate maps at the target's lowest API level, from the
delegate's validation rules (data/nnapi_ops.json) — a static estimate, labelled as such.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from functools import cache
from pathlib import Path

from mbuild.targets.base import LintResult
from mbuild.targets.tflite import model as fbm

DATA = Path(__file__).parent / "data"
_OP_LINE = re.compile(r"^\s*Op#(\d+) (\S+?)\(")
_SUBGRAPH = re.compile(r"^Subgraph#(\d+)")
_WARNING = "GPU COMPATIBILITY WARNING: "


@cache
def _table(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def run_gpu_analyzer(data: bytes) -> tuple[str, str]:
    """The analyzer's text report and which tool produced it (LiteRT's own wrapper, else TensorFlow's API).

    LiteRT's wrapper first: it prints the same report and spares a PyTorch-source build importing TensorFlow.
    """
    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as wrapper

        return wrapper.ModelAnalyzer(data, False, True), "ai_edge_litert analyzer wrapper"
    except ImportError:
        import tensorflow as tf

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            tf.lite.experimental.Analyzer.analyze(model_content=data, gpu_compatibility=True)
        return out.getvalue(), f"tf.lite.experimental.Analyzer (tensorflow {tf.__version__})"


def parse_gpu_analyzer(text: str) -> list[dict]:
    """Per-op warnings: the analyzer prints them right after the op they concern."""
    offenders, subgraph, last = [], 0, None
    for line in text.splitlines():
        if m := _SUBGRAPH.match(line):
            subgraph = int(m.group(1))
        elif m := _OP_LINE.match(line):
            last = (int(m.group(1)), m.group(2))
        elif line.startswith(_WARNING) and last and "compatibility issues at nodes" not in line:
            offenders.append({"op": last[1], "name": f"Subgraph#{subgraph} Op#{last[0]}",
                              "reason": line[len(_WARNING):].strip(), "source": "analyzer"})
    return offenders


def gpu_lint(path: Path) -> LintResult:
    """GPU delegate report: analyzer warnings plus the delegate's op list, whichever is stricter."""
    data = path.read_bytes()
    text, tool = run_gpu_analyzer(data)
    from_analyzer = parse_gpu_analyzer(text)
    ops = fbm.list_ops(fbm.read_model(data), 0)
    table = _table("gpu_ops.json")
    known = set(table["ops"]) | set(table["custom_ops"])
    flagged = {o["name"] for o in from_analyzer}
    from_list = []
    for op in ops:
        reason = None
        if op.op not in known:
            reason = "not in the GPU delegate's supported operators"
        elif any(t["dtype"] == "int16" and not t["const"] for t in op.inputs + op.outputs):
            reason = "int16 activations are not supported by the GPU delegate"
        name = f"Subgraph#0 Op#{op.index}"
        if reason and name not in flagged:
            from_list.append({"op": op.op, "name": name, "reason": reason, "source": "op list"})
    offenders = from_analyzer + from_list
    analyzer_ok = "looks compatible with GPU delegate" in text or "looks compatibile with GPU delegate" in text
    return LintResult(
        name="gpu_delegate", kind="static estimate" if from_list else "analyzer",
        verdict=_verdict(len(offenders), len(ops)), coverage=_coverage(len(offenders), len(ops)),
        ops_total=len(ops), offenders=offenders,
        details={"analyzer": {"tool": tool, "verdict": "compatible" if analyzer_ok and not from_analyzer
                              else "incompatible", "warnings": len(from_analyzer)},
                 "op_list": table["source"],
                 "note": ("the analyzer accepted ops the GPU delegate's op list does not have; the op list decided"
                          if from_list else "the analyzer's verdict")})


def nnapi_lint(path: Path, min_api: int) -> LintResult:
    """Share of main-subgraph ops the NNAPI delegate would take on a device at ``min_api``."""
    table = _table("nnapi_ops.json")
    ops = fbm.list_ops(fbm.read_model(path.read_bytes()), 0)
    offenders = []
    for op in ops:
        reason = _nnapi_reason(op, table, min_api)
        if reason:
            offenders.append({"op": op.op, "name": f"Subgraph#0 Op#{op.index}", "reason": reason})
    return LintResult(
        name="nnapi", kind="static estimate", verdict=_verdict(len(offenders), len(ops)),
        coverage=_coverage(len(offenders), len(ops)), ops_total=len(ops), offenders=offenders,
        details={"api_level": min_api, "op_list": table["source"],
                 "note": "from the NNAPI delegate's validation rules at the target's lowest API level; "
                         "drivers may still reject ops at run time"})


def _nnapi_reason(op: fbm.OpInfo, table: dict, api: int) -> str | None:
    """Why the NNAPI delegate would leave ``op`` on the CPU at ``api``, or None."""
    entry = table["ops"].get(op.op)
    rules = table["rules"]
    if entry is None:
        return "not mapped by the NNAPI delegate"
    if entry["min_api"] > api:
        return f"needs Android API {entry['min_api']}"
    if entry["max_version"] is not None and op.version > entry["max_version"]:
        return f"op version {op.version} > {entry['max_version']} accepted by the delegate"
    runtime = [t for t in op.inputs + op.outputs if not t["const"]]
    if any(t["dtype"] == "int16" for t in runtime):
        return "int16 activations are not supported by the NNAPI delegate"
    if any(t["dtype"] == "int8" for t in op.inputs + op.outputs) and api < rules["signed_int8_min_api"]:
        return f"signed int8 tensors need Android API {rules['signed_int8_min_api']} (NNAPI 1.2)"
    if op.op == "QUANTIZE" and op.outputs and op.outputs[0]["dtype"] == "int8" \
            and api < rules["quantize_to_int8_min_api"]:
        return f"QUANTIZE to int8 needs Android API {rules['quantize_to_int8_min_api']}"
    return None


def _verdict(bad: int, total: int) -> str:
    if bad == 0:
        return "clean"
    return "unsupported" if bad >= total else "partial"


def _coverage(bad: int, total: int) -> float | None:
    return round(1 - bad / total, 4) if total else None
