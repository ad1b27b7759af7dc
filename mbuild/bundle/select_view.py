"""``mbuild select`` output: one table of the variants walked (chosen / rejected / not reached) and a JSON form."""
from __future__ import annotations

from mbuild.bundle.select import Selection
from mbuild.devices.listing import format_table

__all__ = ["device_line", "selection_table", "selection_json"]


def device_line(props: dict) -> str:
    """'iPhone 7 (Apple A10 Fusion), iOS 15, 2048 MB RAM' - the device once, so rows need not repeat it."""
    name = props.get("name") or props.get("platform") or "device"
    chip = f" ({props['chip']})" if props.get("chip") else ""
    parts = [f"{name}{chip}"]
    if props.get("os_version") is not None:
        parts.append(f"iOS {props['os_version']}")
    if props.get("api_level") is not None:
        parts.append(f"Android API {props['api_level']}")
    if props.get("soc"):
        parts.append(f"SoC {props['soc']}")
    parts.append(f"{props['ram_mb']:g} MB RAM" if props.get("ram_mb") is not None else "RAM unknown")
    return ", ".join(parts)


def _short(reason: str, props: dict) -> str:
    """The reason without the device label the header already shows."""
    name, chip = props.get("name"), props.get("chip")
    if name and chip:
        reason = reason.replace(f"{name} ({chip})", "the device")
    return reason


def selection_table(bundle: dict, sel: Selection, props: dict) -> str:
    """Every variant in selection order with its outcome on this device."""
    order = list((bundle.get("selection") or {}).get("order") or [])
    fallback = (bundle.get("selection") or {}).get("fallback")
    rejected = dict(sel.reasons_rejected)
    rows = []
    for vid in order:
        if vid == sel.variant_id and vid not in rejected:
            rows.append((vid, "CHOSEN", "first variant in selection.order whose requirements it meets"))
        elif vid in rejected:
            rows.append((vid, "rejected", _short(rejected[vid], props)))
        else:
            rows.append((vid, "not reached", "an earlier variant was chosen"))
    if sel.variant_id == fallback and fallback in rejected:
        rows.append((fallback, "CHOSEN", "the fallback: nothing in selection.order matched"))
    elif fallback not in order and sel.variant_id == fallback:
        rows.append((fallback, "CHOSEN", "the fallback: nothing in selection.order matched"))
    head = f"{device_line(props)}  ->  {sel.variant_id}"
    return head + "\n\n" + format_table(("variant", "outcome", "why"), rows)


def selection_json(sel: Selection, props: dict, capacity: dict | None) -> dict:
    """JSON form: the device properties used, the choice, every rejection, and the capacity estimate."""
    return {"device": {k: v for k, v in props.items()}, **sel.to_dict(), "capacity": capacity}
