"""``mbuild inspect``: a bundle as a table people can read."""
from __future__ import annotations


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _metric(v: dict) -> str:
    val = v.get("validation", {})
    status = val.get("status", "?")
    if status == "skipped":
        proxy = val.get("proxy_estimate")
        tail = ""
        if proxy:
            m = next(iter(proxy["metrics"].values()))
            tail = f"; proxy estimate cosine {m.get('cosine', float('nan')):.4f}"
        return f"skipped ({val.get('reason', '')}){tail}"
    metrics = val.get("metrics") or {}
    if not metrics:
        return status
    m = next(iter(metrics.values()))
    parts = [status, f"cos {m['cosine']:.5f}"]
    if "accuracy" in m:
        parts.append(f"acc {m['accuracy']:.2f}% (ref {m['reference_accuracy']:.2f}%)")
    elif "top1_agreement" in m:
        parts.append(f"top1 {m['top1_agreement']:.3f}")
    return " ".join(parts)


def _coverage(v: dict) -> str:
    out = []
    for lint in v.get("accelerator_coverage") or []:
        cov = lint.get("coverage")
        cov_s = f"{cov:.0%}" if isinstance(cov, (int, float)) else "?"
        offenders = ", ".join(sorted({o.get("op", "?") for o in lint.get("offenders", [])}))
        out.append(f"{lint['name']} {lint['verdict']} {cov_s} ({lint['kind']})" + (f" offenders: {offenders}" if offenders else ""))
    return "; ".join(out) or "-"


def format_bundle(doc: dict) -> str:
    lines = [f"{doc['name']} {doc['version']}  build {doc['build_id'][:12]}  mbuild {doc['mbuild_version']}",
             f"source: {doc['source']['framework']} {doc['source']['model']}  params {doc['source'].get('params'):,}  "
             f"FLOPs {doc['source'].get('flops') or 0:,}",
             ""]
    rows = [("variant", "runtime", "size", "quantization applied", "audit", "validation")]
    for v in doc["variants"]:
        audit = v.get("audit") or {}
        a = audit.get("status", "-")
        if a not in ("-", "not_requested"):
            a = f"{a} {audit.get('quantized_tensors')}/{audit.get('weight_tensors')}"
        rows.append((v["id"], v["runtime"], _size(v["size_bytes"]), v["quantization"].get("summary", "?"), a, _metric(v)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    lines.append("")
    lines.append("accelerator coverage (static estimates unless marked analyzer/measured):")
    for v in doc["variants"]:
        lines.append(f"  {v['id']}: {_coverage(v)}")
    lines.append("")
    lines.append("requirements:")
    for v in doc["variants"]:
        req = ", ".join(f"{k}={val}" for k, val in v["requirements"].items() if val is not None)
        lines.append(f"  {v['id']}: {req}")
    for v in doc["variants"]:
        search = v.get("recipe_search")
        if not search:
            continue
        lines += ["", f"{v['id']}: {search['kind']} search" + (f" chose {search['chosen']!r} ({search['rule']})"
                                                               if search.get("chosen") else "")]
        for a in search["attempts"]:
            m = next(iter((a.get("metrics") or {}).values()), {})
            size = _size(a.get("size_bytes")) if a.get("size_bytes") else "-"
            cos = f"cos {m['cosine']:.5f}" if "cosine" in m else ""
            why = "; ".join(a.get("failures", [])) or a.get("reason", "")
            excl = f" float: {', '.join(a['excluded'])}" if a.get("excluded") else ""
            speed = f"  {a['host_median_ms']:.3f} ms on host" if a.get("host_median_ms") is not None else ""
            lines.append(f"  {a['recipe']:<14} {a['status']:<8} {size:>9}  {cos}{speed}{excl}  {why}".rstrip())
    sel = doc["selection"]
    lines.append("")
    lines.append(f"selection order: {' > '.join(sel['order'])}; fallback: {sel['fallback']}")
    return "\n".join(lines)
