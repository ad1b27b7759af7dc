"""The capacity estimate against published per-device latencies (``calibration.yaml``).

``calibration_rows()`` gives one row per published measurement: the estimate, the ratio
predicted/published, or why the database cannot estimate it. docs/devices.md shows the table;
``tests/devices/test_capacity.py`` keeps the median ratio within 2x.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import yaml

from mbuild.devices import get_device
from mbuild.devices.capacity import estimate

__all__ = ["CALIBRATION_YAML", "load_calibration", "calibration_rows", "median_ratio", "calibration_table"]

CALIBRATION_YAML = Path(__file__).with_name("calibration.yaml")


def load_calibration(path: Path | None = None) -> dict:
    return yaml.safe_load((path or CALIBRATION_YAML).read_text(encoding="utf-8"))


def calibration_rows(path: Path | None = None) -> list[dict]:
    data = load_calibration(path)
    rows = []
    for m in data["measurements"]:
        w = data["workloads"][m["workload"]]
        act = w["peak_activation_bytes"] * (0.5 if m["precision"] == "fp16" else 1.0)
        est = estimate(w["flops"], get_device(m["device"]), m["accelerator"], precision=m["precision"],
                       bytes_moved=w["weights_bytes"] + act)
        predicted = est["latency_ms"]
        rows.append({**m, "predicted_ms": predicted, "bound": est["bound"], "reason": est["reason"],
                     "ratio": None if predicted is None else round(predicted / m["published_ms"], 3)})
    return rows


def median_ratio(rows: list[dict]) -> float:
    return statistics.median(r["ratio"] for r in rows if r["ratio"] is not None)


def calibration_table(rows: list[dict]) -> str:
    """Markdown table for docs/devices.md."""
    lines = ["| model | device | accelerator | published ms | predicted ms | predicted/published | bound | source |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pred = f"{r['predicted_ms']:.2f}" if r["predicted_ms"] is not None else f"- ({r['reason']})"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(f"| {r['workload']} | {r['device']} | {r['accelerator']} ({r['note']}) | {r['published_ms']} | "
                     f"{pred} | {ratio} | {r['bound'] or '-'} | <{r['source']}> |")
    known = [r for r in rows if r["ratio"] is not None]
    lines.append(f"\n{len(known)} of {len(rows)} estimable; median predicted/published {median_ratio(rows):.2f}, "
                 f"range {min(r['ratio'] for r in known):.2f}-{max(r['ratio'] for r in known):.2f}.")
    return "\n".join(lines)
