"""The fleet report as one self-contained HTML page with two inline SVG plots (no script, nothing fetched)."""
from __future__ import annotations

import html
from pathlib import Path

__all__ = ["render_fleet_html", "write_fleet_html"]

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}.num{text-align:right}
.note{color:#555;font-size:13px}.kpi{display:inline-block;margin:6px 18px 6px 0;padding:8px 14px;
border:1px solid #ddd;border-radius:6px}.kpi b{display:block;font-size:20px}"""


def _e(x) -> str:
    return html.escape(str(x))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f} ms"


def plot_shares(rep: dict) -> str:
    """Horizontal bars: share of users per variant, then no usable variant and unknown device."""
    from matplotlib.figure import Figure

    from mbuild.bundle.report import _svg

    labels = [f"{v}{' (fallback)' if v == rep['fallback'] else ''}" for v in rep["served_by_variant"]]
    values = list(rep["served_by_variant"].values())
    labels += ["no usable variant", "unknown device"]
    values += [rep["no_usable_variant"], rep["users"]["unknown_device"]]
    colors = ["#4c78a8"] * len(rep["served_by_variant"]) + ["#e45756", "#9d9d9d"]
    for i, v in enumerate(rep["served_by_variant"]):
        if v == rep["fallback"]:
            colors[i] = "#f58518"
    fig = Figure(figsize=(8.6, 0.5 * len(labels) + 1.2))
    ax = fig.subplots()
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, [100 * v for v in values], color=colors)
    for y, v in zip(ys, values):
        ax.text(100 * v + 0.8, y, _pct(v), va="center", fontsize=9)
    ax.set_yticks(ys, labels, fontsize=9)
    ax.set_xlim(0, max(100 * max(values) * 1.18, 10))
    ax.set_xlabel("share of users (%)")
    ax.set_title("who gets which variant", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return _svg(fig)


def plot_latency_cdf(rep: dict) -> str:
    """Share of users (with an estimate) whose estimated latency is at most x, with p50/p90/p99 marked."""
    from matplotlib.figure import Figure

    from mbuild.bundle.report import _svg

    pts = sorted((d["latency_ms"], d["share"]) for d in rep["devices"] if d["latency_ms"] is not None)
    fig = Figure(figsize=(8.6, 3.4))
    ax = fig.subplots()
    ax.set_title("estimated latency over users (estimate, not measurement)", fontsize=10)
    if not pts:
        ax.text(0.5, 0.5, "no latency estimate for any device of the fleet", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        total = sum(w for _, w in pts)
        xs, ys, run = [], [], 0.0
        for ms, w in pts:
            run += w
            xs.append(ms)
            ys.append(100 * run / total)
        ax.step(xs, ys, where="post", color="#4c78a8", linewidth=2)
        ax.scatter(xs, ys, s=14, color="#4c78a8", zorder=3)
        for q, color in (("p50", "#54a24b"), ("p90", "#f58518"), ("p99", "#e45756")):
            v = rep["latency_ms"][q]
            if v is not None:
                ax.axvline(v, color=color, linestyle="--", linewidth=1)
                ax.text(v, 3 + {"p50": 0, "p90": 10, "p99": 20}[q], f" {q} {v:.2f} ms", color=color, fontsize=8)
        log = xs[-1] / max(xs[0], 1e-9) > 20
        if log:
            ax.set_xscale("log")
        ax.set_ylim(0, 104)
        ax.set_xlabel("estimated latency per inference (ms" + (", log scale)" if log else ")"))
        ax.set_ylabel("users at or below (%)")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _svg(fig)


def render_fleet_html(rep: dict) -> str:
    lat = rep["latency_ms"]
    kpis = [("served only by the fallback", _pct(rep["fallback_only"])),
            ("no usable variant", _pct(rep["no_usable_variant"])),
            ("unknown device", _pct(rep["users"]["unknown_device"])),
            ("latency p50 / p90 / p99", f"{_ms(lat['p50'])} / {_ms(lat['p90'])} / {_ms(lat['p99'])}")]
    rows = "".join(f"<tr><td>{_e(d['label'])}</td><td class=num>{_pct(d['share'])}</td><td>{_e(d['variant'])}"
                   f"{' (fallback)' if d['fallback'] else ''}{'' if d['usable'] else ' - NOT usable'}</td>"
                   f"<td class=num>{_ms(d['latency_ms'])}</td><td>{_e('; '.join(n['match'] for n in d['names']))}</td></tr>"
                   for d in rep["devices"])
    unknown = "".join(f"<tr><td>{_e(u['name'])}</td><td class=num>{_pct(u['share'])}</td><td>{_e(u['match'])}</td></tr>"
                      for u in rep["unknown"])
    slow = "".join(f"<tr><td>{_e(d['label'])}</td><td class=num>{_pct(d['share'])}</td><td class=num>{_ms(d['latency_ms'])}</td></tr>"
                   for d in rep["slowest_variant_devices"])
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>fleet report: {_e(rep['bundle'])}</title><style>{CSS}</style></head>
<body><h1>Fleet report: {_e(rep['bundle'])}</h1>
<p class=note>Selection and capacity estimates weighted by the share of users on each device model.
Latencies are back-of-the-envelope estimates (docs/devices.md), never measurements.
{_pct(rep['users']['matched'])} of users are on devices the database knows.</p>
{''.join(f'<div class=kpi>{_e(k)}<b>{_e(v)}</b></div>' for k, v in kpis)}
<h2>Share of users per variant</h2>{plot_shares(rep)}
<h2>Estimated latency over users</h2>{plot_latency_cdf(rep)}
<p class=note>{_pct(lat['share_with_estimate'])} of users have an estimate; the rest are on devices whose
figures the database does not know, or have no usable variant.</p>
<h2>Most users on the slowest variant ({_e(rep['slowest_variant'] or '-')})</h2>
<table><tr><th>device</th><th>share</th><th>estimate</th></tr>{slow}</table>
<h2>Devices</h2><table><tr><th>device</th><th>share</th><th>variant</th><th>estimate</th><th>matched as</th></tr>{rows}</table>
<h2>Unknown devices (kept, not dropped)</h2>
<table><tr><th>name in the share file</th><th>share</th><th>why</th></tr>{unknown or '<tr><td colspan=3>none</td></tr>'}</table>
</body></html>
"""


def write_fleet_html(rep: dict, path: str | Path) -> Path:
    from mbuild._io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(render_fleet_html(rep), encoding="utf-8")
    return path
