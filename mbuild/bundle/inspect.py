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
    """Status and the key figure of every output (an estimate is labelled so in the same cell)."""
    from mbuild.validate.summary import key_metric

    val = v.get("validation", {})
    status = val.get("status", "?")
    if status == "skipped":
        proxy = val.get("proxy_estimate")
        tail = ""
        if proxy:
            tail = f"; ESTIMATE by proxy, not measured: {key_metric(proxy['metrics'])}"
        elif val.get("proxy_note"):
            tail = f"; {val['proxy_note']}"
        return f"skipped ({val.get('reason', '')}){tail}"
    metrics = val.get("metrics") or {}
    if not metrics:
        return status
    return f"{status} {key_metric(metrics)}"


def output_lines(doc: dict) -> list[str]:
    """Per output: what it is, then every variant's figures for it (every output, not just the first)."""
    from mbuild.validate.summary import output_headline

    lines = []
    for out in doc.get("outputs", []):
        name = out["name"]
        desc = f"{name} ({out.get('kind', 'generic')}"
        if out.get("shape"):
            desc += f", shape {out['shape']}"
        if out.get("classes"):
            desc += f", {out['classes']} classes"
        if out.get("labels"):
            desc += f", labels {out['labels']}"
        lines.append(desc + "):")
        for v in doc["variants"]:
            val = v.get("validation") or {}
            m = (val.get("metrics") or {}).get(name)
            if m is None:
                proxy = ((val.get("proxy_estimate") or {}).get("metrics") or {}).get(name)
                text = f"ESTIMATE by proxy, not measured: {output_headline(proxy)}" if proxy else val.get("status", "?")
            else:
                text = output_headline(m)
            failed = [f["message"] for f in val.get("failures") or [] if f.get("output") == name]
            lines.append(f"  {v['id']}: {text}" + (f"  FAILED: {'; '.join(failed)}" if failed else ""))
            for consumer, entry in (v.get("also_checked") or {}).items():
                lines.append(f"  {v['id']} (also checked with {consumer}): {also_checked_text(entry, name)}")
    return lines


def also_checked_text(entry: dict, output: str) -> str:
    """A second consumer's figures for one output, or its status and the reason it did not run."""
    from mbuild.validate.summary import output_headline

    m = (entry.get("metrics") or {}).get(output)
    if m is None:
        return f"{entry.get('status', '?')}: {entry.get('reason', '')}"
    failed = [f["message"] for f in entry.get("failures") or [] if f.get("output") == output]
    return f"{entry['status']} - {output_headline(m)}" + (f"  FAILED: {'; '.join(failed)}" if failed else "")


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
    lines += output_lines(doc)
    lines.append("")
    lines.append("accelerator coverage (static estimates unless marked analyzer/measured):")
    for v in doc["variants"]:
        lines.append(f"  {v['id']}: {_coverage(v)}")
    lines.append("")
    flagged = [(v["id"], f) for v in doc["variants"] for f in v.get("flags") or []]
    if flagged:
        lines.append("flags:")
        lines += [f"  {vid}: {f}" for vid, f in flagged]
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
            from mbuild.validate.summary import key_metric

            size = _size(a.get("size_bytes")) if a.get("size_bytes") else "-"
            cos = key_metric(a.get("metrics") or {})
            why = "; ".join(a.get("failures", [])) or a.get("reason", "")
            excl = f" float: {', '.join(a['excluded'])}" if a.get("excluded") else ""
            speed = f"  {a['host_median_ms']:.3f} ms on host" if a.get("host_median_ms") is not None else ""
            lines.append(f"  {a['recipe']:<14} {a['status']:<8} {size:>9}  {cos}{speed}{excl}  {why}".rstrip())
    sel = doc["selection"]
    lines.append("")
    lines.append(f"selection order: {' > '.join(sel['order'])}; fallback: {sel['fallback']}")
    return "\n".join(lines)
