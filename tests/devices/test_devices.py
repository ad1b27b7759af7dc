"""The device database: enough devices, every figure sourced, Apple/NNAPI facts respected."""
from __future__ import annotations

import re

import pytest
import yaml

from mbuild.devices import DEVICES_YAML, DeviceError, get_device, load_devices
from mbuild.devices.capacity import estimate_variant

URL = re.compile(r"^https?://[^\s/]+\.[^\s]+$")
NO_ANE_CHIPS = ("A7", "A8", "A9", "A10")


def walk_figures(node, path=""):
    """Yield (path, figure-dict) for every non-null leaf figure in the raw YAML."""
    if isinstance(node, dict) and "value" in node:
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            if value is not None and key not in ("id", "name", "platform"):
                yield from walk_figures(value, f"{path}.{key}")


def test_at_least_forty_devices_2016_to_2025_both_platforms_with_the_iphone_7():
    devices = load_devices()
    assert len(devices) >= 40
    assert {d.platform for d in devices} == {"ios", "android"}
    years = {d.value("year") for d in devices} - {None}
    assert min(years) == 2016 and max(years) == 2025
    assert get_device("iphone-7").value("chip") == "Apple A10 Fusion"


def test_ids_are_kebab_case_and_unique():
    raw = yaml.safe_load(DEVICES_YAML.read_text())["devices"]
    ids = [d["id"] for d in raw]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids)


def test_every_non_null_figure_has_a_url_source():
    raw = yaml.safe_load(DEVICES_YAML.read_text())["devices"]
    count = 0
    for device in raw:
        for path, fig in walk_figures(device):
            count += 1
            assert fig["value"] is not None, f"{device['id']}{path}: unknown figures are null"
            assert URL.match(str(fig.get("source", ""))), f"{device['id']}{path}: no URL source"
    assert count > 100


def test_a10_and_earlier_have_no_usable_neural_engine():
    for device in load_devices():
        chip = device.value("chip") or ""
        if device.platform == "ios" and any(re.search(rf"\b{c}\b", chip) for c in NO_ANE_CHIPS):
            assert device.value("ane_usable_by_coreml") is False
            assert device.value("ane_present") is False


def test_a11_neural_engine_present_but_not_usable_by_core_ml():
    a11 = [d for d in load_devices() if "A11" in (d.value("chip") or "")]
    assert a11
    for device in a11:
        assert device.value("ane_present") is True
        assert device.value("ane_usable_by_coreml") is False


def test_nnapi_levels_never_exceed_api_34():
    for device in load_devices():
        levels = device.value("nnapi_api_levels")
        if levels:
            assert min(levels) >= 27 and max(levels) <= 34
            assert min(levels) >= (device.value("api_min") or 27)


def test_get_device_suggests_close_ids():
    assert get_device("iphone-12").model_identifiers == ("iPhone13,2",)
    with pytest.raises(DeviceError, match="did you mean 'iphone-12'"):
        get_device("iphone12")


def test_unsourced_figure_is_refused(tmp_path):
    bad = tmp_path / "devices.yaml"
    bad.write_text("devices:\n- id: x-1\n  name: X\n  platform: android\n  ram_mb: 4096\n")
    with pytest.raises(DeviceError, match="source"):
        load_devices(bad)


def test_estimate_variant_covers_only_allowed_devices():
    variant = {"id": "ios-ane", "flops": 1e8,
               "requirements": {"platform": "ios", "min_os": "16.0", "accelerator": "ane"}}
    out = estimate_variant(variant, load_devices())
    assert "iphone-12" in out and "iphone-7" not in out and "pixel-8" not in out
    assert list(out) == sorted(out)
    assert all(e["kind"] == "estimate" for e in out.values())


def test_accelerator_any_is_estimated_on_what_core_ml_can_use_and_says_so():
    """Core ML compute_units: all (accelerator 'any') once stopped the bundle: 'no efficiency assumption'."""
    variant = {"id": "ios-all", "flops": 1e8, "requirements": {"platform": "ios", "min_os": "15.0", "accelerator": "any"}}
    out = estimate_variant(variant, load_devices())
    assert out["iphone-12"]["accelerator"] == "ane" and out["iphone-7"]["accelerator"] == "gpu"
    assert out["iphone-12"]["latency_ms"] < out["iphone-7"]["latency_ms"]
    assert all("assumption" in e["accelerator_basis"] for e in out.values())


def test_devices_cli_table_has_no_raw_python_values_and_json_keeps_sources():
    import json

    from tests.conftest import run_mbuild

    proc = run_mbuild("devices")
    assert proc.returncode == 0
    assert "None" not in proc.stdout and "True" not in proc.stdout and "False" not in proc.stdout
    line = next(line for line in proc.stdout.splitlines() if line.startswith("iphone-7 "))
    assert "Apple A10 Fusion" in line and "none" in line and "2 GB" in line
    doc = json.loads(run_mbuild("devices", "--json").stdout)
    assert len(doc) == len(load_devices())
    iphone7 = next(d for d in doc if d["id"] == "iphone-7")
    assert iphone7["figures"]["chip"]["value"] == "Apple A10 Fusion"
    assert iphone7["figures"]["chip"]["source"].startswith("https://")
    assert iphone7["figures"]["ane_tops"] is None
