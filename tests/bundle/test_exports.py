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
    apple_model_steps,
    apple_variant_for,
    play_device_targeting_xml,
)
from mbuild.bundle.play import PlaySelector, play_plan, play_variant_for
from mbuild.bundle.select import device_properties, parse_version, select
from mbuild.bundle.selection import selection_rules, target_soc_rules
from mbuild.devices import get_device, load_devices
from mbuild.errors import BundleError
from tests.conftest import REPO, run_mbuild

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


def bundle_from_manifest(path) -> dict:
    """bundle.json's selection part for a manifest, from its runtimes' requirements, without building."""
    from mbuild.manifest import load_manifest
    from mbuild.targets import get_runtime

    manifest = load_manifest(path)
    variants = []
    for name, target in manifest.targets.items():
        req = {**get_runtime(target.runtime).requirements(manifest, target), **target_soc_rules(manifest, name),
               "ram_mb_min": 1}
        variants.append({"id": name, "runtime": target.runtime, "requirements": req})
    return {"name": manifest.name, "version": manifest.version, "variants": variants,
            "selection": selection_rules(manifest, variants)}


def with_soc_variant(bundle: dict) -> dict:
    """Add an SoC-limited Android variant ahead of the generic ones."""
    bundle["variants"].append({"id": "android-npu", "runtime": "tflite", "requirements": {
        "platform": "android", "min_api": 31, "accelerator": "gpu", "ram_mb_min": 512,
        "soc_allow": ["sm8650", "sm8550"]}})
    bundle["selection"]["order"].insert(2, "android-npu")
    return bundle


