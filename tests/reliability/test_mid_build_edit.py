"""A manifest edited while doit runs is never built under the old task digests: later actions refuse it.

Task digests come from the manifest read when the graph is made; each action re-reads the file. Before,
an edit mid-build was built from the new text but recorded under the old digests, so the rerun ran
nothing. Now every action compares the bytes it reads with the graph's snapshot and stops with one
line; the rerun makes a new graph from the edited file and builds what the edit changed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import DIGITS_CPU, executed_tasks, make_project, run_doit


@pytest.mark.slow
def test_an_edit_during_the_build_is_refused_then_built_by_the_rerun(tmp_path):
    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    manifest = project / "manifests" / "digits.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "doit"], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not any(line.startswith(".  source:") for line in list(lines)):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.01)
    manifest.write_text(DIGITS_CPU.replace("int8: {cosine_min: 0.99}", "int8: {cosine_min: 0.98}"))
    proc.wait(timeout=600)
    reader.join(timeout=10)
    proc.stdout.close()
    out = "".join(lines)
    assert proc.returncode != 0, out
    assert "changed during the build" in out, out
    assert "Traceback" not in out

    rerun = run_doit(project, check=True)
    assert "changed during the build" not in rerun.stdout + rerun.stderr
    report = json.loads((project / "build/digits-cnn/targets/cpu-int8/report.json").read_text())
    assert "0.98" in json.dumps(report), "the rerun did not build the edited tolerance"
    again = run_doit(project, check=True)
    assert executed_tasks(again.stdout) == set(), again.stdout
