"""The work behind each doit task: source, variant, check. Each runs in its own process (see actions.py)."""
from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path

from mbuild import __version__
from mbuild._io import read_json, tree_size, write_json_atomic
from mbuild.bundle.selection import target_soc_rules
from mbuild.conversions import conversion_users, conversions
from mbuild.errors import BuildError, ToleranceError
from mbuild.layout import layout_for
from mbuild.manifest.model import Manifest
from mbuild.recipes import describe_requested, tolerance_for
from mbuild.targets import get_runtime
from mbuild.targets.base import BuildContext

log = logging.getLogger(__name__)


def run_source(manifest: Manifest) -> dict:
    from mbuild.sources.build import build_source
    from mbuild.workers import phase

    lay = layout_for(manifest)
    lay.source_json.unlink(missing_ok=True)
    phase("loading the model, writing the data sets, running the reference, exporting the canonical ONNX")
    report = build_source(manifest, lay.source_dir)
    acc = report.get("reference_accuracy")
    print(f"source:{manifest.name}: {report['analysis']['params']:,} params, "
          f"{(report['analysis']['flops'] or 0) / 1e6:.2f} MFLOPs, reference on {report['data']['validation']['samples']} "
          f"{report['data']['validation']['kind']} samples" + (f", accuracy {acc:.2f}%" if acc is not None else ""))
    return report


def make_context(manifest: Manifest, target_name: str, out_dir: Path, recipe_name: str | None = None,
                 exclude_extra: tuple[str, ...] = ()) -> BuildContext:
    target = manifest.targets[target_name]
    runtime = get_runtime(target.runtime)
    recipe = manifest.recipes[recipe_name or target.recipe]
    lay = layout_for(manifest)
    conversion = runtime.conversion(manifest, target, recipe)
    return BuildContext(manifest=manifest, target=target, recipe=recipe, source_dir=lay.source_dir, out_dir=out_dir,
                        options=runtime.parse_options(target), build_id=_source_digest(manifest),
                        exclude_extra=exclude_extra, base_dir=lay.convert_dir(conversion.path) if conversion else None)


def record_failed_conversion(manifest: Manifest, path: str, reason: str) -> None:
    """A base conversion only optional targets use failed: record why, so their variants say it and the bundle goes on."""
    from mbuild.targets.base import BASE_RECORD

    final = layout_for(manifest).convert_dir(path)
    if final.exists():
        shutil.rmtree(final)
    write_json_atomic(final / BASE_RECORD, {"status": NOT_BUILT, "reason": reason})
    print(f"warning: convert:{manifest.name}/{path} did not succeed (only targets with required: false use it: "
          f"{', '.join(conversion_users(manifest, path))}): {reason}")


def run_convert(manifest: Manifest, path: str) -> dict:
    """Build one shared base conversion into a fresh folder; move it into place only when it succeeded."""
    from mbuild.targets.base import BASE_RECORD

    runtime, _conv, target_name, recipe_name = conversions(manifest)[path]
    final = layout_for(manifest).convert_dir(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert.", dir=final.parent))
    try:
        ctx = make_context(manifest, target_name, staging, recipe_name=recipe_name)
        facts = runtime.convert_base(ctx, staging)
        shutil.rmtree(staging / "work", ignore_errors=True)
        write_json_atomic(staging / BASE_RECORD, facts)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"convert:{manifest.name}/{path}: {_describe_base(facts)}")
    return facts


def _describe_base(facts: dict) -> str:
    converter = (facts.get("converted") or {}).get("converter") or facts.get("frontend") or "onnx preparation"
    return f"{facts['artifact']} ({converter})"


def _source_digest(manifest: Manifest) -> str:
    from mbuild._io import digest

    return digest({"source": manifest.part("source", "inputs", "outputs"), "mbuild": __version__})[:16]


NOT_BUILT = "not built"


def run_variant(manifest: Manifest, target_name: str) -> dict:
    """Convert into a fresh folder and move it into place only when everything succeeded.

    A target with ``required: false`` that cannot be built records why instead (see
    :func:`record_optional_failure`).
    """
    from mbuild.recipes.search import SearchSteps, build_searched_variant

    target = manifest.targets[target_name]
    lay = layout_for(manifest)
    final = lay.variant_dir(target_name)
    final.parent.mkdir(parents=True, exist_ok=True)
    steps = SearchSteps(build=build_in_staging, context=make_context, check=check_variant)
    staging = build_searched_variant(steps, manifest, target_name, final.parent)
    try:
        record = read_json(staging / "variant.json")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    line = f"variant:{manifest.name}/{target_name}: {record['quantization'].get('summary', '')}; " \
           f"{record['size_bytes']:,} bytes" + _audit_line(record)
    if target.recipe == "auto":
        line += f"; recipe: auto chose {record['recipe']!r}"
    print(line)
    for flag in record.get("flags", []):
        print(f"warning: variant:{manifest.name}/{target_name}: {flag}")
    return record


