"""Device database: representative phones and tablets, every figure with the page it came from.

The data lives in ``devices.yaml`` next to this module (format: ``docs/devices.md``). Each figure is
either ``null`` (unknown, never guessed) or ``{value, source, note?}``; :class:`Figure` keeps the
source next to the value so reports can cite it. Only ``yaml`` and the standard library are imported.

Example::

    from mbuild.devices import get_device
    dev = get_device("iphone-12")
    dev.value("ane_tops")        # 11.0
    dev.figure("ane_tops").source
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mbuild.errors import MbuildError

__all__ = ["Device", "DeviceError", "Figure", "DEVICES_YAML", "load_devices", "get_device", "device_ids"]

DEVICES_YAML = Path(__file__).with_name("devices.yaml")
PLATFORMS = ("ios", "android")
ID_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# YAML key -> Device field; nested blocks are flattened (ane.tops -> ane_tops).
FIGURE_KEYS = {
    "chip": "chip", "soc_id": "soc_id", "year": "year", "ram_mb": "ram_mb",
    "os_min": "os_min", "os_max": "os_max", "api_min": "api_min", "api_max": "api_max",
    "cpu_gflops_fp32": "cpu_gflops_fp32", "cpu_clusters": "cpu_clusters", "mem_bandwidth_gbs": "mem_bandwidth_gbs",
    "sustained_ratio": "sustained_ratio", "gpu": "gpu",
    "gpu_gflops_fp32": "gpu_gflops_fp32", "gpu_gflops_fp16": "gpu_gflops_fp16",
    "ane.present": "ane_present", "ane.usable_by_coreml": "ane_usable_by_coreml", "ane.tops": "ane_tops",
    "nnapi.available": "nnapi_available", "nnapi.api_levels": "nnapi_api_levels",
    "npu.name": "npu_name", "npu.tops": "npu_tops",
}
FIGURE_FIELDS = frozenset({"value", "source", "note"})


class DeviceError(MbuildError):
    """The device database is malformed or a device id is unknown."""

    exit_code = 2


@dataclass(frozen=True)
class Figure:
    """One sourced figure: a value and the URL of the page it was read from."""

    value: Any
    source: str
    note: str = ""


@dataclass(frozen=True)
class Device:
    """One device of the database; figures are ``None`` when the database does not know them."""

    id: str
    name: str
    platform: str
    chip: Figure | None = None
    soc_id: Figure | None = None
    year: Figure | None = None
    ram_mb: Figure | None = None
    os_min: Figure | None = None
    os_max: Figure | None = None
    api_min: Figure | None = None
    api_max: Figure | None = None
    cpu_gflops_fp32: Figure | None = None
    cpu_clusters: Figure | None = None
    mem_bandwidth_gbs: Figure | None = None
    sustained_ratio: Figure | None = None
    gpu: Figure | None = None
    gpu_gflops_fp32: Figure | None = None
    gpu_gflops_fp16: Figure | None = None
    ane_present: Figure | None = None
    ane_usable_by_coreml: Figure | None = None
    ane_tops: Figure | None = None
    nnapi_available: Figure | None = None
    nnapi_api_levels: Figure | None = None
    npu_name: Figure | None = None
    npu_tops: Figure | None = None

    def figure(self, name: str) -> Figure | None:
        """The sourced figure behind ``name`` so callers can cite it."""
        if name not in FIGURE_KEYS.values():
            raise KeyError(name)
        return getattr(self, name)

    def value(self, name: str) -> Any:
        """The bare value of ``name``, or None when unknown."""
        fig = self.figure(name)
        return None if fig is None else fig.value

    @property
    def model_identifiers(self) -> tuple[str, ...]:
        """Apple hardware model identifiers (``iPhone13,2``); empty for Android devices."""
        ids = self.value("soc_id") if self.platform == "ios" else None
        return tuple(ids or ())

    @property
    def label(self) -> str:
        """Human label used in messages, e.g. ``iPhone 7 (Apple A10 Fusion)``."""
        chip = self.value("chip")
        return f"{self.name} ({chip})" if chip else self.name

    def figures(self) -> dict[str, Figure]:
        """All known figures by field name, for listings and the sources test."""
        names = FIGURE_KEYS.values()
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in names and getattr(self, f.name)}


def _figure(raw: Any, where: str) -> Figure | None:
    """Parse one figure; a bare value without a source is refused so nothing unsourced slips in."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "value" not in raw or "source" not in raw:
        raise DeviceError(f"{where}: write a figure as {{value: ..., source: <URL>}} or null")
    extra = set(raw) - FIGURE_FIELDS
    if extra:
        raise DeviceError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {sorted(FIGURE_FIELDS)}")
    if raw["value"] is None:
        raise DeviceError(f"{where}: an unknown figure is written as null, not with value: null")
    source = raw["source"]
    if not isinstance(source, str) or not re.match(r"^https?://\S+$", source):
        raise DeviceError(f"{where}: source must be the URL of the page the figure was read from")
    return Figure(value=raw["value"], source=source, note=str(raw.get("note") or ""))


