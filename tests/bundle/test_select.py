"""Selection: which variant a device loads and why the earlier ones were rejected."""
from __future__ import annotations

import json
import zipfile

import pytest

from mbuild.bundle.select import (
    SELECTION_ALGORITHM,
    check_requirements,
    device_properties,
    make_device_properties,
    parse_version,
    select,
    select_in_bundle_file,
)
from mbuild.devices import get_device
from mbuild.errors import BundleError

ORDER = ["ios-ane", "ios-gpu", "android-nnapi", "android-gpu", "cpu"]


def make_bundle() -> dict:
    """The digits-like bundle the acceptance criteria talk about, written by hand."""
    def variant(vid, runtime, **req):
        return {"id": vid, "file": f"{vid}/model", "runtime": runtime, "flops": 100_000, "params": 1_000,
                "requirements": {"ram_mb_min": 12, **req}, "validation": {"status": "passed"}}

    return {
        "name": "digits-cnn", "version": "1.0.0",
        "variants": [
            variant("ios-ane", "coreml", platform="ios", min_os="16.0", accelerator="ane"),
            variant("ios-gpu", "coreml", platform="ios", min_os="15.0", accelerator="gpu"),
            variant("android-nnapi", "tflite", platform="android", min_api=27, max_api=34, accelerator="nnapi"),
            variant("android-gpu", "tflite", platform="android", min_api=26, accelerator="gpu"),
            {"id": "cpu", "file": "cpu/model.onnx", "runtime": "onnxruntime", "flops": 100_000,
             "requirements": {"platform": "any", "accelerator": "cpu"}, "validation": {"status": "passed"}},
        ],
        "selection": {"order": ORDER, "fallback": "cpu", "algorithm": SELECTION_ALGORITHM},
    }


def test_iphone_7_gets_gpu_variant_because_a10_has_no_neural_engine():
    sel = select(make_bundle(), device_properties(get_device("iphone-7")))
    assert sel.variant_id == "ios-gpu"
    assert [v for v, _ in sel.reasons_rejected] == ["ios-ane"]
    reason = sel.reasons_rejected[0][1]
    assert "Neural Engine usable by Core ML" in reason and "has none" in reason and "A10" in reason


def test_iphone_8_a11_neural_engine_is_not_usable_by_core_ml():
    sel = select(make_bundle(), device_properties(get_device("iphone-8")))
    assert sel.variant_id == "ios-gpu"
    assert "Core ML cannot use" in sel.reasons_rejected[0][1]


def test_iphone_12_gets_ane_variant():
    sel = select(make_bundle(), device_properties(get_device("iphone-12")))
    assert sel.variant_id == "ios-ane"
    assert sel.reasons_rejected == []
    assert "ios-ane" in sel.explanation


def test_android_api_30_with_nnapi_gets_nnapi_variant():
    props = make_device_properties("android", api_level=30, soc="sm8150", ram_mb=6144)
    assert props["nnapi"] is True
    sel = select(make_bundle(), props)
    assert sel.variant_id == "android-nnapi"
    assert [v for v, _ in sel.reasons_rejected] == ["ios-ane", "ios-gpu"]
    assert all("built for ios" in r for _, r in sel.reasons_rejected)


def test_database_device_on_api_30_gets_nnapi_variant():
    sel = select(make_bundle(), device_properties(get_device("pixel-8"), api_level=30))
    assert sel.variant_id == "android-nnapi"


def test_android_api_35_gets_gpu_variant_with_nnapi_deprecation_reason():
    sel = select(make_bundle(), make_device_properties("android", api_level=35, ram_mb=8192))
    assert sel.variant_id == "android-gpu"
    reasons = dict(sel.reasons_rejected)
    assert "Android API <= 34" in reasons["android-nnapi"]
    assert "NNAPI deprecated from Android 15" in reasons["android-nnapi"]
    assert "API 35" in reasons["android-nnapi"]


def test_device_meeting_nothing_else_gets_cpu_fallback():
    sel = select(make_bundle(), make_device_properties("linux", ram_mb=4096))
    assert sel.variant_id == "cpu"
    assert [v for v, _ in sel.reasons_rejected] == ORDER[:-1]
    assert all(reason for _, reason in sel.reasons_rejected)


def test_fallback_is_used_even_when_not_listed_in_order():
    bundle = make_bundle()
    bundle["selection"]["order"] = ["ios-ane"]
    sel = select(bundle, make_device_properties("linux"))
    assert sel.variant_id == "cpu" and "fallback" in sel.explanation


