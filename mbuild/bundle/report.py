"""report.html: one self-contained page per bundle that a reviewer can read in a browser.

The page holds the variant table, two plots drawn with matplotlib and inlined as SVG
(size vs error per variant, estimated latency per device class) and, for a release,
the diff against the previous version. Nothing is loaded from the network, so the
file can be attached to a ticket or opened from an artifact store as it is.
"""
from __future__ import annotations

import html
import io
import math
import statistics
from pathlib import Path

from mbuild.bundle.diff import format_change
from mbuild.bundle.inspect import _size

ERROR_FLOOR = 1e-9  # 1 - cosine is drawn on a log axis; an exact match sits on this floor
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border:1px solid #d7d7d7;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f2f4f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}.passed{color:#137333;font-weight:600}
.failed{color:#b3261e;font-weight:600}.skipped{color:#8a6d00;font-weight:600}
.plot{max-width:900px;margin:0 0 16px}.plot svg{width:100%;height:auto}
.note{color:#555;font-size:12px}ul.diff{font-family:ui-monospace,monospace;font-size:12.5px}
"""


def device_class(device: str, devices: dict) -> str:
    """A coarse class for a device id: platform and era (from the device database; 'other' if unknown)."""
    d = devices.get(device)
    if d is None:
        return "other"
    year = d.value("year")
    era = "unknown year" if not isinstance(year, int) else (
        "2016-2018" if year <= 2018 else "2019-2021" if year <= 2021 else "2022+")
    platform = {"ios": "iOS", "android": "Android"}.get(d.platform, d.platform)
    return f"{platform} {era}"


def _devices() -> dict:
    try:
        from mbuild.devices import load_devices

        return {d.id: d for d in load_devices()}
    except Exception:  # noqa: BLE001 - the report must render even if the device database is broken
        return {}


def latency_by_class(doc: dict, devices: dict) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """``{variant: {class: [latency_ms, ...]}}`` from each variant's capacity estimates, and why some are missing."""
    out: dict[str, dict[str, list[float]]] = {}
    reasons: list[str] = []
    for v in doc["variants"]:
        per = out.setdefault(v["id"], {})
        for dev, est in sorted((v.get("capacity") or {}).items()):
            ms = est.get("latency_ms")
            if isinstance(ms, (int, float)) and ms > 0:
                per.setdefault(device_class(dev, devices), []).append(float(ms))
            elif est.get("reason"):
                reasons.append(f"{v['id']} on {dev}: {est['reason']}")
    return out, reasons


def _worst_metrics(v: dict) -> dict:
    """The plotted figures of a variant: its worst cosine over every output (and the accuracy drop, if any)."""
    metrics = (v.get("validation") or {}).get("metrics") or {}
    out: dict = {}
    cosines = [m["cosine"] for m in metrics.values() if m.get("cosine") is not None]
    if cosines:
        out["cosine"] = min(cosines)
    drops = [m["accuracy_drop"] for m in metrics.values() if m.get("accuracy_drop") is not None]
    if drops:
        out["accuracy_drop"] = max(drops)
    return out


def output_panels(doc: dict) -> str:
    """One task-metric table per output: every variant's figures for that output (estimates labelled)."""
    from mbuild.validate.summary import output_headline

    html_parts = []
    for out in doc.get("outputs", []):
        name = out["name"]
        rows = ["<tr><th>variant</th><th>status</th><th>task and tensor metrics</th></tr>"]
        for v in doc["variants"]:
            val = v.get("validation") or {}
            m = (val.get("metrics") or {}).get(name)
            proxy = ((val.get("proxy_estimate") or {}).get("metrics") or {}).get(name)
            if m is not None:
                text = _e(output_headline(m))
            elif proxy is not None:
                text = "<i>estimate by proxy, not measured:</i> " + _e(output_headline(proxy))
            else:
                text = _e(val.get("reason") or "-")
            failed = [f["message"] for f in val.get("failures") or [] if f.get("output") == name]
            if failed:
                text += "<br><span class=failed>" + "<br>".join(_e(f) for f in failed) + "</span>"
            rows.append(f"<tr><td><b>{_e(v['id'])}</b></td><td><span class=\"{_e(val.get('status'))}\">"
                        f"{_e(val.get('status'))}</span></td><td>{text}</td></tr>")
            for consumer, entry in (v.get("also_checked") or {}).items():
                found = (entry.get("metrics") or {}).get(name)
                body = _e(output_headline(found)) if found is not None else _e(entry.get("reason") or "-")
                rows.append(f"<tr><td>{_e(v['id'])} <span class=meta>(also checked with {_e(consumer)})</span></td>"
                            f"<td><span class=\"{_e(entry.get('status'))}\">{_e(entry.get('status'))}</span></td>"
                            f"<td>{body}</td></tr>")
        desc = f"{out.get('kind', 'generic')}" + (f", shape {out['shape']}" if out.get("shape") else "")
        html_parts.append(f"<h3>{_e(name)} <span class=meta>({_e(desc)})</span></h3><table>{''.join(rows)}</table>")
    return "\n".join(html_parts)


def _svg(fig) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "mbuild-report", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


MARKERS = "osD^vP*Xhp<>"


def size_error_points(doc: dict) -> tuple[list, list, list[str]]:
    """(measured points, proxy points, why the rest are not drawn): one entry per variant, none lost."""
    measured, proxy, missing = [], [], []
    for v in doc["variants"]:
        kb = (v.get("size_bytes") or 0) / 1024
        m = _worst_metrics(v)
        val = v.get("validation") or {}
        if "cosine" in m:
            measured.append((v["id"], kb, m))
            continue
        pm = _worst_metrics({"validation": {"metrics": (val.get("proxy_estimate") or {}).get("metrics") or {}}})
        if "cosine" in pm:
            proxy.append((v["id"], kb, pm))
        else:
            missing.append(f"{v['id']} ({val.get('status', 'no validation')}"
                           f"{': ' + val['reason'] if val.get('reason') else ''})")
    return measured, proxy, missing


def plot_size_vs_error(doc: dict) -> str:
    """Size against 1 - cosine (and accuracy drop), one marker per variant, named in a legend (no labels to overlap).

    Variants whose numeric check could not run here (Core ML on Linux) are drawn hollow at their proxy estimate
    when the build made one, so every variant is on the plot or named in the caption below it.
    """
    from matplotlib.figure import Figure

    measured, proxy, _ = size_error_points(doc)
    with_acc = [(i, kb, m) for i, kb, m in measured + proxy if "accuracy_drop" in m]
    fig = Figure(figsize=(9.6 if with_acc else 7.4, 3.6))
    axes = fig.subplots(1, 2 if with_acc else 1, squeeze=False)[0]
    ax = axes[0]
    style = {vid: (f"C{k % 10}", MARKERS[k % len(MARKERS)]) for k, (vid, _, _) in enumerate(measured + proxy)}
    for points, hollow in ((measured, False), (proxy, True)):
        for vid, kb, m in points:
            color, marker = style[vid]
            err = max(1.0 - float(m["cosine"]), ERROR_FLOOR)
            ax.scatter([kb], [err], s=52, zorder=3, marker=marker, label=vid + (" (proxy estimate)" if hollow else ""),
                       facecolors="none" if hollow else color, edgecolors=color, linewidths=1.5)
    ax.set_yscale("log")
    ax.margins(x=0.15, y=0.3)
    ax.set_xlabel("size (KiB)")
    ax.set_ylabel("1 - worst output cosine vs fp32 reference")
    ax.set_title("size vs error", fontsize=10)
    ax.grid(True, alpha=0.3)
    if not measured and not proxy:
        ax.text(0.5, 0.5, "no variant has numeric validation\n(all skipped)", ha="center", va="center",
                transform=ax.transAxes)
    if with_acc:
        ax2 = axes[1]
        for vid, kb, m in with_acc:
            color, marker = style[vid]
            hollow = any(vid == p[0] for p in proxy)
            ax2.scatter([kb], [float(m["accuracy_drop"])], s=52, zorder=3, marker=marker,
                        facecolors="none" if hollow else color, edgecolors=color, linewidths=1.5)
        ax2.margins(x=0.15, y=0.3)
        ax2.set_xlabel("size (KiB)")
        ax2.set_ylabel("accuracy drop (percentage points)")
        ax2.set_title("size vs accuracy drop", fontsize=10)
        ax2.grid(True, alpha=0.3)
    if measured or proxy:
        fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return _svg(fig)


def plot_latency(doc: dict, devices: dict) -> str:
    """Grouped bars: median estimated latency per device class and variant, whiskers from min to max."""
    from matplotlib.figure import Figure

    table, reasons = latency_by_class(doc, devices)
    classes = sorted({c for per in table.values() for c in per})
    variants = [vid for vid, per in table.items() if per]
    fig = Figure(figsize=(9.6, 3.8))
    ax = fig.subplots()
    ax.set_title("estimated latency per device class (estimate, not measurement)", fontsize=10)
    if not classes:
        why = sorted({r.split(": ", 1)[1] for r in reasons}) or ["no capacity estimates in the bundle"]
        ax.text(0.5, 0.5, "no latency estimate for these variants:\n" + "\n".join(why[:4]), ha="center",
                va="center", transform=ax.transAxes, fontsize=9, wrap=True)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        width = 0.8 / max(1, len(variants))
        for j, vid in enumerate(variants):
            xs, meds, lo, hi = [], [], [], []
            for i, c in enumerate(classes):
                vals = table[vid].get(c)
                if not vals:
                    continue
                med = statistics.median(vals)
                xs.append(i + (j - (len(variants) - 1) / 2) * width)
                meds.append(med)
                lo.append(med - min(vals))
                hi.append(max(vals) - med)
            ax.bar(xs, meds, width=width * 0.95, label=vid, yerr=[lo, hi], capsize=2)
        ax.set_xticks(range(len(classes)), classes, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("latency (ms, estimate)")
        if max(max(v) for per in table.values() for v in per.values()) / max(
                min(min(v) for per in table.values() for v in per.values()), 1e-12) > 100:
            ax.set_yscale("log")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _svg(fig)


def _e(x) -> str:
    return html.escape("-" if x is None else str(x))


def _num(n) -> str:
    return "-" if n is None else (f"{n:,}" if isinstance(n, int) else f"{n:.4g}")


def _validation_cell(v: dict) -> str:
    from mbuild.validate.summary import key_metric

    val = v.get("validation") or {}
    status = val.get("status", "?")
    parts = [f'<span class="{_e(status)}">{_e(status)}</span>']
    if status == "skipped":
        parts.append(_e(val.get("reason", "")))
    if val.get("metrics"):
        parts.append(_e(key_metric(val["metrics"])))
    for f in val.get("failures") or []:
        parts.append(_e(f.get("message", "")))
    return "<br>".join(parts)


def _latency_cell(measured: dict | None, vid: str) -> str:
    lat = ((measured or {}).get("variants") or {}).get(vid, {}).get("latency") or {}
    med = lat.get("median_ms")
    if not isinstance(med, (int, float)) or math.isnan(med):
        return "-"
    return f"{med:.3f} ms" + (f" ({lat['ratio_to_fp32']:.2f}x fp32)" if lat.get("ratio_to_fp32") else "")


def variant_table(doc: dict, measured: dict | None) -> str:
    head = ("variant", "runtime / format", "recipe", "quantization applied", "size", "FLOPs", "params",
            "validation", "requirements", "host latency (measured)")
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for v in doc["variants"]:
        req = ", ".join(f"{k}={val}" for k, val in (v.get("requirements") or {}).items() if val is not None)
        rows.append("<tr>" + "".join([
            f"<td><b>{_e(v['id'])}</b></td>", f"<td>{_e(v.get('runtime'))} / {_e(v.get('format'))}</td>",
            f"<td>{_e(v.get('recipe'))}</td>", f"<td>{_e((v.get('quantization') or {}).get('summary'))}</td>",
            f"<td class=num>{_e(_size(v.get('size_bytes')))}</td>", f"<td class=num>{_num(v.get('flops'))}</td>",
            f"<td class=num>{_num(v.get('params'))}</td>", f"<td>{_validation_cell(v)}</td>", f"<td>{_e(req)}</td>",
            f"<td class=num>{_latency_cell(measured, v['id'])}</td>"]) + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def _size_error_caption(doc: dict) -> str:
    _, proxy, missing = size_error_points(doc)
    parts = []
    if proxy:
        parts.append(f"Hollow markers ({_e(', '.join(p[0] for p in proxy))}): the numeric check could not run on "
                     "this host; drawn at the build's proxy estimate, not a measurement of the variant.")
    if missing:
        parts.append(f"Not on the plot: {_e('; '.join(missing))}.")
    return f"<p class=note>{' '.join(parts)}</p>" if parts else ""


def _latency_caption(doc: dict, devices: dict) -> str:
    table, _ = latency_by_class(doc, devices)
    classes = sorted({c for per in table.values() for c in per})
    notes = []
    for v in doc["variants"]:
        have = set(table.get(v["id"], {}))
        if not have:
            reasons = sorted({(e.get("reason") or "") for e in (v.get("capacity") or {}).values()} - {""})
            why = "; ".join(reasons) if reasons else "its requirements exclude every device in the database"
            notes.append(f"{v['id']}: no bar ({why})")
        elif have != set(classes):
            notes.append(f"{v['id']}: no bar for {', '.join(sorted(set(classes) - have))} (no device of the class "
                         "meets its requirements, or no estimate there)")
    return _e(" | ".join(notes))


def diff_section(d: dict) -> str:
    o = d["old"]
    items = []
    for vid in d["added"]:
        items.append(f"<li>+ {_e(vid)}: added</li>")
    for vid in d["removed"]:
        items.append(f"<li>- {_e(vid)}: removed</li>")
    for vid, ch in d["changed"].items():
        sub = "".join(f"<li>{_e(k)}: {_e(format_change(k, a, b))}</li>" for k, (a, b) in ch["changes"].items())
        items.append(f"<li>~ {_e(vid)}<ul>{sub}</ul></li>")
    if d.get("selection"):
        before, after = d["selection"]
        items.append(f"<li>selection order: {_e(' > '.join(before or []))} -&gt; {_e(' > '.join(after or []))}</li>")
    if d["unchanged"]:
        items.append(f"<li>= unchanged: {_e(', '.join(d['unchanged']))}</li>")
    if not items:
        items.append("<li>no differences in variants</li>")
    return (f"<h2>Changes since {_e(o['version'])}</h2><p class=meta>compared with {_e(o['name'])} "
            f"{_e(o['version'])} (build {_e(str(o['build_id'])[:12])})</p><ul class=diff>{''.join(items)}</ul>")


def render_report(doc: dict, *, measured: dict | None = None, diff: dict | None = None,
                  signed_by: str | None = None) -> str:
    """The HTML page for one bundle.json (``measured``: the dist report.json; ``diff``: vs the previous release)."""
    devices = _devices()
    src = doc.get("source") or {}
    _, reasons = latency_by_class(doc, devices)
    sel = doc.get("selection") or {}
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(doc['name'])} {_e(doc['version'])} - mbuild report</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(doc['name'])} {_e(doc['version'])}</h1>",
        f"<p class=meta>build {_e(doc.get('build_id'))} &middot; mbuild {_e(doc.get('mbuild_version'))} &middot; "
        f"source {_e(src.get('framework'))} {_e(src.get('model'))} &middot; params {_num(src.get('params'))} &middot; "
        f"FLOPs {_num(src.get('flops'))}" + (f" &middot; signed by {_e(signed_by)}" if signed_by else "") + "</p>",
        f"<p>{_e(doc.get('description') or '')}</p>",
        "<h2>Variants</h2>", variant_table(doc, measured),
        (f"<p class=note>selection order: {_e(' > '.join(sel.get('order') or []))}; fallback: "
         f"{_e(sel.get('fallback'))}. Host latency is measured on the build machine and kept out of the "
         "reproducible bundle.</p>"),
        "<h2>Outputs</h2>", output_panels(doc),
        "<h2>Plots</h2>",
        f"<div class=plot>{plot_size_vs_error(doc)}</div>",
        _size_error_caption(doc),
        f"<div class=plot>{plot_latency(doc, devices)}</div>",
        ("<p class=note>Latency estimates (docs/devices.md): a roofline (FLOPs against peak, bytes against "
         "memory bandwidth) plus a fixed per-inference overhead, per device in the database, grouped by platform "
         "and era; bars are medians, whiskers min-max. " + _latency_caption(doc, devices) + "</p>"),
    ]
    if reasons:
        uniq = sorted({r.split(": ", 1)[1] for r in reasons})
        parts.append(f"<p class=note>{len(reasons)} device estimate(s) unavailable: {_e('; '.join(uniq))}</p>")
    if diff is not None:
        parts.append(diff_section(diff))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(bundle_path: Path, out_path: Path, *, previous: Path | None = None,
                 signed_by: str | None = None) -> Path:
    """Verify the bundle (and the previous one), render report.html next to it atomically.

    ``signed_by`` is a key id the caller verified against a trusted key; the id a bundle claims
    for itself is never shown.
    """
    from mbuild._io import read_json, write_bytes_atomic
    from mbuild.bundle.diff import diff_bundles
    from mbuild.bundle.verify import verify_bundle

    bundle_path = Path(bundle_path)
    doc = verify_bundle(bundle_path)
    measured_path = bundle_path.with_name(bundle_path.name.removesuffix(".mbundle") + ".report.json")
    measured = read_json(measured_path) if measured_path.exists() else None
    if measured and measured.get("build_id") != doc.get("build_id"):
        measured = None  # from another build: its numbers would not describe this bundle
    diff = diff_bundles(previous, bundle_path) if previous else None
    page = render_report(doc, measured=measured, diff=diff, signed_by=signed_by)
    write_bytes_atomic(Path(out_path), page.encode())
    return Path(out_path)

