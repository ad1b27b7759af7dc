"""mbuild fleet: selection and capacity weighed by users' device models; exact numbers on a hand-made fleet."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbuild.bundle.fleet import fleet_report, match_device, read_shares, weighted_percentile
from mbuild.devices import load_devices
from mbuild.errors import MbuildError
from tests.bundle.test_exports import write_bundle
from tests.conftest import REPO, run_mbuild

CHROMIUM = Path("/usr/bin/chromium")
SAMPLE = REPO / "examples" / "fleet" / "device-shares.example.csv"
FIVE = """\
# hand-made fleet for the test: counts of users
model,users
iPhone 12,40
iPhone 7,10
Samsung Galaxy S23,30
iPhone10,3,15
Nokia 3310,5
"""


def fleet_bundle() -> dict:
    def variant(vid, precision, **req):
        return {"id": vid, "runtime": "x", "flops": 1e9, "precision": precision, "requirements": req,
                "memory": {"weights_bytes": 4_000_000, "peak_activation_bytes": 2_000_000},
                "validation": {"status": "passed"}}

    return {"name": "fleet-test", "version": "1.0.0",
            "variants": [variant("ios-ane", "fp16", platform="ios", min_os="16.0", accelerator="ane"),
                         variant("android-gpu", "fp16", platform="android", min_api=26, accelerator="gpu"),
                         variant("cpu", "fp32", platform="any", accelerator="cpu", ram_mb_min=3000)],
            "selection": {"order": ["ios-ane", "android-gpu", "cpu"], "fallback": "cpu"}}


def five(tmp_path) -> Path:
    path = tmp_path / "five.csv"
    path.write_text(FIVE.replace("iPhone10,3", '"iPhone10,3"'))
    return path


def test_five_device_fleet_gives_exact_numbers(tmp_path):
    rep = fleet_report(fleet_bundle(), read_shares(five(tmp_path)), load_devices())
    assert rep["served_by_variant"] == {"ios-ane": 0.40, "android-gpu": 0.30, "cpu": 0.15}
    assert rep["fallback_only"] == 0.15            # iPhone X: its A11 Neural Engine is closed to Core ML
    assert rep["no_usable_variant"] == 0.10        # iPhone 7: 2 GB RAM, the fallback needs 3000 MB
    assert rep["users"] == {"total": 1.0, "matched": 0.95, "unknown_device": 0.05}
    # by hand, with docs/devices.md's constants:
    ane = max(1e9 / (11e12 * 0.25), (4e6 + 1e6) / (34.1e9 * 0.6)) * 1e3 + 0.5      # iPhone 12: 0.864 ms
    gpu = 1e9 / (3481.6e9 * 0.4) * 1e3 + 1.0                                           # Galaxy S23: 1.718 ms
    cpu = 1e9 / (2 * 2.39e9 * 16 * 0.5) * 1e3 + 0.05                                   # iPhone X: 26.20 ms
    lat = {d["device"]: d["latency_ms"] for d in rep["devices"]}
    assert lat["iphone-12"] == pytest.approx(ane, rel=1e-4) == pytest.approx(0.8636, abs=1e-4)
    assert lat["galaxy-s23"] == pytest.approx(gpu, rel=1e-4) == pytest.approx(1.7180, abs=1e-4)
    assert lat["iphone-x"] == pytest.approx(cpu, rel=1e-4) == pytest.approx(26.2016, abs=1e-3)
    assert lat["iphone-7"] is None
    # users with an estimate: 0.40 at 0.86 ms, 0.30 at 1.72 ms, 0.15 at 26.2 ms (of 0.85)
    assert rep["latency_ms"]["share_with_estimate"] == 0.85
    assert rep["latency_ms"]["p50"] == pytest.approx(gpu, rel=1e-4)
    assert rep["latency_ms"]["p90"] == pytest.approx(cpu, rel=1e-4)
    assert rep["latency_ms"]["p99"] == pytest.approx(cpu, rel=1e-4)
    assert rep["slowest_variant"] == "cpu"
    assert [d["device"] for d in rep["slowest_variant_devices"]] == ["iphone-x"]
    assert rep["unknown"] == [{"name": "Nokia 3310", "line": 7, "share": 0.05,
                               "match": "no device in the database is close: counted as unknown device"}]


def test_weighted_percentile_is_nearest_rank_by_weight():
    pairs = [(1.0, 0.4), (2.0, 0.3), (30.0, 0.15)]
    assert weighted_percentile(pairs, 0.47) == 1.0
    assert weighted_percentile(pairs, 0.5) == 2.0
    assert weighted_percentile(pairs, 0.9) == 30.0
    assert weighted_percentile([], 0.5) is None


def test_names_are_matched_with_a_confidence_note_never_dropped():
    devices = load_devices()
    assert match_device("iPhone13,2", devices)[0].id == "iphone-12"
    assert match_device("pixel-8", devices)[1] == "exact id"
    device, how = match_device("Samsung Galaxy S21 5G", devices)
    assert device.id == "galaxy-s21" and how.startswith("fuzzy match") and "check it" in how
    assert match_device("Xiaomi Redmi Note 8", devices)[0] is None      # not the Note 12: model numbers differ


def test_share_table_formats_and_errors(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("Device Model,Share\nPixel 8,60%\niPhone 7,20%\nfoo,20%\n")
    assert [round(r.share, 3) for r in read_shares(path)] == [0.6, 0.2, 0.2]
    path.write_text("phone,count\nPixel 8,3\n")
    with pytest.raises(MbuildError, match="device column"):
        read_shares(path)
    path.write_text("device,share\nPixel 8,lots\n")
    with pytest.raises(MbuildError, match="s.csv:2: share 'lots' is not a number"):
        read_shares(path)


def test_fleet_cli_on_the_sample_share_file(tmp_path):
    bundle = write_bundle(tmp_path / "fleet-test-1.0.0.mbundle", fleet_bundle())
    assert SAMPLE.read_text().startswith("# EXAMPLE ONLY")
    proc = run_mbuild("fleet", str(bundle), "--devices", str(SAMPLE), "-o", str(tmp_path / "fleet.html"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("share of users", "served only by the fallback (cpu):", "no usable variant:",
                   "estimated latency over users", "p50", "p90", "p99", "most users on the slowest variant",
                   "'Nokia 3310' (6.0%): no device in the database is close"):
        assert needle in out, needle
    page = (tmp_path / "fleet.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2 and "<script" not in page
    doc = json.loads(run_mbuild("fleet", str(bundle), "--devices", str(SAMPLE), "--json",
                                "-o", str(tmp_path / "f2.html")).stdout)
    assert abs(sum(doc["served_by_variant"].values()) + doc["no_usable_variant"] + doc["users"]["unknown_device"]
               - 1.0) < 1e-6


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_fleet_html_renders_in_headless_chromium(tmp_path):
    import matplotlib.image

    from mbuild.bundle.fleet_html import write_fleet_html

    html = write_fleet_html(fleet_report(fleet_bundle(), read_shares(SAMPLE), load_devices()), tmp_path / "f.html")
    from tests.conftest import chromium_screenshot

    png = chromium_screenshot(html, tmp_path)
    assert png.stat().st_size > 10_000
    rgb = matplotlib.image.imread(str(png))[..., :3].reshape(-1, 3)
    assert rgb.std(axis=0).max() > 0.05
    coloured = ((rgb.max(axis=1) - rgb.min(axis=1)) > 0.3).sum()
    assert coloured > 2000, coloured        # the bars and the latency curve are drawn in colour