def test_ram_reason_names_both_sides():
    reasons = check_requirements({"platform": "any", "ram_mb_min": 512}, make_device_properties("android", ram_mb=256))
    assert reasons == ["needs >= 512 MB RAM; device has 256 MB"]


def test_unknown_property_fails_the_requirement_that_reads_it():
    reasons = check_requirements({"platform": "ios", "min_os": "16.0"}, make_device_properties("ios"))
    assert reasons and "unknown" in reasons[0]


def test_soc_allow_and_deny():
    props = make_device_properties("android", api_level=33, soc="SM8550", ram_mb=8192)
    assert check_requirements({"soc_allow": ["sm8550"]}, props) == []
    assert "limited to SoCs" in check_requirements({"soc_allow": ["sm8650"]}, props)[0]
    assert check_requirements({"soc_deny": ["sm8550"]}, props) == ["excluded on SoC sm8550"]


def test_failed_variant_is_never_selected():
    bundle = make_bundle()
    bundle["variants"][0]["validation"]["status"] = "failed"
    sel = select(bundle, device_properties(get_device("iphone-12")))
    assert sel.variant_id == "ios-gpu"
    assert dict(sel.reasons_rejected)["ios-ane"] == "failed validation in the build"


def test_versions_compare_numerically():
    assert parse_version("15") < parse_version("15.4") < parse_version("16.0") == parse_version("16")
    assert parse_version("9.3") < parse_version("10.0")


def test_missing_fallback_is_a_bundle_error():
    bundle = make_bundle()
    bundle["selection"]["fallback"] = "nope"
    with pytest.raises(BundleError, match="fallback"):
        select(bundle, make_device_properties("linux"))


def test_select_in_bundle_file_verifies_first(tmp_path):
    """A zip holding only a bundle.json (no checksums) is not a bundle: select refuses it instead of choosing."""
    path = tmp_path / "digits-1.0.0.mbundle"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bundle.json", json.dumps(make_bundle()))
    with pytest.raises(BundleError, match="missing SHA256SUMS"):
        select_in_bundle_file(path, device_properties(get_device("iphone-12")))


def test_select_in_bundle_file_errors_are_bundle_errors(tmp_path):
    not_zip = tmp_path / "x.mbundle"
    not_zip.write_text("hello")
    with pytest.raises(BundleError, match="zip"):
        select_in_bundle_file(not_zip, make_device_properties("linux"))
    empty = tmp_path / "y.mbundle"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("other.txt", "x")
    with pytest.raises(BundleError, match="missing bundle.json"):
        select_in_bundle_file(empty, make_device_properties("linux"))


def test_algorithm_text_is_numbered_and_names_the_rules():
    lines = [line for line in SELECTION_ALGORITHM.splitlines() if line.strip()]
    assert [line.split(".")[0] for line in lines] == ["1", "2", "3", "4", "5"]
    for word in ("selection.order", "fallback", "min_os", "max_api", "ram_mb_min", "soc_allow", "NNAPI"):
        assert word in SELECTION_ALGORITHM


def test_manifest_soc_allow_and_deny_reach_the_requirements(tmp_path):
    from mbuild.bundle.selection import target_soc_rules
    from mbuild.manifest import load_manifest
    from tests.conftest import DIGITS_CPU, make_project

    text = DIGITS_CPU.replace("cpu-int8: {runtime: onnxruntime, recipe: int8}",
                              "cpu-int8: {runtime: onnxruntime, recipe: int8, soc_allow: [SM8550, sm8650], "
                              "soc_deny: [exynos850]}")
    project = make_project(tmp_path / "p", {"digits.yaml": text})
    manifest = load_manifest(project / "manifests" / "digits.yaml")
    assert target_soc_rules(manifest, "cpu-int8") == {"soc_allow": ["sm8550", "sm8650"], "soc_deny": ["exynos850"]}
    assert target_soc_rules(manifest, "cpu-fp32") == {}


def _manifest(tmp_path, targets: str, select_block: str = ""):
    from mbuild.manifest import load_manifest
    from tests.conftest import DIGITS_CPU, make_project

    head = DIGITS_CPU.split("targets:")[0]
    text = head + "targets:\n" + targets + "validate:\n  int8: {cosine_min: 0.99}\n" + select_block
    project = make_project(tmp_path / "p", {"m.yaml": text})
    return project / "manifests" / "m.yaml", load_manifest(project / "manifests" / "m.yaml")


