"""Olive (olive-ai, in its own venv) quantizing the bench's canonical ONNX MobileNet for CPU, next to mbuild."""
from __future__ import annotations

import glob
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, WORK, fmt, stats
from hostbench import agreement, ort_latency

VENV = ROOT / "bench" / ".olive-venv"
# olive-ai 0.13.0 imports requests (telemetry) without declaring it
PACKAGES = ["olive-ai==0.13.0", "onnxruntime==1.31.1", "requests"]


def ensure_venv() -> str:
    """bench/.olive-venv with olive-ai, the same onnxruntime as ours and torch 2.13.0 (CPU wheel)."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    torch = sorted(glob.glob("/opt/wheels/torch-2.13.0+cpu-*.whl")) or ["torch==2.13.0"]
    subprocess.run([str(py), "-m", "pip", "install", "-q", torch[-1], *PACKAGES], check=True)  # no-op when present
    return subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('olive-ai'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def run(project: Path) -> dict:
    version = ensure_venv()
    source = project / "build" / "mobilenet-bench" / "source"
    model, out = source / "model.onnx", WORK / "olive"
    shutil.rmtree(out, ignore_errors=True)  # no Olive cache from an earlier run: wall times are cold
    calib = project / "bench" / ".work" / "data" / "mobilenet-calib.npz"
    start = time.perf_counter()
    proc = subprocess.run([str(VENV / "bin" / "python"), str(ROOT / "bench" / "_olive_job.py"), str(model),
                           str(calib), str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not results:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        last = next((x.strip() for x in reversed(lines) if "Error" in x or "Exception" in x), lines[-1] if lines else "")
        results = [{"recipe": "all", "error": f"olive exited {proc.returncode}: {last[-300:]}"}]
    val = source / "data" / "validation.npz"
    ref = source / "reference.npz"
    rows = []
    for r in results:
        if r.get("model"):
            p = Path(r["model"])
            r.update({"bytes": p.stat().st_size, "latency": stats(ort_latency(p, val)), **agreement(p, val, ref)})
        rows.append(r)
    ours = {}
    for target, recipe in (("cpu-int8", "static"), ("cpu-int8-dyn", "dynamic"), ("cpu-fp32", "fp32")):
        tdir = project / "build" / "mobilenet-bench" / "targets" / target
        vj = json.loads((tdir / "variant" / "variant.json").read_text())
        p = tdir / "variant" / vj["artifact"]
        ours[recipe] = {"bytes": p.stat().st_size, "latency": stats(ort_latency(p, val)), **agreement(p, val, ref),
                        "summary": vj["quantization"].get("summary", "")}
    return {"version": version, "wall": wall, "olive": rows, "ours": ours}


def table(r: dict, build_times: dict) -> str:
    fp32 = r["ours"]["fp32"]
    lines = [f"Olive {r['version']} (own venv bench/.olive-venv) and mbuild quantize the same canonical ONNX "
             "(build/mobilenet-bench/source/model.onnx); both measured here with the same onnxruntime, 1 thread, "
             "on the same validation photos. Agreement = top-1 agreement / cosine with the fp32 PyTorch reference.",
             "", "| tool / recipe | size (vs fp32) | latency | top-1 agreement | cosine | wall time |",
             "|---|---|---|---|---|---|",
             f"| fp32 (mbuild cpu-fp32) | {fp32['bytes'] / 1e6:.2f} MB (1.00) | {fmt(fp32['latency'], 'ms')} | "
             f"{fp32['top1']:.3f} | {fp32['cosine']:.4f} | - |"]
    for recipe in ("static", "dynamic"):
        o = r["ours"][recipe]
        bt = build_times.get(recipe)
        lines.append(f"| mbuild int8 {recipe} | {o['bytes'] / 1e6:.2f} MB ({o['bytes'] / fp32['bytes']:.2f}) | "
                     f"{fmt(o['latency'], 'ms')} | {o['top1']:.3f} | {o['cosine']:.4f} | "
                     f"{(f'{bt:.1f} s (variant task: quantize, audit, lint)' if bt else '-')} |")
        for x in r["olive"]:
            if x["recipe"] not in (recipe, "all"):
                continue
            if x.get("error"):
                lines.append(f"| Olive int8 {recipe} | failed: {x['error']} | | | | {x.get('seconds', 0):.1f} s |")
            else:
                lines.append(f"| Olive int8 {recipe} | {x['bytes'] / 1e6:.2f} MB ({x['bytes'] / fp32['bytes']:.2f}) | "
                             f"{fmt(x['latency'], 'ms')} | {x['top1']:.3f} | {x['cosine']:.4f} | "
                             f"{x['seconds']:.1f} s (olive.workflows.run) |")
    lines.append(f"\nOlive process wall time (both workflows, including imports): {r['wall']:.1f} s. mbuild's variant "
                 "task also loads the canonical model, audits which weights were quantized and lints the result; "
                 "neither wall time includes validation (mbuild's check task does that separately).")
    return "\n".join(lines)
