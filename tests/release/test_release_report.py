"""report.html: self-contained, plots included, renders in headless Chromium; diff of bundle documents."""
from __future__ import annotations

import copy
import json
import re
import zipfile
from pathlib import Path

import pytest

from mbuild.bundle.diff import diff_documents, format_diff
from mbuild.bundle.report import render_report, write_report

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
CHROMIUM = Path("/usr/bin/chromium")


def _doc(project) -> dict:
    with zipfile.ZipFile(project / BUNDLE) as zf:
        return json.loads(zf.read("bundle.json"))


def _with_latency(doc: dict) -> dict:
    """Give every estimate of the digits CPU bundle a made-up latency so each device class has bars."""
    doc = copy.deepcopy(doc)
    for k, v in enumerate(doc["variants"]):
        for i, est in enumerate(sorted(v["capacity"].values(), key=lambda e: e["device"])):
            est["latency_ms"] = 0.05 * (k + 1) * (1 + i % 4)
    return doc


@pytest.fixture(scope="module")
def report_html(digits_cpu_project, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "digits-cnn-1.0.0.report.html"
    return write_report(digits_cpu_project / BUNDLE, out)


def test_report_is_self_contained_with_plots(report_html, digits_cpu_project):
    page = report_html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2, "size-vs-error and latency plots inline"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "nothing loaded from the network"
    assert "<script" not in page and "<link" not in page
    for vid in ("cpu-fp32", "cpu-int8"):
        assert f"<b>{vid}</b>" in page
    assert "int8 static QDQ per-channel W8A8" in page
    assert "neither CPU GFLOPS nor CPU cores and clocks known" in page  # missing estimates are explained, not drawn as zero
    # measured host latency comes from the dist report.json of the same build
    assert re.search(r"\d+\.\d{3} ms", page)
    # the same inputs render the same page (SVG ids and metadata are fixed)
    doc = _doc(digits_cpu_project)
    assert render_report(doc) == render_report(doc)


def test_latency_plot_groups_device_classes(digits_cpu_project):
    from mbuild.bundle.report import _devices, latency_by_class

    doc = _with_latency(_doc(digits_cpu_project))
    table, reasons = latency_by_class(doc, _devices())
    assert reasons == []
    classes = set(table["cpu-int8"])
    assert {"iOS 2022+", "iOS 2019-2021"} <= classes and any(c.startswith("Android") for c in classes), classes
    page = render_report(doc)
    assert "no latency estimate" not in page and page.count("<svg") == 2


def _chromium_screenshot(html: Path, tmp_path: Path) -> Path:
    from tests.conftest import chromium_screenshot

    return chromium_screenshot(html, tmp_path)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (scripts/setup.sh installs it "
                                                   "with apt-get when run as root)")
@pytest.mark.parametrize("with_latency", [False, True], ids=["built", "with-latency-estimates"])
def test_report_renders_in_headless_chromium(report_html, digits_cpu_project, tmp_path, with_latency):
    import matplotlib.image

    html = report_html
    if with_latency:
        html = tmp_path / "latency.html"
        html.write_text(render_report(_with_latency(_doc(digits_cpu_project))))
    png = _chromium_screenshot(html, tmp_path)
    assert png.stat().st_size > 10_000
    pixels = matplotlib.image.imread(str(png))
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    rgb = pixels[..., :3].reshape(-1, 3)
    assert rgb.std(axis=0).max() > 0.05, "the screenshot is a single colour"
    # plots drew colour (matplotlib's default blue/orange markers), not just black text on white
    coloured = ((rgb.max(axis=1) - rgb.min(axis=1)) > 0.3).sum()
    assert coloured > 200, coloured


def test_diff_documents_added_removed_changed(digits_cpu_project):
    old = _doc(digits_cpu_project)
    new = copy.deepcopy(old)
    new["version"] = "1.1.0"
    int8 = next(v for v in new["variants"] if v["id"] == "cpu-int8")
    int8["size_bytes"] = int(int8["size_bytes"] * 1.5)
    int8["validation"]["metrics"]["logits"]["cosine"] = 0.95
    int8["requirements"]["ram_mb_min"] = 64
    gone = next(v for v in new["variants"] if v["id"] == "cpu-fp32")
    new["variants"].remove(gone)
    added = copy.deepcopy(gone)
    added["id"] = "cpu-fp16"
    new["variants"].append(added)
    d = diff_documents(old, new)
    assert set(d["added"]) == {"cpu-fp16"} and set(d["removed"]) == {"cpu-fp32"}
    ch = d["changed"]["cpu-int8"]["changes"]
    assert ch["size_bytes"][1] > ch["size_bytes"][0]
    assert ch["logits.cosine"][1] == 0.95 and ch["requires.ram_mb_min"] == [1, 64]
    text = format_diff(d)
    assert "+ cpu-fp16: added" in text and "- cpu-fp32: removed" in text and "(+50.0%)" in text
    assert format_diff(diff_documents(old, old)).endswith("no differences in variants")