MATRIX = """\
  cpu-fp32: {runtime: onnxruntime, recipe: fp32}
  ios-gpu: {runtime: coreml, compute_units: cpu_and_gpu, min_os: "15.0", recipe: fp16}
  ios-ane: {runtime: coreml, compute_units: cpu_and_ne, min_os: "16.0", recipe: fp16}
  android-gpu: {runtime: tflite, delegate: gpu, recipe: fp16}
  android-nnapi: {runtime: tflite, delegate: nnapi, recipe: int8}
  cpu-int8: {runtime: onnxruntime, recipe: int8}
"""


def test_default_order_puts_accelerated_platform_variants_before_platform_any(tmp_path):
    from mbuild.bundle.selection import manifest_requirements, selection_rules, selection_warnings

    _, manifest = _manifest(tmp_path, MATRIX)
    reqs = manifest_requirements(manifest)
    variants = [{"id": n, "runtime": manifest.targets[n].runtime, "requirements": r} for n, r in reqs.items()]
    rules = selection_rules(manifest, variants)
    assert rules["order"] == ["ios-ane", "android-nnapi", "ios-gpu", "android-gpu", "cpu-fp32", "cpu-int8"]
    assert rules["fallback"] == "cpu-int8"
    bundle = {"variants": variants, "selection": rules}
    assert select(bundle, device_properties(get_device("iphone-12"))).variant_id == "ios-ane"
    assert select(bundle, device_properties(get_device("pixel-8"))).variant_id == "android-gpu"
    # cpu-fp32 matches everything, so cpu-int8 after it is only reachable as the fallback: no warning
    assert selection_warnings(manifest) == []


def test_validate_warns_about_unreachable_targets_bad_fallback_and_missing_ones(tmp_path):
    from tests.conftest import run_mbuild

    select_block = "select:\n  order: [cpu-fp32, ios-ane, android-gpu]\n  fallback: ios-gpu\n"
    path, _ = _manifest(tmp_path, MATRIX, select_block)
    proc = run_mbuild("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, proc.stderr
    unreachable, fallback, missing = warnings
    assert "m.yaml:" in unreachable and "ios-ane, android-gpu can never be chosen: 'cpu-fp32' comes first" in unreachable
    assert "select.fallback: 'ios-gpu' does not match every device (platform=ios, min_os=15.0" in fallback
    assert "select.order: leaves out android-nnapi, cpu-int8" in missing


def test_select_order_is_used_as_written(tmp_path):
    from mbuild.bundle.selection import manifest_requirements, selection_rules

    _, manifest = _manifest(tmp_path, MATRIX, "select:\n  order: [ios-ane, cpu-fp32]\n")
    reqs = manifest_requirements(manifest)
    variants = [{"id": n, "runtime": manifest.targets[n].runtime, "requirements": r} for n, r in reqs.items()]
    assert selection_rules(manifest, variants)["order"] == ["ios-ane", "cpu-fp32"]


def test_select_cli_table_and_json(tmp_path):
    from tests.bundle.test_exports import write_bundle
    from tests.conftest import run_mbuild

    path = write_bundle(tmp_path / "b.mbundle", make_bundle())
    proc = run_mbuild("select", str(path), "--device", "iphone-7")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "selected: ios-gpu" in out and "iPhone 7 (Apple A10 Fusion), iOS 15, 2048 MB RAM  ->  ios-gpu" in out
    assert out.count("A10") == 1                           # the chip is named once, not in every reason
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[4:] if line.strip() and
            line.split()[0] in ORDER}
    assert rows == {"ios-ane": "rejected", "ios-gpu": "CHOSEN", "android-nnapi": "not", "android-gpu": "not",
                    "cpu": "not"}
    proc = run_mbuild("select", str(path), "--platform", "android", "--api", "35", "--json")
    doc = json.loads(proc.stdout)
    assert doc["variant"] == "android-gpu" and doc["device"]["api_level"] == 35
    assert [r["variant"] for r in doc["rejected"]] == ["ios-ane", "ios-gpu", "android-nnapi"]
    assert "NNAPI deprecated" in doc["rejected"][2]["reason"]


def test_a_core_ml_variant_for_all_compute_units_is_chosen_without_an_accelerator_check():
    """compute_units: all records accelerator "any": Core ML uses what the device has, even a phone without ANE."""
    bundle = make_bundle()
    bundle["variants"].insert(0, {"id": "ios-all", "file": "ios-all/model", "runtime": "coreml", "flops": 100_000,
                                  "requirements": {"platform": "ios", "min_os": "15.0", "accelerator": "any"},
                                  "validation": {"status": "passed"}})
    bundle["selection"]["order"] = ["ios-all", *ORDER]
    assert select(bundle, device_properties(get_device("iphone-7"))).variant_id == "ios-all"
    assert check_requirements({"accelerator": "any"}, device_properties(get_device("iphone-7"))) == []
