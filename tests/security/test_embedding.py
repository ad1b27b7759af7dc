"""Bundle text cannot break out of the files mbuild writes from it: Play XML, the Apple JSON map, report.html."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from mbuild.bundle.exports import apple_model_map_json, play_device_targeting_xml
from mbuild.bundle.report import render_report
from mbuild.devices import load_devices
from mbuild.errors import BundleError
from tests.security._craft import base_doc

EVIL = "x --> <evil attr='1'/> <!-- & </script>"


def _android(doc: dict, **req) -> dict:
    doc["variants"].insert(0, {**doc["variants"][0], "id": "android-gpu",
                               "requirements": {"platform": "android", "accelerator": "gpu", "min_api": 26, **req}})
    doc["selection"]["order"] = ["android-gpu", "cpu"]
    return doc


def test_play_xml_comments_cannot_be_closed_by_bundle_text():
    doc = _android(base_doc(), soc_deny=[EVIL])
    doc["name"] = doc["version"] = EVIL  # not schema-valid; the exporter must hold even so
    text = play_device_targeting_xml(doc)
    root = ET.fromstring(text.split("\n", 1)[1])
    assert all(el.tag != "evil" for el in root.iter())
    assert text.count("<!--") == text.count("-->") == 2  # only our two comments: the bundle text stays inside


def test_play_xml_refuses_characters_xml_cannot_hold():
    doc = _android(base_doc(), soc_allow=["QTI:SM8550\x01"])
    with pytest.raises(BundleError, match="XML cannot carry"):
        play_device_targeting_xml(doc)


def test_apple_map_and_diff_json_are_inert_in_html():
    doc = base_doc()
    doc["variants"][0]["id"] = doc["selection"]["fallback"] = EVIL
    doc["selection"]["order"] = [EVIL]
    text = apple_model_map_json(doc, load_devices())
    assert "<" not in text and ">" not in text and "&" not in text
    assert set(json.loads(text).values()) == {EVIL}  # still the same JSON
    from mbuild.bundle.exports import embeddable_json

    assert json.loads(embeddable_json({"k": EVIL})) == {"k": EVIL}


def test_report_html_escapes_bundle_text():
    doc = base_doc()
    doc["description"] = EVIL
    doc["variants"][0]["quantization"]["summary"] = EVIL
    doc["variants"][0]["recipe"] = EVIL
    page = render_report(doc)
    assert "<evil" not in page and "</script>" not in page
    assert "&lt;evil attr=&#x27;1&#x27;/&gt;" in page


def test_report_shows_only_a_verified_key_id(tmp_path):
    """report.html used to print the key id the bundle claims; now only one the caller verified."""
    from mbuild.bundle.report import write_report
    from mbuild.bundle.sign import generate_keypair, load_private_key, signature_text
    from tests.security._craft import base_entries, craft, specs_of

    private, _ = generate_keypair(tmp_path / "k.pem")
    entries = base_entries()
    entries["SIGNATURE.ed25519"] = signature_text(entries["SHA256SUMS"], load_private_key(private))
    bundle = tmp_path / "tiny-1.0.0.mbundle"
    bundle.write_bytes(craft(specs_of(entries)))
    page = write_report(bundle, tmp_path / "r.html").read_text()
    assert "signed by" not in page
    page = write_report(bundle, tmp_path / "r.html", signed_by="sha256:0123456789abcdef").read_text()
    assert "signed by sha256:0123456789abcdef" in page


def test_terminal_output_carries_no_escape_sequences(tmp_path, capsys):
    """inspect/select/diff print bundle text; an ANSI escape or a bidi override in it is shown as '?'."""
    from mbuild.cli import main
    from tests.security._craft import base_entries, craft, specs_of

    doc = base_doc()
    doc["variants"][0]["quantization"]["summary"] = "int8\x1b[2J\x1b]0;owned\x07 \u202eevil"
    doc["variants"][0]["requirements"]["note"] = "\x1b[31mred"
    bundle = tmp_path / "tiny-1.0.0.mbundle"
    bundle.write_bytes(craft(specs_of(base_entries(doc))))
    for argv in (["inspect", str(bundle)], ["select", str(bundle), "--platform", "linux"],
                 ["diff", str(bundle), str(bundle)]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out, (argv, out)
    assert main(["inspect", str(bundle)]) == 0 and "int8?[2J" in capsys.readouterr().out
