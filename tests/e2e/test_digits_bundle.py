"""The full digits bundle (iOS, Android and CPU targets) built from manifests/digits.yaml with the real tools."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
import zipfile

import pytest

from mbuild.bundle.exports import apple_model_map, play_device_targeting_xml
from mbuild.bundle.select import device_properties, make_device_properties, select
from mbuild.devices import get_device, load_devices
from tests.conftest import run_mbuild

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"


@pytest.fixture(scope="module")
def digits(digits_full_project):
    project = digits_full_project
    with zipfile.ZipFile(project / BUNDLE) as zf:
        doc = json.loads(zf.read("bundle.json"))
    return project, doc, {v["id"]: v for v in doc["variants"]}


def test_every_target_is_in_the_bundle(digits):
    _, _, v = digits
    assert {"ios-ane", "ios-gpu", "ios-ane-w8", "android-nnapi", "android-gpu", "cpu-fp32", "cpu-int8",
            "cpu"} <= set(v)
    assert v["android-nnapi"]["format"] == "tflite" and v["ios-ane"]["format"] == "mlpackage"


def test_core_ml_is_skipped_not_passed_on_linux(digits):
    _, _, v = digits
    for vid in ("ios-ane", "ios-gpu", "ios-ane-w8"):
        val = v[vid]["validation"]
        assert val["status"] == "skipped" and "macOS" in val["reason"]
        assert "metrics" not in val
        assert val["proxy_estimate"]["label"].startswith("proxy estimate - NOT a measurement")
        assert val["proxy_estimate"]["runtime"].startswith("proxy:")


def test_tflite_variants_ran_on_real_digits(digits):
    project, doc, v = digits
    for vid in ("android-nnapi", "android-gpu"):
        val = v[vid]["validation"]
        assert val["status"] == "passed" and val["data"]["kind"] == "real" and val["data"]["samples"] == 360
        assert val["runtime"].startswith("ai-edge-litert") or "LiteRT" in val["runtime"] or "litert" in val["runtime"]
    ref = doc["source"]["reference_accuracy"]
    assert ref - v["android-nnapi"]["validation"]["metrics"]["logits"]["accuracy"] <= 1.0
    record = json.loads((project / "build/digits-cnn/targets/android-nnapi/variant/variant.json").read_text())
    assert v["android-nnapi"]["size_bytes"] <= 0.30 * record["details"]["float_bytes"]


def test_bundle_states_quantization_applied_and_io_parameters(digits):
    _, _, v = digits
    q = v["android-nnapi"]["quantization"]
    assert q["scheme"] == "static" and q["granularity"] == "per_channel"
    assert q["weights"] == "int8" and q["activations"] == "int8" and q["calibration_samples"] == 128
    (inp,) = v["android-nnapi"]["io"]["inputs"]
    assert inp["dtype"] == "int8" and isinstance(inp["quantization"]["scale"], float)
    assert isinstance(inp["quantization"]["zero_point"], int)
    assert v["ios-ane-w8"]["audit"]["status"] == "full"
    assert v["cpu-int8"]["audit"]["status"] == "full"


def test_lint_reports_are_recorded(digits):
    _, _, v = digits
    names = {lint["name"]: lint for lint in v["android-gpu"]["accelerator_coverage"]}
    assert names["gpu_delegate"]["verdict"] == "clean"
    nnapi = {lint["name"]: lint for lint in v["android-nnapi"]["accelerator_coverage"]}["nnapi"]
    assert nnapi["kind"] == "static estimate" and nnapi["coverage"] == 1.0
    ane = {lint["name"]: lint for lint in v["ios-ane"]["accelerator_coverage"]}["ane"]
    assert ane["kind"] == "static estimate" and ane["offenders"] == []


def test_selection_per_device(digits):
    _, doc, v = digits
    pick = select(doc, device_properties(get_device("iphone-7")))
    assert pick.variant_id == "ios-gpu"
    assert any("Neural Engine" in reason for _, reason in pick.reasons_rejected)
    pick = select(doc, device_properties(get_device("iphone-12")))
    assert v[pick.variant_id]["requirements"]["accelerator"] == "ane"
    pick = select(doc, make_device_properties("android", api_level=30, ram_mb=4096))
    assert pick.variant_id == "android-nnapi"
    pick = select(doc, make_device_properties("android", api_level=35, ram_mb=8192))
    assert pick.variant_id == "android-gpu"
    assert dict(pick.reasons_rejected)["android-nnapi"].startswith("needs Android API <= 34")
    pick = select(doc, make_device_properties("linux"))
    assert v[pick.variant_id]["runtime"] == "onnxruntime"
    pick = select(doc, make_device_properties("linux", ram_mb=0.5))  # meets nothing: the fallback
    assert pick.variant_id == doc["selection"]["fallback"]
    assert len(pick.reasons_rejected) == len(doc["selection"]["order"])
    proc = run_mbuild("select", str(digits[0] / BUNDLE), "--device", "iphone-7")
    assert proc.returncode == 0 and "selected: ios-gpu" in proc.stdout
    assert re.search(r"^ios-ane\s+rejected\s+needs", proc.stdout, re.M)


def test_analysis_and_capacity_for_every_variant(digits):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    project, doc, v = digits
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_model", project / "examples/digits/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module.DigitsCNN().eval()(torch.zeros(1, 1, 8, 8))
    torch_flops = counter.get_total_flops()
    source = json.loads((project / "build/digits-cnn/source/source.json").read_text())
    assert abs(source["analysis"]["flops_onnx_tool"] - torch_flops) <= 0.05 * torch_flops
    for variant in v.values():
        assert abs(variant["flops"] - torch_flops) <= 0.05 * torch_flops
        assert variant["params"] > 100_000
        assert variant["memory"]["total_bytes"] > variant["memory"]["weights_bytes"] > 0
        assert variant["capacity"], variant["id"]
        one = next(iter(variant["capacity"].values()))
        assert one["kind"] == "estimate" and "assumptions" in one


def test_platform_exports(digits):
    _, doc, _ = digits
    root = ET.fromstring(play_device_targeting_xml(doc))
    ns = "{http://schemas.android.com/apk/config}"
    assert root.tag == f"{ns}device-targeting-config"
    groups = root.findall(f"{ns}device-group")
    assert [g.get("name") for g in groups] == ["android_nnapi", "android_gpu"]
    assert all(g.find(f"{ns}device-selector") is not None for g in groups)
    mapping = apple_model_map(doc, load_devices())
    assert mapping and all(k.startswith(("iPhone", "iPad")) for k in mapping)


def test_clean_builds_of_every_runtime_are_byte_identical(digits_full_project, tmp_path):
    """A second clean checkout gives the same bundle, byte for byte (Core ML, .tflite, .onnx and .ort alike)."""
    from tests.conftest import REPO, make_project, run_doit

    other = make_project(tmp_path / "second-checkout", {"digits.yaml": (REPO / "manifests" / "digits.yaml").read_text()})
    run_doit(other, check=True, timeout=1500)
    with zipfile.ZipFile(other / BUNDLE) as a, zipfile.ZipFile(digits_full_project / BUNDLE) as b:
        assert a.namelist() == b.namelist()
        differing = [n for n in a.namelist() if a.read(n) != b.read(n)]
    assert differing == [], f"entries that differ between two clean builds: {differing}"
    assert (other / BUNDLE).read_bytes() == (digits_full_project / BUNDLE).read_bytes()


def test_recipe_auto_records_every_candidate(digits):
    project, _, v = digits
    search = v["cpu-auto"]["recipe_search"]
    assert search["kind"] == "recipe: auto" and search["chosen"] == v["cpu-auto"]["recipe"]
    attempts = {a["recipe"]: a for a in search["attempts"]}
    assert set(attempts) == {"int8", "int8-dyn", "fp16", "fp32"}
    for a in attempts.values():
        assert a["status"] == "passed" and a["size_bytes"] > 0 and a["metrics"]["logits"]["cosine"] > 0.99
    assert attempts[search["chosen"]]["size_bytes"] <= 1.1 * min(a["size_bytes"] for a in attempts.values())
    out = run_mbuild("inspect", str(project / BUNDLE)).stdout
    assert "recipe: auto search chose" in out and all(name in out for name in attempts)


def test_a_second_doit_on_the_whole_matrix_runs_nothing(digits_full_project):
    """Every runtime's check leaves its variant untouched (a Core ML proxy once rewrote the package's Manifest.json
    and wrote scratch files into the variant, so ios-ane-w8 rebuilt on every run)."""
    from tests.conftest import executed_tasks, run_doit

    proc = run_doit(digits_full_project, check=True)
    assert executed_tasks(proc.stdout) == set(), proc.stdout


def test_digits_bundle_play_export_agrees_with_select(digits_full_project):
    """Play and Apple exports of the real digits bundle agree with select (kept in this file: it shares the one build)."""
    from mbuild.bundle.exports import apple_model_steps, apple_variant_for
    from mbuild.bundle.play import play_plan, play_variant_for
    from tests.bundle.test_exports import checkable

    with zipfile.ZipFile(digits_full_project / "dist/digits-cnn-1.0.0.mbundle") as zf:
        bundle = json.loads(zf.read("bundle.json"))
    devices = load_devices()
    plan = play_plan(bundle, devices)
    steps = apple_model_steps(bundle, devices)
    for device in devices:
        props = device_properties(device)
        if device in checkable(devices):
            assert play_variant_for(plan, props) == select(bundle, props).variant_id, device.id
        elif device.platform == "ios":
            for identifier in device.model_identifiers:
                assert apple_variant_for(steps, identifier, props["os_version"]) == select(bundle, props).variant_id
    assert not [a for a in plan.approximations if "select gives" in a or "cannot target" in a]
