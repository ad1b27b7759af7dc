"""Per-variant tables from the bench project's own reports: size vs fp32, host latency vs fp32, fidelity."""
from __future__ import annotations

import json
from pathlib import Path

from _common import doit, write_mobilenet_data

MODELS = ("mobilenet-bench", "digits-cnn", "digits-cnn-onnx", "digits-keras")


def build_mobilenet(project: Path) -> tuple[float, str, int]:
    write_mobilenet_data(project / "bench" / ".work" / "data")
    return doit(project, "-n", "1", "manifests=bench/manifests/mobilenet.yaml")


def collect(project: Path) -> list[dict]:
    rows = []
    for name in MODELS:
        base = project / "build" / name
        if not base.exists():
            continue
        source = json.loads((base / "source" / "source.json").read_text())
        canonical = (base / "source" / "model.onnx").stat().st_size
        for tdir in sorted((base / "targets").iterdir()):
            vj, rj = tdir / "variant" / "variant.json", tdir / "report.json"
            if not vj.exists() or not rj.exists():
                continue
            v, r = json.loads(vj.read_text()), json.loads(rj.read_text())
            if v.get("status") == "not built":  # an optional target's recorded failure: nothing to measure
                continue
            fp32 = v.get("details", {}).get("float_bytes") if v["runtime"] == "tflite" else canonical
            rows.append({"model": name, "target": tdir.name, "runtime": v["runtime"], "recipe": v["recipe"],
                         "summary": v["quantization"].get("summary", ""), "bytes": v["size_bytes"],
                         "fp32_bytes": fp32, "validation": r["validation"], "latency": r.get("latency"),
                         "ref_accuracy": source.get("reference_accuracy")})
    return rows


def size_table(rows: list[dict]) -> str:
    lines = ["| model | target | runtime | recipe | size | vs fp32 (same runtime) |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['bytes'] / r['fp32_bytes']:.3f}" if r["fp32_bytes"] else "-"
        lines.append(f"| {r['model']} | {r['target']} | {r['runtime']} | {r['recipe']} | {r['bytes'] / 1024:,.1f} KiB "
                     f"| {ratio} |")
    return "\n".join(lines)


def latency_table(rows: list[dict]) -> str:
    lines = ["| model | target | runtime / recipe | median | p10-p90 | runs | fp32 sibling median | ratio to fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = r["latency"]
        if not lat or lat.get("median_ms") is None:
            why = r["validation"].get("reason") or "not measured"
            lines.append(f"| {r['model']} | {r['target']} | {r['runtime']} / {r['recipe']} | not run here: {why} | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['target']} | {r['runtime']} / {r['recipe']} | {lat['median_ms']:.3f} ms | "
                     f"{lat['p10_ms']:.3f}-{lat['p90_ms']:.3f} ms | {lat['runs']} | "
                     f"{lat.get('fp32_median_ms') or float('nan'):.3f} ms | {lat.get('ratio_to_fp32') or float('nan'):.2f} |")
    return "\n".join(lines)


def fidelity_table(rows: list[dict]) -> str:
    lines = ["| model | target | recipe | status | accuracy (ref) | top-1 agreement | min cosine | data |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["validation"]
        if "metrics" not in v:  # skipped here, or an optional check that could not run
            lines.append(f"| {r['model']} | {r['target']} | {r['recipe']} | {v['status']}: {v['reason']} | | | | |")
            continue
        ms = list(v["metrics"].values())
        acc = next((f"{m['accuracy']:.2f}% ({m['reference_accuracy']:.2f}%)" for m in ms if "accuracy" in m), "-")
        agr = next((f"{m['top1_agreement']:.3f}" for m in ms if "top1_agreement" in m), "-")
        cos = min(m["cosine"] for m in ms)
        data = v.get("data", {})
        lines.append(f"| {r['model']} | {r['target']} | {r['recipe']} | {v['status']} | {acc} | {agr} | {cos:.5f} | "
                     f"{data.get('kind', '?')}, {data.get('samples', '?')} samples |")
    return "\n".join(lines)
