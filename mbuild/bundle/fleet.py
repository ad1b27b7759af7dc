"""Fleet report: a bundle's selection and capacity weighed by the share of users on each device model.

Input is the device-share table app analytics and the Play Console export give: one row per device
model name or hardware identifier with its share of users (a fraction, a percentage or a count; the
shares are normalised). Every row is kept: a name the database does not know is matched by similarity
with a confidence note, and a row that matches nothing is counted as "unknown device", never dropped.

``fleet_report(bundle, rows, devices)`` answers, over users: which variant serves them, how many get
only the fallback, how many have no usable variant, the estimated latency percentiles (p50/p90/p99),
and which devices carry the most users on the slowest variant.
"""
from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from mbuild.bundle.select import check_requirements, device_properties, select
from mbuild.errors import MbuildError

__all__ = ["ShareRow", "read_shares", "match_device", "fleet_report", "format_fleet", "weighted_percentile"]

NAME_COLUMNS = ("device", "model", "name", "identifier", "device model", "model name")
SHARE_COLUMNS = ("share", "users", "percent", "percentage", "installs", "active users", "sessions")
FUZZY_CUTOFF = 0.6
VENDOR_WORDS = re.compile(r"\b(apple|google|samsung|xiaomi|oneplus|qualcomm)\b")


@dataclass(frozen=True)
class ShareRow:
    """One line of the share table as written, with the share normalised to a fraction of all users."""

    name: str
    share: float
    line: int


def _number(text: str, where: str) -> tuple[float, bool]:
    t = text.strip().replace(",", "")
    percent = t.endswith("%")
    try:
        value = float(t.rstrip("%"))
    except ValueError as e:
        raise MbuildError(f"{where}: share {text!r} is not a number (write 0.12, 12% or a user count)") from e
    if value < 0:
        raise MbuildError(f"{where}: share {text!r} is negative")
    return value, percent


def read_shares(path: str | Path) -> list[ShareRow]:
    """Rows of a CSV with a device column and a share column; '#' lines are comments."""
    path = Path(path)
    try:
        lines = [(n, ln) for n, ln in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1)
                 if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as e:
        raise MbuildError(f"cannot read the device-share table {path}: {e}") from e
    numbered = [(n, next(csv.reader([ln]))) for n, ln in lines]
    header = [h.strip().lower() for h in (numbered[0][1] if numbered else [])]
    name_col = next((i for i, h in enumerate(header) if h in NAME_COLUMNS), None)
    share_col = next((i for i, h in enumerate(header) if h in SHARE_COLUMNS), None)
    if name_col is None or share_col is None:
        raise MbuildError(f"{path}: the first row must name a device column ({', '.join(NAME_COLUMNS)}) and a share "
                          f"column ({', '.join(SHARE_COLUMNS)}); got {header}")
    raw: list[tuple[str, float, int]] = []
    percents = set()
    for n, cells in numbered[1:]:
        if len(cells) <= max(name_col, share_col):
            raise MbuildError(f"{path}:{n}: expected at least {max(name_col, share_col) + 1} columns")
        value, percent = _number(cells[share_col], f"{path}:{n}")
        percents.add(percent)
        raw.append((cells[name_col].strip(), value, n))
    total = sum(v for _, v, _ in raw)
    if not raw or total <= 0:
        raise MbuildError(f"{path}: no device has a share above 0")
    return [ShareRow(name, value / total, n) for name, value, n in raw]


def _norm(text: str) -> str:
    t = VENDOR_WORDS.sub(" ", text.lower())
    return re.sub(r"[^a-z0-9]+", " ", t).strip()


def match_device(name: str, devices) -> tuple[object | None, str]:
    """(device or None, how it was matched): id, hardware identifier, name, or fuzzy with its score."""
    low = name.strip().lower()
    for d in devices:
        if d.id == low:
            return d, "exact id"
    for d in devices:
        if name.strip() in d.model_identifiers:
            return d, "hardware model identifier"
    for d in devices:
        if d.name.lower() == low or _norm(d.name) == _norm(name):
            return d, "exact name"
    query = _norm(name)
    wanted = _numbers(query)
    best, best_score = None, 0.0
    for d in devices:
        for key in (_norm(d.name), d.id.replace("-", " ")):
            score = difflib.SequenceMatcher(None, query, key).ratio()
            if not wanted <= _numbers(key):
                score *= 0.5  # 'Galaxy S21' is not a 'Galaxy S25', however alike the strings look
            if score > best_score:
                best, best_score = d, score
    if best is not None and best_score >= 0.999:
        return best, f"name matches the database id {best.id!r}"
    if best is not None and best_score >= FUZZY_CUTOFF:
        return best, f"fuzzy match to {best.name!r} (similarity {best_score:.2f}): check it"
    return None, "no device in the database is close: counted as unknown device"


def _numbers(text: str) -> set[str]:
    """Model numbers in a name ('s21', '12', 'a13'), without the '5g' every other name carries."""
    return {t for t in re.findall(r"[a-z]*\d+[a-z]*", text) if t != "5g"}


def weighted_percentile(pairs: list[tuple[float, float]], q: float) -> float | None:
    """The value below which a share ``q`` of the weight lies (pairs of value, weight; nearest rank)."""
    pairs = sorted(p for p in pairs if p[1] > 0)
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    running = 0.0
    for value, weight in pairs:
        running += weight
        if running >= q * total - 1e-12:
            return value
    return pairs[-1][0]