def write_bundle(path, bundle: dict):
    """A bundle that passes the strict reader: the hand-made document completed to the schema, a model file per
    variant, SHA256SUMS, written by mbuild's own deterministic archive writer."""
    import copy
    import hashlib

    from mbuild._io import canonical_json
    from mbuild.bundle.archive import write_archive
    from mbuild.bundle.build import sha256sums

    doc = copy.deepcopy(bundle)
    doc.setdefault("format", 1)
    doc.setdefault("build_id", "0" * 32)
    doc.setdefault("mbuild_version", "0.1.0")
    doc.setdefault("source", {"framework": "pytorch", "model": "model.py:Net"})
    doc.setdefault("inputs", [])
    doc.setdefault("outputs", [])
    formats = {"onnxruntime": "onnx", "tflite": "tflite", "coreml": "mlpackage"}
    entries: dict[str, bytes] = {}
    for v in doc["variants"]:
        req = v.setdefault("requirements", {})
        req.setdefault("platform", "any")
        runtime = v.get("runtime") if v.get("runtime") in formats else {
            "ios": "coreml", "android": "tflite"}.get(req["platform"], "onnxruntime")
        data = f"model of {v['id']}".encode()
        v.update({"runtime": runtime, "format": formats[runtime], "file": f"variants/{v['id']}/model.bin",
                  "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)})
        v.setdefault("quantization", {"summary": "none (fp32)"})
        v.setdefault("validation", {"status": "passed", "metrics": {}})
        if v["validation"].get("status") in ("passed", "failed"):
            v["validation"].setdefault("metrics", {})
        entries[v["file"]] = data
    entries["bundle.json"] = canonical_json(doc).encode()
    entries["SHA256SUMS"] = sha256sums(entries).encode()
    write_archive(path, entries)
    return path


def checkable(devices):
    """Android devices whose API level the database knows (select cannot judge API rules without it)."""
    return [d for d in devices if d.platform == "android" and (d.value("api_max") or d.value("api_min"))]


def play_groups(text: str) -> list[str]:
    return [g.get("name") for g in ET.fromstring(text).findall("config:device-group", NS)]


def test_play_xml_parses_and_uses_googles_element_names():
    bundle = with_soc_variant(make_bundle())
    text = play_device_targeting_xml(bundle, min_sdk=31)
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
    assert "ship 'cpu' there" in text


def test_play_groups_agree_with_select_for_every_database_device():
    """Replays every database device through Play's matching and through select: same variant."""
    devices = load_devices()
    for bundle in (make_bundle(), with_soc_variant(make_bundle())):
        plan = play_plan(bundle, devices, min_sdk=26)
        for device in checkable(devices):
            props = device_properties(device)
            assert play_variant_for(plan, props) == select(bundle, props).variant_id, device.id
        assert not [a for a in plan.approximations if "select gives" in a or "cannot target" in a]


def test_rules_play_cannot_express_are_named_and_resolved_by_soc():
    plan = play_plan(make_bundle(), load_devices(), min_sdk=26)
    nnapi = next(g for g in plan.groups if g.variant == "android-nnapi")
    assert not nnapi.exact and nnapi.selector.socs
    assert any("android-nnapi: Play cannot express min_api 27" in a and "max_api 34" in a for a in plan.approximations)
    gpu = next(g for g in plan.groups if g.variant == "android-gpu")
    assert gpu.exact and gpu.selector == PlaySelector(12 * 1024 * 1024)


def test_only_exact_rules_make_an_exact_plan():
    bundle = make_bundle()
    bundle["variants"] = [v for v in bundle["variants"] if v["id"] != "android-nnapi"]
    plan = play_plan(bundle, load_devices(), min_sdk=26)
    assert plan.exact, plan.approximations
    assert [g.variant for g in plan.groups] == ["android-gpu"] and plan.other == "cpu"
    # min_api above the app's minSdkVersion cannot be said on Play
    assert not play_plan(bundle, load_devices(), min_sdk=21).exact


def test_soc_deny_has_no_play_form_and_is_resolved():
    bundle = make_bundle()
    bundle["variants"] = [v for v in bundle["variants"] if v["id"] != "android-nnapi"]
    bundle["variants"][2]["requirements"]["soc_deny"] = ["sm8550"]
    plan = play_plan(bundle, load_devices(), min_sdk=26)
    assert any("soc_deny ['sm8550'] (Play can exclude device models, not SoCs)" in a for a in plan.approximations)
    gpu = next(g for g in plan.groups if g.variant == "android-gpu")
    assert ("QTI", "SM8550") not in gpu.selector.socs
    galaxy_s23 = device_properties(get_device("galaxy-s23"))
    assert play_variant_for(plan, galaxy_s23) == select(bundle, galaxy_s23).variant_id == "cpu"


def test_a_group_under_an_earlier_one_is_left_out():
    bundle = make_bundle()
    bundle["variants"][4]["requirements"]["ram_mb_min"] = 64   # cpu now needs more RAM than android-gpu
    bundle["variants"].append({"id": "cpu-small", "runtime": "onnxruntime",
                               "requirements": {"platform": "any", "accelerator": "cpu"}})
    bundle["selection"]["order"].append("cpu-small")
    plan = play_plan(bundle, load_devices(), min_sdk=26)
    assert "cpu" not in [g.variant for g in plan.groups]
    assert any("cpu: every device it would hold matches group 'android_gpu' first" in n for n in plan.notes)


def test_digits_manifest_rules_give_an_export_that_agrees_with_select():
    """AC1 on the digits selection rules, taken from manifests/digits.yaml without building it."""
    bundle = bundle_from_manifest(REPO / "manifests" / "digits.yaml")
    devices = load_devices()
    plan = play_plan(bundle, devices)
    for device in checkable(devices):
        props = device_properties(device)
        assert play_variant_for(plan, props) == select(bundle, props).variant_id, device.id
    assert len(checkable(devices)) >= len([d for d in devices if d.platform == "android"]) - 1
    assert not [a for a in plan.approximations if "select gives" in a or "cannot target" in a]
    assert [g.variant for g in plan.groups] == ["android-nnapi", "android-gpu"]


def test_export_play_fails_without_allow_approximate(tmp_path):
    path = write_bundle(tmp_path / "b.mbundle", make_bundle())
    proc = run_mbuild("export", "play", str(path), "-o", str(tmp_path / "dt.xml"))
    assert proc.returncode == 1 and not (tmp_path / "dt.xml").exists()
    assert "approximate: android-nnapi: Play cannot express" in proc.stderr and "--allow-approximate" in proc.stderr
    proc = run_mbuild("export", "play", str(path), "--allow-approximate", "-o", str(tmp_path / "dt.xml"))
    assert proc.returncode == 0 and play_groups((tmp_path / "dt.xml").read_text())[0] == "android_nnapi"


def test_play_xml_leaves_out_ios_variants_and_the_fallback():
    names = set(play_groups(play_device_targeting_xml(make_bundle())))
    assert names == {"android_nnapi", "android_gpu"}


def test_play_xml_is_deterministic():
    assert play_device_targeting_xml(make_bundle()) == play_device_targeting_xml(make_bundle())


def test_play_xml_refuses_an_soc_whose_manufacturer_it_cannot_tell():
    bundle = with_soc_variant(make_bundle())
    bundle["variants"][-1]["requirements"]["soc_allow"] = ["zx80"]
    with pytest.raises(BundleError, match="Manufacturer:MODEL"):
        play_device_targeting_xml(bundle, min_sdk=31)
    bundle["variants"][-1]["requirements"]["soc_allow"] = ["Sinclair:ZX80"]
    assert 'manufacturer="Sinclair" model="ZX80"' in play_device_targeting_xml(bundle, min_sdk=31)


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


def test_apple_steps_agree_with_select_at_every_ios_version():
    """The shipped map is exact: every database iPhone/iPad at every OS boundary and at its newest iOS."""
    devices = load_devices()
    bundle = make_bundle()
    bundle["variants"][1]["requirements"]["max_os"] = "17"
    steps = apple_model_steps(bundle, devices)
    checked = 0
    for device in devices:
        if device.platform != "ios":
            continue
        oldest, newest = parse_version(device.value("os_min") or "0"), parse_version(device.value("os_max"))
        for version in ("14.0", "15.0", "15.4", "16.0", "17", "17.0.1", "18.2", device.value("os_max")):
            if not oldest <= parse_version(version) <= newest:
                continue  # the device never runs it
            props = device_properties(device, os_version=version)
            for identifier in device.model_identifiers:
                assert apple_variant_for(steps, identifier, version) == select(bundle, props).variant_id
                checked += 1
    assert checked > 50
    assert steps["iPhone9,1"] == [{"min_os": "15.0", "variant": "ios-gpu"}, {"min_os": None, "variant": "cpu"}]


def test_apple_map_json_is_stable_and_sorted_numerically():
    text = apple_model_map_json(make_bundle(), load_devices())
    assert text == apple_model_map_json(make_bundle(), load_devices())
    keys = [k for k in json.loads(text)["models"] if k.startswith("iPhone")]
    assert keys.index("iPhone9,1") < keys.index("iPhone13,2")
