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


def _first_metrics(v: dict) -> dict:
    metrics = (v.get("validation") or {}).get("metrics") or {}
    return next(iter(metrics.values()), {}) if metrics else {}


def _svg(fig) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "mbuild-report", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def plot_size_vs_error(doc: dict) -> str:
    """Scatter of model size against 1 - cosine (and accuracy drop when labels exist), one point per variant."""
    from matplotlib.figure import Figure

    points = [(v["id"], v["size_bytes"] / 1024, _first_metrics(v)) for v in doc["variants"]]
    measured = [(i, kb, m) for i, kb, m in points if "cosine" in m]
    with_acc = [(i, kb, m) for i, kb, m in measured if "accuracy_drop" in m]
    fig = Figure(figsize=(8.6 if with_acc else 5.6, 3.4))
    axes = fig.subplots(1, 2 if with_acc else 1, squeeze=False)[0]
    ax = axes[0]
    for vid, kb, m in measured:
        err = max(1.0 - float(m["cosine"]), ERROR_FLOOR)
        ax.scatter([kb], [err], s=46, zorder=3)
        ax.annotate(vid, (kb, err), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_yscale("log")
    ax.margins(x=0.3, y=0.3)
    ax.set_xlabel("size (KiB)")
    ax.set_ylabel("1 - cosine vs fp32 reference")
    ax.set_title("size vs error", fontsize=10)
    ax.grid(True, alpha=0.3)
    if not measured:
        ax.text(0.5, 0.5, "no variant has numeric validation\n(all skipped)", ha="center", va="center",
                transform=ax.transAxes)
    if with_acc:
        ax2 = axes[1]
        for vid, kb, m in with_acc:
            ax2.scatter([kb], [float(m["accuracy_drop"])], s=46, zorder=3)
            ax2.annotate(vid, (kb, float(m["accuracy_drop"])), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax2.margins(x=0.3, y=0.3)
        ax2.set_xlabel("size (KiB)")
        ax2.set_ylabel("accuracy drop (percentage points)")
        ax2.set_title("size vs accuracy drop", fontsize=10)
        ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    return _svg(fig)


def plot_latency(doc: dict, devices: dict) -> str:
    """Grouped bars: median estimated latency per device class and variant, whiskers from min to max."""
    from matplotlib.figure import Figure

    table, reasons = latency_by_class(doc, devices)
    classes = sorted({c for per in table.values() for c in per})
    variants = [vid for vid, per in table.items() if per]
    fig = Figure(figsize=(8.6, 3.6))
    ax = fig.subplots()
    ax.set_title("estimated latency per device class (back-of-the-envelope)", fontsize=10)
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
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _svg(fig)


def _e(x) -> str:
    return html.escape("-" if x is None else str(x))


def _num(n) -> str:
    return "-" if n is None else (f"{n:,}" if isinstance(n, int) else f"{n:.4g}")


def _validation_cell(v: dict) -> str:
    val = v.get("validation") or {}
    status = val.get("status", "?")
    m = _first_metrics(v)
    parts = [f'<span class="{_e(status)}">{_e(status)}</span>']
    if status == "skipped":
        parts.append(_e(val.get("reason", "")))
    if "cosine" in m:
        parts.append(f"cos {m['cosine']:.5f}")
    if "accuracy" in m:
        parts.append(f"acc {m['accuracy']:.2f}%" + (f" (ref {m['reference_accuracy']:.2f}%)"
                                                    if "reference_accuracy" in m else ""))
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
        "<h2>Plots</h2>",
        f"<div class=plot>{plot_size_vs_error(doc)}</div>",
        f"<div class=plot>{plot_latency(doc, devices)}</div>",
        ("<p class=note>Latency estimates are back-of-the-envelope: FLOPs / (peak x efficiency) x thermal "
         "derating, per device in the database, grouped by platform and era; bars are medians, whiskers min-max.</p>"),
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

