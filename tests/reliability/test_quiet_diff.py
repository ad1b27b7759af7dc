"""`mbuild diff` reports what a reviewer can act on: no 1e-6 wobble, no change between two 'exact' SNRs."""
from __future__ import annotations

from mbuild.bundle.diff import diff_documents, format_diff


def _doc(cosine: float, snr: float, size: int = 1000) -> dict:
    return {"name": "m", "version": "1.0.0", "build_id": "0" * 32, "variants": [
        {"id": "cpu", "runtime": "onnxruntime", "recipe": "fp32", "size_bytes": size,
         "validation": {"status": "passed", "metrics": {"logits": {"cosine": cosine, "snr_db": snr}}}}]}


def test_changes_below_shown_precision_and_between_exact_snrs_are_quiet():
    d = diff_documents(_doc(0.9999991, 999.0), _doc(1.0, 141.3))
    assert d["changed"] == {} and d["unchanged"] == ["cpu"], d["changed"]
    assert "no differences in variants" in format_diff(d)


def test_real_changes_are_still_reported():
    d = diff_documents(_doc(0.9999, 999.0), _doc(0.9990, 42.5, size=900))
    changes = d["changed"]["cpu"]["changes"]
    assert set(changes) == {"logits.cosine", "logits.snr_db", "size_bytes"}, changes
    text = format_diff(d)
    assert "logits.snr_db: exact -> 42.5" in text and "0.9999 -> 0.999" in text, text