def _device(raw: Any, index: int, path: Path) -> Device:
    """Build one Device, refusing unknown keys with a suggestion."""
    where = f"{path.name}: devices[{index}]"
    if not isinstance(raw, dict):
        raise DeviceError(f"{where}: expected a mapping")
    dev_id = raw.get("id")
    if not isinstance(dev_id, str) or not ID_PATTERN.match(dev_id):
        raise DeviceError(f"{where}: id {dev_id!r} must be kebab-case, e.g. 'iphone-12'")
    where = f"{path.name}: {dev_id}"
    if raw.get("platform") not in PLATFORMS:
        raise DeviceError(f"{where}: platform must be one of {PLATFORMS}")
    top = {k.split(".")[0] for k in FIGURE_KEYS} | {"id", "name", "platform"}
    for key in raw:
        if key not in top:
            hint = difflib.get_close_matches(key, sorted(top), n=1)
            raise DeviceError(f"{where}: unknown key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    values: dict[str, Any] = {}
    for key, field_name in FIGURE_KEYS.items():
        block, _, sub = key.partition(".")
        node = raw.get(block)
        if sub:
            node = node or {}
            if not isinstance(node, dict):
                raise DeviceError(f"{where}.{block}: expected a mapping")
            unknown = set(node) - {k.partition(".")[2] for k in FIGURE_KEYS if k.startswith(block + ".")}
            if unknown:
                raise DeviceError(f"{where}.{block}: unknown key(s) {sorted(unknown)}")
            node = node.get(sub)
        values[field_name] = _figure(node, f"{where}.{key}")
    return Device(id=dev_id, name=str(raw.get("name") or dev_id), platform=raw["platform"], **values)


@functools.lru_cache(maxsize=8)
def _load(path: Path) -> tuple[Device, ...]:
    """Parse and check the database once per path; devices come back sorted by id."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DeviceError(f"cannot read the device database {path}: {e}") from e
    except yaml.YAMLError as e:
        raise DeviceError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
        raise DeviceError(f"{path}: expected a top-level 'devices:' list")
    devices = [_device(raw, i, path) for i, raw in enumerate(data["devices"])]
    seen: set[str] = set()
    for dev in devices:
        if dev.id in seen:
            raise DeviceError(f"{path.name}: device id {dev.id!r} appears twice")
        seen.add(dev.id)
    return tuple(sorted(devices, key=lambda d: d.id))


def load_devices(path: str | Path | None = None) -> tuple[Device, ...]:
    """All devices of the database (default: the bundled devices.yaml), sorted by id."""
    return _load(Path(path or DEVICES_YAML).resolve())


def device_ids(path: str | Path | None = None) -> list[str]:
    """The known device ids, sorted, for CLI choices and messages."""
    return [d.id for d in load_devices(path)]


def get_device(device_id: str, path: str | Path | None = None) -> Device:
    """The device with ``device_id``; an unknown id raises DeviceError with a 'did you mean'."""
    for dev in load_devices(path):
        if dev.id == device_id:
            return dev
    ids = device_ids(path)
    close = difflib.get_close_matches(device_id, ids, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else f"; known devices: {', '.join(ids)}"
    raise DeviceError(f"unknown device {device_id!r}{hint} (list them with `mbuild devices`)")
