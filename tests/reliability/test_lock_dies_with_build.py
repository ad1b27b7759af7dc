"""SIGKILL of the main `doit -n 2` process frees the project: its forked workers die with it and hold no lock.

With an ``flock`` the workers inherited the lock descriptor, outlived their parent and kept every later
build out ("another build is running") for good. Now the rerun starts at once, notes that it took over
the killed build's lock, and builds the same bundle a clean build makes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mbuild import _lock
from tests.conftest import DIGITS_CPU, make_project, run_doit

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"


def _doit_processes(project: Path) -> list[int]:
    """Pids of doit processes (main or forked workers) running in ``project``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if Path(os.readlink(entry / "cwd")) == project and b"doit" in argv[1:3]:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


HOLDER = """
import os, sys, time
from mbuild import _lock
_lock.acquire(sys.argv[1])
child = os.fork()  # as doit -n 2 -P process forks its workers
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


def test_a_forked_worker_neither_keeps_the_lock_nor_outlives_the_holder(tmp_path):
    state = tmp_path / ".mbuild"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True)
    worker = int(holder.stdout.readline())
    holder.stdout.close()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker}").exists() and b"Z" not in _state(worker) and time.monotonic() < deadline:
        time.sleep(0.02)
    worker_gone = not Path(f"/proc/{worker}").exists() or b"Z" in _state(worker)
    try:
        path = _lock.acquire(state)  # at once: no 'another build is running'
        _lock.release(path)
    finally:
        if not worker_gone:
            os.kill(worker, signal.SIGKILL)
    assert worker_gone, "the forked worker outlived the process holding the lock"


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1][:3]
    except OSError:
        return b"Z"


@pytest.mark.slow
def test_sigkill_of_main_doit_n2_then_rerun_succeeds(digits_cpu_project, tmp_path):
    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU}).resolve()
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-n", "2", "-P", "process"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 300
    while not any(line.startswith(".  variant:") for line in list(lines)):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.01)
    assert len(_doit_processes(project)) >= 2, "no forked workers to test"
    os.kill(proc.pid, signal.SIGKILL)  # the main process only: its workers are not signalled
    proc.wait(timeout=30)
    proc.stdout.close()
    deadline = time.monotonic() + 10
    while _doit_processes(project) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _doit_processes(project) == [], "forked doit workers outlived their parent"

    rerun = run_doit(project, "-n", "2", "-P", "process")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "another build is running" not in rerun.stderr
    assert "ended without releasing the project lock; taking it over" in rerun.stderr, rerun.stderr
    assert (project / BUNDLE).read_bytes() == (digits_cpu_project / BUNDLE).read_bytes()


def test_a_build_that_ends_normally_leaves_nothing_to_take_over(tmp_path):
    """Every plain doit used to leave its pid in the lock file, so the next one printed the take-over note."""
    project = make_project(tmp_path / "p", {}, examples=()).resolve()
    first = run_doit(project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (project / ".mbuild" / "build.lock").read_text() == ""
    second = run_doit(project)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "ended without releasing" not in second.stderr, second.stderr
