"""``mbuild diff OLD NEW``: what changed between two bundles, variant by variant.

A reviewer of a release wants the consequences of a manifest edit — sizes, FLOPs,
validation metrics, device requirements — not a byte diff. The same structure feeds
the release report's "changes since" section.
"""
from __future__ import annotations

from pathlib import Path

# metrics shown per output, most telling first; absent ones are skipped
METRICS = ("recall", "precision", "box_iou", "score_error_max", "exact_match", "cer", "mask_iou", "pixel_agreement",
           "embedding_cosine", "embedding_cosine_worst", "nn_agreement", "range_error", "stream_cosine",
           "accuracy", "accuracy_drop", "top1_agreement", "top1_agreement_confident", "cosine", "channel_snr_db_min",
           "max_abs", "rmse", "snr_db")


def variant_facts(v: dict) -> dict:
    """The comparable facts of one bundle.json variant, flattened to ``name -> value``."""
    val = v.get("validation") or {}
    facts = {
        "runtime": v.get("runtime"),
        "format": v.get("format"),
        "recipe": v.get("recipe"),
        "quantization": (v.get("quantization") or {}).get("summary"),
        "size_bytes": v.get("size_bytes"),
        "flops": v.get("flops"),
        "params": v.get("params"),
        "validation": val.get("status"),
    }
    for output, metrics in sorted((val.get("metrics") or {}).items()):
        for m in METRICS:
            if m in metrics:
                facts[f"{output}.{m}"] = metrics[m]
        for part, pm in sorted((metrics.get("parts") or {}).items()):
            for m in ("cosine", "channel_snr_db_min"):
                if m in pm:
                    facts[f"{output}.{part}.{m}"] = pm[m]
    for k, value in sorted((v.get("requirements") or {}).items()):
        facts[f"requires.{k}"] = value
    return facts


def diff_documents(old: dict, new: dict) -> dict:
    """Compare two bundle.json documents; every variant change is ``{fact: [before, after]}``."""
    old_v = {v["id"]: v for v in old.get("variants", [])}
    new_v = {v["id"]: v for v in new.get("variants", [])}
    changed, unchanged = {}, []
    for vid in [i for i in new_v if i in old_v]:
        a, b = variant_facts(old_v[vid]), variant_facts(new_v[vid])
        delta = {k: [a.get(k), b.get(k)] for k in dict.fromkeys([*a, *b]) if differs(k, a.get(k), b.get(k))}
        if delta:
            changed[vid] = {"changes": delta, "before": a, "after": b}
        else:
            unchanged.append(vid)
    return {
        "old": {"name": old.get("name"), "version": old.get("version"), "build_id": old.get("build_id")},
        "new": {"name": new.get("name"), "version": new.get("version"), "build_id": new.get("build_id")},
        "added": {vid: variant_facts(new_v[vid]) for vid in new_v if vid not in old_v},
        "removed": {vid: variant_facts(old_v[vid]) for vid in old_v if vid not in new_v},
        "changed": changed,
        "unchanged": unchanged,
        "selection": None if old.get("selection") == new.get("selection")
        else [old.get("selection", {}).get("order"), new.get("selection", {}).get("order")],
    }


SNR_EXACT_DB = 120.0  # at or above: no error float32 can show (the checks write 999 for an exact match)


def differs(key: str, before, after) -> bool:
    """A change a reviewer should see: not one below the precision shown, not between two 'exact' SNRs."""
    if before == after:
        return False
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (before, after))
    if not numbers:
        return True
    if "snr_db" in key and before >= SNR_EXACT_DB and after >= SNR_EXACT_DB:
        return False
    if isinstance(before, float) or isinstance(after, float):
        return format_value(key, before) != format_value(key, after)
    return True


def diff_bundles(old_path: Path, new_path: Path) -> dict:
    """Verify both bundles (checksums, schema, safe names) and compare their bundle.json."""
    from mbuild.bundle.verify import verify_bundle

    return diff_documents(verify_bundle(Path(old_path)), verify_bundle(Path(new_path)))


def format_value(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "size_bytes" and isinstance(value, (int, float)):
        return f"{value:,} B"
    if key in ("flops", "params") and isinstance(value, (int, float)):
        return f"{value:,}"
    if "snr_db" in key and isinstance(value, (int, float)) and value >= SNR_EXACT_DB:
        return "exact"
    if isinstance(value, float):
        return f"{value:.{SHOWN_DIGITS}g}"
    return str(value)


SHOWN_DIGITS = 5  # significant digits of a metric in a diff (and so the smallest change it reports)


def format_change(key: str, before, after) -> str:
    """``before -> after`` plus the relative change for numbers (sizes and FLOPs)."""
    text = f"{format_value(key, before)} -> {format_value(key, after)}"
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and not isinstance(before, bool):
        if key in ("size_bytes", "flops", "params") and before:
            text += f" ({(after - before) / before:+.1%})"
        elif (isinstance(before, float) or isinstance(after, float)) and "exact" not in text:
            text += f" ({after - before:+.4g})"
    return text


def format_diff(d: dict) -> str:
    """The diff as text for a terminal or a review comment."""
    o, n = d["old"], d["new"]
    lines = [(f"{o['name']} {o['version']} (build {str(o['build_id'])[:12]}) -> "
              f"{n['name']} {n['version']} (build {str(n['build_id'])[:12]})")]
    if o["name"] != n["name"]:
        lines.append(f"note: comparing different models ({o['name']} vs {n['name']})")
    for vid, facts in d["added"].items():
        lines.append(f"+ {vid}: added ({facts.get('runtime')}, {facts.get('recipe')}, "
                     f"{format_value('size_bytes', facts.get('size_bytes'))}, validation {facts.get('validation')})")
    for vid, facts in d["removed"].items():
        lines.append(f"- {vid}: removed (was {facts.get('runtime')}, {facts.get('recipe')}, "
                     f"{format_value('size_bytes', facts.get('size_bytes'))})")
    for vid, ch in d["changed"].items():
        lines.append(f"~ {vid}:")
        for key, (before, after) in ch["changes"].items():
            lines.append(f"    {key}: {format_change(key, before, after)}")
    if d["unchanged"]:
        lines.append(f"= unchanged: {', '.join(d['unchanged'])}")
    if d["selection"]:
        lines.append(f"selection order: {d['selection'][0]} -> {d['selection'][1]}")
    if not (d["added"] or d["removed"] or d["changed"] or d["selection"]):
        lines.append("no differences in variants")
    return "\n".join(lines)
