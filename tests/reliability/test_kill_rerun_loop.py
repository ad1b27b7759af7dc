"""The kill/rerun loop: 24 random SIGKILL/SIGINT points across `doit -n 1` and `doit -n 2`.

Each round starts a build with work to do (a clean tree, or a target or the source folder deleted so
that healing has to rebuild it), stops it at a random moment with SIGKILL (whole group or the main
process only) or SIGINT (Ctrl-C), reruns to the end and then requires: the bundle and every
deterministic build file byte-identical to a clean build, no staging folder left, and a further run
that does nothing. Slow (tens of minutes on two shared cores): run it with `-m slow`.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DIGITS_CPU, ctrl_c_reaches_it, executed_tasks, make_project, run_doit
from tests.reliability._stable import code_digest, require_same_code
from tests.reliability.test_kill_rerun import _deterministic_files

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
ROUNDS = 24


def _start(project: Path, jobs: int) -> tuple[subprocess.Popen, list[str]]:
    argv = [sys.executable, "-m", "doit"] + (["-n", str(jobs), "-P", "process"] if jobs > 1 else [])
    proc = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=ctrl_c_reaches_it, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def _prepare(project: Path, rng: random.Random) -> str:
    """Leave work for the next build: everything, one target, or the source step."""
    kind = rng.choice(["clean", "target", "target", "source"])
    if kind == "clean":
        for d in ("build", "dist", ".mbuild"):
            shutil.rmtree(project / d, ignore_errors=True)
    elif kind == "target":
        shutil.rmtree(project / "build/digits-cnn/targets" / rng.choice(["cpu-fp32", "cpu-int8"]) / "variant",
                      ignore_errors=True)
    else:
        shutil.rmtree(project / "build/digits-cnn/source", ignore_errors=True)
    return kind


@pytest.mark.slow
def test_random_kills_then_reruns_end_byte_identical(digits_cpu_project, tmp_path):
    code = code_digest()
    run_doit(digits_cpu_project, check=True)
    reference = _deterministic_files(digits_cpu_project)
    project = make_project(tmp_path / "loop", {"digits.yaml": DIGITS_CPU})
    rng = random.Random(15)
    landed = []
    for round_no in range(ROUNDS):
        kind = _prepare(project, rng) if round_no else "clean"
        jobs = 1 + round_no % 2
        how = rng.choice(["SIGKILL group", "SIGKILL main", "SIGINT group"])
        delay = rng.uniform(0.5, 12.0 if kind == "clean" else 6.0)
        proc, lines = _start(project, jobs)
        time.sleep(delay)
        if proc.poll() is None:
            if how == "SIGKILL main":
                os.kill(proc.pid, signal.SIGKILL)
            else:
                os.killpg(proc.pid, signal.SIGKILL if how.startswith("SIGKILL") else signal.SIGINT)
            landed.append((round_no, kind, jobs, how, round(delay, 2)))
        proc.wait(timeout=600)
        time.sleep(0.5)
        if how == "SIGKILL main" or how == "SIGINT group":
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what a terminal's close would do to leftovers
            except ProcessLookupError:
                pass
        proc.stdout.close()
        out = "".join(lines)
        assert "Traceback" not in out or how.startswith("SIGKILL"), out
        final = run_doit(project, *(["-n", "2", "-P", "process"] if jobs > 1 else []))
        assert final.returncode == 0, (round_no, kind, how, final.stdout, final.stderr)
        require_same_code(code)
        assert (project / BUNDLE).read_bytes() == (digits_cpu_project / BUNDLE).read_bytes(), (round_no, kind, how)
        mine = _deterministic_files(project)
        assert sorted(mine) == sorted(reference), (round_no, kind, how)
        assert [k for k in reference if mine[k] != reference[k]] == [], (round_no, kind, how)
        assert not [p for p in (project / "build").rglob(".*") if p.is_dir()], (round_no, "staging left")
        again = run_doit(project)
        assert executed_tasks(again.stdout) == set(), (round_no, again.stdout)
    assert len(landed) >= 20, f"only {len(landed)} kills landed mid-build: {landed}"
