"""Play device-targeting XML and the Apple model map come from the same selection rules."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from mbuild.bundle.exports import (
    PLAY_CONFIG_NS,
    apple_model_map,
    apple_model_map_json,
    play_device_targeting_xml,
)
from mbuild.devices import load_devices
from mbuild.errors import BundleError

NS = {"config": PLAY_CONFIG_NS}


def make_bundle() -> dict:
    """Same shape as the bundle in test_select: iOS ANE/GPU, Android NNAPI/GPU, CPU fallback."""
    def variant(vid, **req):
        return {"id": vid, "runtime": "x", "flops": 1000, "requirements": {"ram_mb_min": 12, **req}}

    return {
        "name": "digits-cnn", "version": "1.0.0",
        "variants": [
            variant("ios-ane", platform="ios", min_os="16.0", accelerator="ane"),
            variant("ios-gpu", platform="ios", min_os="15.0", accelerator="gpu"),
            variant("android-nnapi", platform="android", min_api=27, max_api=34, accelerator="nnapi"),
            variant("android-gpu", platform="android", min_api=26, accelerator="gpu"),
            {"id": "cpu", "runtime": "onnxruntime", "requirements": {"platform": "any", "accelerator": "cpu"}},
        ],
        "selection": {"order": ["ios-ane", "ios-gpu", "android-nnapi", "android-gpu", "cpu"], "fallback": "cpu"},
    }


def with_soc_variant(bundle: dict) -> dict:
    """Add an SoC-limited Android variant ahead of the generic ones."""
    bundle["variants"].append({"id": "android-npu", "runtime": "tflite", "requirements": {
        "platform": "android", "min_api": 31, "accelerator": "nnapi", "ram_mb_min": 512,
        "soc_allow": ["sm8650", "sm8550"]}})
    bundle["selection"]["order"].insert(2, "android-npu")
    return bundle


def test_play_xml_parses_and_uses_googles_element_names():
    text = play_device_targeting_xml(with_soc_variant(make_bundle()))
    root = ET.fromstring(text)
    assert root.tag == f"{{{PLAY_CONFIG_NS}}}device-targeting-config"
    assert 'xmlns:config="http://schemas.android.com/apk/config"' in text
    groups = root.findall("config:device-group", NS)
    assert [g.get("name") for g in groups] == ["android_npu", "android_nnapi", "android_gpu"]
    for group in groups:
        selectors = group.findall("config:device-selector", NS)
        assert 1 <= len(selectors) <= 5
        assert int(selectors[0].get("ram-min-bytes")) >= 0
    npu_selector = groups[0].find("config:device-selector", NS)
    assert npu_selector.get("ram-min-bytes") == str(512 * 1024 * 1024)
    socs = [(s.get("manufacturer"), s.get("model")) for s in npu_selector.findall("config:system-on-chip", NS)]
    assert socs == [("QTI", "SM8550"), ("QTI", "SM8650")]


def test_play_xml_leaves_out_ios_variants_and_the_fallback():
    root = ET.fromstring(play_device_targeting_xml(make_bundle()))
    names = {g.get("name") for g in root.findall("config:device-group", NS)}
    assert names == {"android_nnapi", "android_gpu"}


def test_play_xml_is_deterministic():
    assert play_device_targeting_xml(make_bundle()) == play_device_targeting_xml(make_bundle())


def test_play_xml_refuses_an_soc_whose_manufacturer_it_cannot_tell():
    bundle = with_soc_variant(make_bundle())
    bundle["variants"][-1]["requirements"]["soc_allow"] = ["zx80"]
    with pytest.raises(BundleError, match="Manufacturer:MODEL"):
        play_device_targeting_xml(bundle)
    bundle["variants"][-1]["requirements"]["soc_allow"] = ["Sinclair:ZX80"]
    assert 'manufacturer="Sinclair" model="ZX80"' in play_device_targeting_xml(bundle)


def test_apple_map_covers_every_ios_device_and_follows_select():
    devices = load_devices()
    mapping = apple_model_map(make_bundle(), devices)
    expected = {i for d in devices if d.platform == "ios" for i in d.model_identifiers}
    assert set(mapping) == expected
    assert all(re.fullmatch(r"(iPhone|iPad)\d+,\d+", key) for key in mapping)
    assert all(re.fullmatch(r"iPhone\d+,\d+", key) for key in mapping if key.startswith("iPhone"))
    assert mapping["iPhone9,1"] == "ios-gpu"      # iPhone 7, A10: no Neural Engine
    assert mapping["iPhone10,3"] == "ios-gpu"     # iPhone X, A11: ANE not open to Core ML
    assert mapping["iPhone13,2"] == "ios-ane"     # iPhone 12


def test_apple_map_json_is_stable_and_sorted_numerically():
    text = apple_model_map_json(make_bundle(), load_devices())
    assert text == apple_model_map_json(make_bundle(), load_devices())
    keys = [k for k in json.loads(text) if k.startswith("iPhone")]
    assert keys.index("iPhone9,1") < keys.index("iPhone13,2")
