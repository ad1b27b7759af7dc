"""Bundles: schema-valid, verified, tamper-evident, byte-identical across clean builds."""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from mbuild.bundle.archive import PAGE
from mbuild.bundle.schema import bundle_schema_problems
from mbuild.bundle.verify import verify_bundle
from mbuild.errors import BundleError
from tests.conftest import run_mbuild

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"


def test_bundle_validates_and_verifies(digits_cpu_project):
    path = digits_cpu_project / BUNDLE
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("bundle.json"))
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            if info.filename.endswith((".onnx", ".ort")):
                data_offset = info.header_offset + 30 + len(info.filename) + len(info.extra)
                assert data_offset % PAGE == 0, info.filename
    assert bundle_schema_problems(doc) == []
    assert [v["id"] for v in doc["variants"]] == ["cpu-fp32", "cpu-int8"]
    assert verify_bundle(path)["name"] == "digits-cnn"
    proc = run_mbuild("verify", str(path))
    assert proc.returncode == 0 and "checksums and schema valid" in proc.stdout


def _flip_byte(src, dst, entry: str, offset: int = 100):
    shutil.copyfile(src, dst)
    with zipfile.ZipFile(dst) as zf:
        info = zf.getinfo(entry)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + offset
    with open(dst, "r+b") as fh:
        fh.seek(start)
        byte = fh.read(1)
        fh.seek(start)
        fh.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("entry", ["variants/cpu-int8/model.onnx", "variants/cpu-fp32/model.ort", "bundle.json"])
def test_verify_names_a_tampered_entry(digits_cpu_project, tmp_path, entry):
    bad = tmp_path / "bad.mbundle"
    _flip_byte(digits_cpu_project / BUNDLE, bad, entry)
    with pytest.raises(BundleError, match=f"entry '{entry}' does not match"):
        verify_bundle(bad)
    proc = run_mbuild("verify", str(bad))
    assert proc.returncode != 0 and entry in proc.stderr and "Traceback" not in proc.stderr


def test_inspect_shows_quantization_and_validation(digits_cpu_project):
    proc = run_mbuild("inspect", str(digits_cpu_project / BUNDLE))
    assert proc.returncode == 0, proc.stderr
    assert "int8 static QDQ per-channel W8A8" in proc.stdout
    assert "calibrated on 128 samples" in proc.stdout
    assert "full 6/6" in proc.stdout  # audit: every weight tensor quantized


def test_int8_keeps_accuracy_and_shrinks(digits_cpu_project):
    with zipfile.ZipFile(digits_cpu_project / BUNDLE) as zf:
        doc = json.loads(zf.read("bundle.json"))
    v = {x["id"]: x for x in doc["variants"]}
    fp32, int8 = v["cpu-fp32"], v["cpu-int8"]
    acc32 = fp32["validation"]["metrics"]["logits"]["accuracy"]
    acc8 = int8["validation"]["metrics"]["logits"]["accuracy"]
    assert acc32 - acc8 <= 1.0
    assert int8["size_bytes"] <= 0.30 * fp32["size_bytes"]
    assert int8["quantization"]["calibration_samples"] == 128
    assert int8["audit"]["status"] == "full"
