"""``mbuild devices``: the database as a readable table (unknown shown as '?', never 'None') or as JSON."""
from __future__ import annotations

from mbuild.devices import FIGURE_KEYS

__all__ = ["device_rows", "devices_table", "devices_json", "format_table"]

HEADER = ("id", "platform", "chip", "year", "RAM", "OS / API", "ANE (Core ML)", "NNAPI", "GPU GFLOPS fp32",
          "mem GB/s")


def _v(value, unit: str = "") -> str:
    if value is None:
        return "?"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value}{unit}"


def _os_range(d) -> str:
    if d.platform == "ios":
        lo, hi = d.value("os_min"), d.value("os_max")
        return f"iOS {_v(lo)}-{_v(hi)}"
    return f"API {_v(d.value('api_min'))}-{_v(d.value('api_max'))}"


def _ane(d) -> str:
    if d.platform != "ios":
        return "-"
    present, usable = d.value("ane_present"), d.value("ane_usable_by_coreml")
    if present is False:
        return "none"
    if present and usable is False:
        return "present, not usable"
    tops = d.value("ane_tops")
    return f"yes, {_v(tops)} TOPS" if usable else _v(usable)


def _nnapi(d) -> str:
    if d.platform != "android":
        return "-"
    levels = d.value("nnapi_api_levels")
    if levels:
        return f"API {min(levels)}" if min(levels) == max(levels) else f"API {min(levels)}-{max(levels)}"
    return _v(d.value("nnapi_available"))


def device_rows(devices) -> list[tuple[str, ...]]:
    """One row per device, in the order of :data:`HEADER`."""
    rows = []
    for d in devices:
        ram = d.value("ram_mb")
        rows.append((d.id, d.platform, _v(d.value("chip")), _v(d.value("year")),
                     "?" if ram is None else f"{ram / 1024:g} GB", _os_range(d), _ane(d), _nnapi(d),
                     _v(d.value("gpu_gflops_fp32")), _v(d.value("mem_bandwidth_gbs"))))
    return rows


def format_table(header, rows) -> str:
    """Left-aligned columns with a rule under the header."""
    rows = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def devices_table(devices) -> str:
    known = len(devices)
    return (format_table(HEADER, device_rows(devices)) +
            f"\n\n{known} devices; '?' = unknown in the database (never guessed); figures and their sources: "
            f"mbuild devices --json")


def devices_json(devices) -> list[dict]:
    """Every device with every figure as {value, source, note} (null when unknown)."""
    out = []
    for d in devices:
        figures = {}
        for name in dict.fromkeys(FIGURE_KEYS.values()):
            fig = d.figure(name)
            figures[name] = None if fig is None else {"value": fig.value, "source": fig.source,
                                                      **({"note": fig.note} if fig.note else {})}
        out.append({"id": d.id, "name": d.name, "platform": d.platform, "figures": figures})
    return out