def _latency(variant: dict, device) -> float | None:
    from mbuild.devices.capacity import estimate_variant

    est = estimate_variant(variant, [device]).get(device.id)
    return None if est is None else est.get("latency_ms")


def fleet_report(bundle: dict, rows: list[ShareRow], devices) -> dict:
    """Shares of users per variant, fallback-only, unusable and unknown; latency percentiles over users."""
    devices = list(devices)
    variants = {v["id"]: v for v in bundle.get("variants") or []}
    fallback = (bundle.get("selection") or {}).get("fallback")
    per_device: dict[str, dict] = {}
    unknown: list[dict] = []
    for row in rows:
        device, how = match_device(row.name, devices)
        if device is None:
            unknown.append({"name": row.name, "line": row.line, "share": row.share, "match": how})
            continue
        label = device.name if (device.value("chip") or "").split()[-1] in device.name else device.label
        entry = per_device.setdefault(device.id, {"device": device.id, "label": label, "share": 0.0,
                                                  "names": []})
        entry["share"] += row.share
        entry["names"].append({"name": row.name, "line": row.line, "share": row.share, "match": how})
    served: dict[str, float] = {}
    for entry in per_device.values():
        device = next(d for d in devices if d.id == entry["device"])
        props = device_properties(device)
        vid = select(bundle, props).variant_id
        usable = not check_requirements(variants[vid].get("requirements"), props)
        entry.update(variant=vid, fallback=vid == fallback, usable=usable,
                     latency_ms=_latency(variants[vid], device) if usable else None)
        if usable:
            served[vid] = served.get(vid, 0.0) + entry["share"]
    entries = sorted(per_device.values(), key=lambda e: (-e["share"], e["device"]))
    timed = [(e["latency_ms"], e["share"]) for e in entries if e["latency_ms"] is not None]
    slowest = _slowest_variant(entries)
    return {
        "bundle": f"{bundle.get('name')} {bundle.get('version')}", "fallback": fallback,
        "users": {"total": round(sum(r.share for r in rows), 6), "matched": round(sum(e["share"] for e in entries), 6),
                  "unknown_device": round(sum(u["share"] for u in unknown), 6)},
        "served_by_variant": {k: round(v, 6) for k, v in sorted(served.items(), key=lambda kv: (-kv[1], kv[0]))},
        "fallback_only": round(sum(e["share"] for e in entries if e["fallback"] and e["usable"]), 6),
        "no_usable_variant": round(sum(e["share"] for e in entries if not e["usable"]), 6),
        "latency_ms": {"p50": weighted_percentile(timed, 0.50), "p90": weighted_percentile(timed, 0.90),
                       "p99": weighted_percentile(timed, 0.99), "share_with_estimate": round(sum(w for _, w in timed), 6),
                       "kind": "estimate (docs/devices.md), weighted by users"},
        "slowest_variant": slowest,
        "slowest_variant_devices": [{"device": e["device"], "label": e["label"], "share": round(e["share"], 6),
                                     "latency_ms": e["latency_ms"]}
                                    for e in entries if slowest and e["variant"] == slowest and e["usable"]][:5],
        "devices": entries, "unknown": unknown,
        "matches": [n for e in entries for n in e["names"] if not n["match"].startswith(("exact", "hardware"))],
    }


def _slowest_variant(entries: list[dict]) -> str | None:
    """The variant whose users wait longest: highest user-weighted mean estimated latency."""
    sums: dict[str, list[float]] = {}
    for e in entries:
        if e["latency_ms"] is not None:
            acc = sums.setdefault(e["variant"], [0.0, 0.0])
            acc[0] += e["latency_ms"] * e["share"]
            acc[1] += e["share"]
    if not sums:
        return None
    return max(sums, key=lambda v: (sums[v][0] / sums[v][1], v))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_fleet(rep: dict) -> str:
    """The report as text for the terminal."""
    from mbuild.devices.listing import format_table

    lat = rep["latency_ms"]
    ms = lambda v: "-" if v is None else f"{v:.2f} ms"  # noqa: E731
    lines = [f"fleet: {rep['bundle']} over {_pct(rep['users']['matched'])} of users on known devices "
             f"({_pct(rep['users']['unknown_device'])} on unknown devices)", ""]
    lines.append(format_table(("variant", "share of users"), [(v, _pct(s)) for v, s in rep["served_by_variant"].items()]))
    lines += ["", f"served only by the fallback ({rep['fallback']}): {_pct(rep['fallback_only'])}",
              f"no usable variant: {_pct(rep['no_usable_variant'])}",
              f"unknown device (no database match): {_pct(rep['users']['unknown_device'])}",
              f"estimated latency over users ({_pct(lat['share_with_estimate'])} with an estimate): "
              f"p50 {ms(lat['p50'])}, p90 {ms(lat['p90'])}, p99 {ms(lat['p99'])} (estimates, not measurements)"]
    if rep["slowest_variant"]:
        lines += ["", f"most users on the slowest variant ({rep['slowest_variant']}):"]
        lines.append(format_table(("device", "share", "estimate"),
                                  [(d["label"], _pct(d["share"]), ms(d["latency_ms"])) for d in rep["slowest_variant_devices"]]))
    if rep["matches"] or rep["unknown"]:
        lines += ["", "name matching (check these):"]
        lines += [f"  line {m['line']}: {m['name']!r}: {m['match']}" for m in rep["matches"]]
        lines += [f"  line {u['line']}: {u['name']!r} ({_pct(u['share'])}): {u['match']}" for u in rep["unknown"]]
    return "\n".join(lines)