def _fp16_lines(report: dict) -> list[str]:
    found = report.get("fp16_range") or {}
    lines = []
    if found.get("overflow"):
        names = ", ".join(f"{t['tensor']} (|x| up to {t['max_abs']:.4g})" for t in found["overflow"][:5])
        lines.append(f"activations above fp16's largest value 65504 on the calibration/validation data: {names}; "
                     "an fp16 GPU/ANE run overflows to inf there (the host fp16 check does not show it)")
    if found.get("underflow"):
        names = ", ".join(f"{t['tensor']} ({t['subnormal_share']:.0%} below 6.1e-5)" for t in found["underflow"][:5])
        lines.append(f"activations that live below fp16's smallest normal value: {names}; they lose precision or "
                     "flush to zero on fp16 hardware")
    return lines


def record_optional_failure(manifest: Manifest, target_name: str, step: str, reason: str) -> None:
    """Record why an optional target's step failed, so the step can succeed and the bundle go on without it.

    doit would otherwise hold back the bundle, which is what ``required: false`` promises not to
    do. The record is the step's output: it stands until the target's inputs change.
    """
    lay = layout_for(manifest)
    recipe = manifest.targets[target_name].recipe
    if step == "variant":
        final = lay.variant_dir(target_name)
        if final.exists():
            shutil.rmtree(final)  # a variant built from other inputs must not be packaged as this one
        write_json_atomic(lay.variant_json(target_name),
                          {"status": NOT_BUILT, "target": target_name, "recipe": recipe, "reason": reason})
    else:
        record = read_json(lay.variant_json(target_name))
        write_json_atomic(lay.report_json(target_name), {
            "target": target_name, "recipe": record.get("recipe", recipe),
            "validation": {"status": "error", "reason": reason}})
    print(f"warning: {step}:{manifest.name}/{target_name} did not succeed (required: false, so the bundle is made "
          f"without it): {reason}")


