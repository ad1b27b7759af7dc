"""report.html a person can read: every variant on every plot (or named with the reason), legends instead of
overlapping labels, all variants per device class, the selection-order change in the HTML diff."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mbuild.bundle.diff import diff_documents
from mbuild.bundle.report import render_report
from mbuild.devices import load_devices
from mbuild.devices.capacity import estimate_variant

CHROMIUM = Path("/usr/bin/chromium")


def doc() -> dict:
    def variant(vid, runtime, size, req, validation, precision="fp32"):
        v = {"id": vid, "runtime": runtime, "format": runtime, "recipe": precision, "precision": precision,
             "size_bytes": size, "flops": 4_400_000, "params": 236_000, "requirements": req, "validation": validation,
             "memory": {"weights_bytes": size, "peak_activation_bytes": 40_000}, "quantization": {"summary": "-"}}
        v["capacity"] = estimate_variant(v, load_devices())
        return v

    passed = {"status": "passed", "metrics": {"logits": {"cosine": 0.9991, "accuracy_drop": 0.4}}}
    proxy = {"status": "skipped", "reason": "Core ML runs only on macOS",
             "proxy_estimate": {"metrics": {"logits": {"cosine": 0.9995, "accuracy_drop": 0.1}}}}
    bare = {"status": "skipped", "reason": "no runtime on this host"}
    return {"name": "readable", "version": "2.0.0", "build_id": "x" * 64, "source": {},
            "variants": [
                variant("cpu-fp32", "onnxruntime", 926_000, {"platform": "any", "accelerator": "cpu"},
                        {"status": "passed", "metrics": {"logits": {"cosine": 1.0, "accuracy_drop": 0.0}}}),
                variant("cpu-int8", "onnxruntime", 252_000, {"platform": "any", "accelerator": "cpu"}, passed),
                variant("ios-ane", "coreml", 470_000, {"platform": "ios", "min_os": "16.0", "accelerator": "ane"},
                        proxy, "fp16"),
                variant("android-gpu", "tflite", 480_000, {"platform": "android", "accelerator": "gpu"}, bare, "fp16"),
            ],
            "selection": {"order": ["ios-ane", "android-gpu", "cpu-int8", "cpu-fp32"], "fallback": "cpu-fp32"}}


def test_every_variant_is_on_the_size_plot_or_named_with_the_reason():
    from mbuild.bundle.report import size_error_points

    measured, proxy, missing = size_error_points(doc())
    assert [p[0] for p in measured] == ["cpu-fp32", "cpu-int8"] and [p[0] for p in proxy] == ["ios-ane"]
    assert len(measured) + len(proxy) + len(missing) == len(doc()["variants"])
    page = render_report(doc())
    assert "Hollow markers (ios-ane)" in page
    assert "Not on the plot: android-gpu (skipped: no runtime on this host)." in page


def test_latency_panel_names_the_classes_a_variant_has_no_bar_for():
    page = render_report(doc())
    assert "ios-ane: no bar for Android" in page
    assert "android-gpu: no bar for" in page and "iOS" in page.split("android-gpu: no bar for")[1][:200]


def test_html_diff_shows_the_selection_order_change():
    new = doc()
    old = copy.deepcopy(new)
    old["version"] = "1.0.0"
    old["selection"]["order"] = ["cpu-fp32", "cpu-int8", "ios-ane", "android-gpu"]
    page = render_report(new, diff=diff_documents(old, new))
    assert ("selection order: cpu-fp32 &gt; cpu-int8 &gt; ios-ane &gt; android-gpu -&gt; "
            "ios-ane &gt; android-gpu &gt; cpu-int8 &gt; cpu-fp32") in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_readable_report_screenshot(tmp_path):
    import matplotlib.image

    html = tmp_path / "report.html"
    html.write_text(render_report(doc()))
    from tests.conftest import chromium_screenshot

    png = chromium_screenshot(html, tmp_path)
    assert png.stat().st_size > 10_000
    rgb = matplotlib.image.imread(str(png))[..., :3].reshape(-1, 3)
    coloured = ((rgb.max(axis=1) - rgb.min(axis=1)) > 0.3).sum()
    assert coloured > 2000, coloured
