"""A build killed with SIGKILL at several points, then rerun, gives the bundle an uninterrupted build gives.

The kills land in the source step (just after the canonical ONNX is written), in a variant's
conversion (its staging folder exists), at a random moment and while the bundle is written.
Each rerun starts from whatever the killed run left; at the end every deterministic output is
byte-identical to the reference build, so no half-written file was ever taken as up to date.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mbuild.bundle.verify import verify_bundle
from tests.conftest import DIGITS_CPU, ctrl_c_reaches_it, executed_tasks, make_project, run_doit
from tests.reliability._stable import code_digest, require_same_code

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
TARGETS = Path("build/digits-cnn/targets")


def _start(project: Path) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "doit"], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=ctrl_c_reaches_it,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def _kill_when(project: Path, condition, delay: float = 0.0, timeout: float = 240) -> bool:
    """Run doit until ``condition(project, lines)`` holds (+ ``delay``), then SIGKILL its whole process group.

    Returns False if the build finished before the condition was met (nothing was killed).
    """
    proc, lines = _start(project)
    deadline = time.monotonic() + timeout
    try:
        while not condition(project, lines):
            if proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise AssertionError("kill point never reached:\n" + "".join(lines))
            time.sleep(0.005)
        time.sleep(delay)
        if proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        return True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def announced(task: str):
    return lambda project, lines: any(line.startswith(f".  {task}") for line in list(lines))


def exists(pattern: str):
    return lambda project, lines: any(project.glob(pattern))


def after(seconds: float):
    start: list[float] = []

    def cond(project, lines):
        start or start.append(time.monotonic())
        return time.monotonic() - start[0] >= seconds
    return cond


def _deterministic_files(project: Path) -> dict[str, bytes]:
    """Every build output whose bytes do not depend on timing (check reports hold measured latency)."""
    out = {}
    for folder in ("build", "dist"):
        for p in (project / folder).rglob("*"):
            rel = p.relative_to(project).as_posix()
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(project).parts) \
                    and not rel.endswith(("report.json", "-error.log", ".report.html")):
                out[rel] = p.read_bytes()
    return out


def test_sigkill_at_many_points_then_rerun_is_byte_identical(digits_cpu_project, tmp_path):
    code = code_digest()
    run_doit(digits_cpu_project, check=True)  # the reference, rebuilt if mbuild's code changed since it was built
    project = make_project(tmp_path / "killed", {"digits.yaml": DIGITS_CPU})
    rng = random.Random(7)
    points = [
        ("canonical ONNX just written", exists("build/digits-cnn/source/model.onnx"), 0.0),
        ("variant being converted", exists(f"{TARGETS}/*/.variant.*"), 0.05),
        ("random moment", after(rng.uniform(0.5, 3.0)), 0.0),
        ("bundle being written", announced("bundle:digits-cnn"), rng.uniform(0.0, 0.3)),
    ]
    killed = [name for name, cond, delay in points if _kill_when(project, cond, delay)]
    assert len(killed) >= 3, f"too few kills landed mid-build: {killed}"
    # doit's sqlite backend commits its state when a run ends, so a killed run records no task at all:
    # every rerun redoes what the killed run did (safe; progress is not kept across kills)

    final = run_doit(project, check=True)
    require_same_code(code)
    assert (project / BUNDLE).read_bytes() == (digits_cpu_project / BUNDLE).read_bytes(), final.stdout
    verify_bundle(project / BUNDLE)
    reference = _deterministic_files(digits_cpu_project)
    mine = _deterministic_files(project)
    assert sorted(mine) == sorted(reference)
    assert [k for k in reference if mine[k] != reference[k]] == []
    for target in ("cpu-fp32", "cpu-int8"):
        report = json.loads((project / TARGETS / target / "report.json").read_text())
        assert report["validation"]["status"] == "passed"
    again = run_doit(project, check=True)
    require_same_code(code)
    assert executed_tasks(again.stdout) == set(), again.stdout
