"""Weight files that need unsafe unpickling are refused with a message, and the code in them never runs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import DIGITS_CPU, make_project

MAKE_EVIL = """
import os, sys, torch
sys.path.insert(0, "examples/digits")
from model import DigitsCNN

class Exploit:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[1],))

torch.save({"conv.weight": Exploit()}, "examples/digits/exploit.pt")
torch.save(DigitsCNN(), "examples/digits/whole-model.pt")  # the common mistake: the module, not its state_dict
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    project = make_project(root / "p", {"digits.yaml": DIGITS_CPU})
    subprocess.run([sys.executable, "-c", MAKE_EVIL, str(root / "PWNED-at-save")], cwd=project, check=True,
                   capture_output=True, timeout=300)
    return project


@pytest.mark.parametrize("weights", ["exploit.pt", "whole-model.pt"])
def test_unsafe_pickles_are_refused(project, weights):
    marker = project.parent / "PWNED-at-save"  # what the exploit would create if it ran
    manifest = project / "manifests" / f"{weights}.yaml"
    manifest.write_text(DIGITS_CPU.replace("weights.pt", weights).replace(
        "name: digits-cnn", f"name: digits-{weights.removesuffix('.pt')}"))
    proc = subprocess.run([sys.executable, "-m", "mbuild.actions", "source", str(manifest)], cwd=project,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs unsafe unpickling" in proc.stderr and "weights_only=True" in proc.stderr
    assert f"manifests/{weights}.yaml:5:" in proc.stderr  # located at the weights key
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