def build_in_staging(manifest: Manifest, target_name: str, parent: Path, recipe_name: str | None = None,
                     exclude_extra: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """Build one variant into a new staging folder (variant.json written); the caller moves or drops it."""
    staging = Path(tempfile.mkdtemp(prefix=".variant.", dir=parent))
    try:
        ctx = make_context(manifest, target_name, staging, recipe_name=recipe_name, exclude_extra=exclude_extra)
        record = build_variant(ctx)
        write_json_atomic(staging / "variant.json", record)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, record


def _audit_line(record: dict) -> str:
    audit = record.get("audit") or {}
    if audit.get("status") in (None, "not_requested"):
        return ""
    return f"; audit: {audit['status']} ({audit['quantized_tensors']}/{audit['weight_tensors']} weight tensors quantized)"


def build_variant(ctx: BuildContext) -> dict:
    """Run the runtime's convert and lint; check the plug-in contract and the quantization audit."""
    from mbuild.recipes.audit import audit_problem

    runtime = get_runtime(ctx.target.runtime)
    variant = runtime.convert(ctx)
    artifact = ctx.out_dir / variant.artifact
    if not artifact.exists() or tree_size(artifact) == 0:
        raise BuildError(f"runtime {runtime.name!r} reported success but wrote no {variant.artifact} (a bug in "
                         f"mbuild/targets/{runtime.name}.py)")
    for f in variant.files:
        if not (ctx.out_dir / f).exists():
            raise BuildError(f"runtime {runtime.name!r} listed {f} but did not write it")
    if variant.audit:
        problem = audit_problem(variant.audit)
        if problem:
            raise BuildError(f"quantization audit: {problem}")
    lints = [lint.to_dict() for lint in runtime.lint(ctx, artifact)]
    shutil.rmtree(ctx.out_dir / "work", ignore_errors=True)
    record = asdict(variant)
    source = read_json(ctx.source_dir / "source.json")
    record["notes"] = [f"canonical ONNX: {n}" for n in source["canonical_onnx"]["notes"]] + record["notes"]
    record.update({
        "target": ctx.target.name, "runtime": runtime.name, "recipe": ctx.recipe.name,
        "recipe_requested": describe_requested(ctx.recipe), "size_bytes": tree_size(artifact),
        "files_size_bytes": {f: tree_size(ctx.out_dir / f) for f in variant.files},
        "requirements": {**runtime.requirements(ctx.manifest, ctx.target),
                         **target_soc_rules(ctx.manifest, ctx.target.name)}, "lint": lints,
        "versions": {"mbuild": __version__, **runtime.versions()},
    })
    from mbuild.integrity import artifact_digests
    from mbuild.recipes.census import apply_census, size_flags

    record["flags"] = apply_census(record, ctx.recipe) + size_flags(record, ctx) + lint_flags(lints)
    record["digests"] = artifact_digests(ctx.out_dir, [variant.artifact, *variant.files])
    return record


def lint_flags(lints: list[dict]) -> list[str]:
    """A lint that found something the variant's user must hear about (``details.flag``) is a variant flag too."""
    return [f"{lint['name']}: {lint['details']['flag']}" for lint in lints if (lint.get("details") or {}).get("flag")]


def run_check(manifest: Manifest, target_name: str) -> dict:
    """Run the variant on the validation set, compare with the reference, gate on the tolerance."""
    lay = layout_for(manifest)
    record = read_json(lay.variant_json(target_name))
    if record.get("status") == NOT_BUILT:
        report = {"target": target_name, "recipe": record["recipe"],
                  "validation": {"status": NOT_BUILT, "reason": record["reason"]}}
        write_json_atomic(lay.report_json(target_name), report)
        print(f"check:{manifest.name}/{target_name}: {NOT_BUILT} ({record['reason']})")
        return report
    ctx = make_context(manifest, target_name, lay.variant_dir(target_name), recipe_name=record["recipe"])
    from mbuild.integrity import check_other_loadables, require_intact

    digests = require_intact(lay.variant_dir(target_name), record, f"check:{manifest.name}/{target_name}")
    report = check_variant(ctx, record)
    report = check_other_loadables(get_runtime(ctx.target.runtime), ctx, record, report, digests)
    write_json_atomic(lay.report_json(target_name), report)
    v = report["validation"]
    line = f"check:{manifest.name}/{target_name}: {v['status']}"
    if v["status"] == "skipped":
        line += f" ({v['reason']})"
    else:
        line += " - " + headline(v["metrics"])
        line += f"; ran {', '.join(report['validated']['run'])}"
    lat = report.get("latency")
    if lat and lat.get("median_ms") is not None:
        line += f"; host latency {lat['median_ms']:.3f} ms"
        if lat.get("fp32_median_ms") is not None:
            line += f" (fp32 {lat['fp32_median_ms']:.3f} ms)"
        if lat.get("flag"):
            line += f" - FLAG: {lat['flag']}"
    print(line)
    for consumer, entry in (report.get("also_checked") or {}).items():
        print(f"check:{manifest.name}/{target_name}: also checked with {consumer}: {also_checked_line(entry)}")
    for finding in _fp16_lines(report):
        print(f"warning: check:{manifest.name}/{target_name}: {finding}")
    from mbuild.validate.budget import apply_budget

    if apply_budget(manifest, target_name, record, report, read_json(ctx.source_dir / "source.json")):
        write_json_atomic(lay.report_json(target_name), report)
    if v["status"] == "failed":
        message = "; ".join(f["message"] for f in v["failures"])
        if not manifest.targets[target_name].required:
            print(f"warning: check:{manifest.name}/{target_name} failed its tolerance (required: false, so the "
                  f"bundle is made without it): {message}")
            return report
        raise ToleranceError(f"check:{manifest.name}/{target_name} failed its tolerance: {message}")
    return report


def headline(metrics: dict) -> str:
    """Every output's key figures in one line: its task metric first, then the tensor agreement."""
    from mbuild.validate.summary import output_headline

    return "; ".join(f"{name}: {output_headline(m)}" for name, m in metrics.items())


def also_checked_line(entry: dict) -> str:
    """A second consumer's verdict in one line: its status, then its figures or the reason it did not run."""
    if entry.get("metrics"):
        return f"{entry['status']} - {headline(entry['metrics'])}"
    return f"{entry['status']} ({entry.get('reason', '')})"


def check_variant(ctx: BuildContext, record: dict, *, measure: bool = True) -> dict:
    from mbuild.sources.data import read_labels, read_outputs
    from mbuild.validate import check_tolerance, compare_outputs

    runtime = get_runtime(ctx.target.runtime)
    artifact = ctx.out_dir / record["artifact"]
    inputs = ctx.validation_inputs()
    reference = ctx.reference_outputs()
    labels = read_labels(ctx.source_dir / "data" / "validation.npz")
    specs = ctx.manifest.outputs
    tolerance = tolerance_for(ctx.manifest, ctx.target, ctx.recipe)
    source = read_json(ctx.source_dir / "source.json")
    data_kind = source["data"]["validation"]["kind"]
    result = runtime.run(ctx, artifact, inputs)
    validation: dict = {"tolerance": tolerance, "data": source["data"]["validation"], "runtime": result.runtime}
    if result.outputs is None:
        validation.update({"status": "skipped", "reason": result.skipped_reason})
        proxy = getattr(runtime, "proxy", None)
        if proxy is not None:
            p = proxy(ctx, inputs)
            if p is not None and p.outputs is not None:
                validation["proxy_estimate"] = {
                    "label": "proxy estimate - NOT a measurement of this variant",
                    "runtime": p.runtime, "metrics": compare_outputs(reference, p.outputs, specs, labels)}
            elif p is not None:
                validation["proxy_note"] = p.skipped_reason
        latency = None
    else:
        ref_streams = read_outputs(ctx.source_dir / "reference.npz", prefix="stream")
        streams = (ref_streams, _variant_streams(runtime, ctx, artifact, inputs)) if ref_streams else None
        metrics = compare_outputs(reference, result.outputs, specs, labels, streams)
        failures, notes = check_tolerance(metrics, tolerance)
        validation.update({"status": "failed" if failures else "passed", "metrics": metrics, "failures": failures,
                           "synthetic": data_kind == "synthetic"})
        if notes:
            validation["notes"] = notes
        if failures and ctx.recipe.quantize and measure:
            validation["attribution"] = _attribution(runtime, ctx, artifact, inputs)
        if measure:
            latency = _latency(runtime, ctx, result, record)
        else:  # the search still wants a speed figure; this run already timed every sample
            latency = {"median_ms": round(statistics.median(result.latency_ms), 4)} if result.latency_ms else None
    report = {"target": ctx.target.name, "recipe": ctx.recipe.name, "validation": validation, "latency": latency}
    also_check = getattr(runtime, "also_check", None)
    if also_check is not None and measure and result.outputs is not None:
        checked = also_check(ctx, artifact, inputs, result.outputs)
        if checked:  # second consumers' own verdicts: recorded beside the check, never its status
            report["also_checked"] = checked
    if ctx.recipe.precision == "fp16":
        report["fp16_range"] = fp16_range_findings(source)
    return report


def _variant_streams(runtime, ctx: BuildContext, artifact: Path, inputs: dict) -> dict:
    """The variant over the same stream as the reference, consuming the state it produces itself."""
    from mbuild.validate.stream import run_stream

    feedback = {n: s.state_input for n, s in ctx.manifest.outputs.items() if s.state_input}

    def step(feed):
        r = runtime.run(ctx, artifact, feed)
        if r.outputs is None:
            raise BuildError(f"the variant could not run a stream step: {r.skipped_reason}")
        return r.outputs

    return run_stream(step, inputs, feedback)


def fp16_range_findings(source: dict) -> dict:
    """Activations the source analysis found outside fp16's range (host ORT fp16 does not emulate GPU/ANE overflow)."""
    ranges = (source.get("analysis") or {}).get("fp16_range") or {}
    return {"overflow": ranges.get("overflow", []), "underflow": ranges.get("underflow", []),
            "checked_tensors": ranges.get("checked_tensors"), "samples": ranges.get("samples"),
            "note": ranges.get("note", "")}


def _attribution(runtime, ctx, artifact, inputs):
    attribute = getattr(runtime, "attribute_error", None)
    if attribute is None:
        return None
    try:
        return attribute(ctx, artifact, inputs)
    except Exception as e:  # noqa: BLE001 - attribution is a diagnostic; never mask the tolerance failure
        return {"error": f"{type(e).__name__}: {e}"}


def _latency(runtime, ctx: BuildContext, result, record: dict) -> dict | None:
    """Median host latency of the variant next to its fp32 sibling on the same runtime."""
    if not result.latency_ms:
        return None
    sample = {k: v[:50] for k, v in ctx.validation_inputs().items()}
    fp32 = None
    baseline = record.get("details", {}).get("float_artifact")
    try:
        if baseline:
            fp32 = runtime.run(ctx, ctx.out_dir / baseline, sample).latency_ms
        elif runtime.name == "onnxruntime":
            fp32 = runtime.run(ctx, ctx.canonical_onnx, sample).latency_ms
        elif ctx.recipe.family == "fp32":
            fp32 = result.latency_ms  # the variant is its own fp32 sibling
    except Exception as e:  # noqa: BLE001 - a missing baseline leaves the comparison out, not the check
        log.warning("fp32 baseline latency not measured: %s", e)
    med = statistics.median(result.latency_ms)
    out = {"median_ms": round(med, 4), "p10_ms": round(_pct(result.latency_ms, 10), 4),
           "p90_ms": round(_pct(result.latency_ms, 90), 4), "runs": len(result.latency_ms),
           "runtime": result.runtime, "kind": "measured on the build host"}
    if fp32:
        fmed = statistics.median(fp32)
        out.update({"fp32_median_ms": round(fmed, 4), "ratio_to_fp32": round(med / fmed, 3)})
        if ctx.recipe.quantize and med > fmed * 1.05:
            out["flag"] = f"slower than fp32 on this host ({med / fmed:.2f}x)"
    return out


def _pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]
