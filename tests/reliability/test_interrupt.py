"""Ctrl-C and a killed warm worker: one clear line, nothing half-written, and the next doit completes.

Both tests drive the real doit on the small CPU digits manifest and act from outside, as a
user (Ctrl-C goes to the whole foreground process group) or the kernel (SIGKILL) would.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import DIGITS_CPU, ctrl_c_reaches_it, executed_tasks, make_project, run_doit
from tests.reliability._stable import code_digest, require_same_code

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"


def _start(project: Path, env: dict | None = None) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "doit"], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=ctrl_c_reaches_it,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def _wait_for(condition, proc: subprocess.Popen, lines: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the build ended before the point to act on:\n" + "".join(lines)
        assert time.monotonic() < deadline, "point never reached:\n" + "".join(lines)
        time.sleep(0.005)


def _staging(project: Path, target: str):
    return lambda: any((project / "build/digits-cnn/targets" / target).glob(".variant.*"))


def _ppid(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(") ", 1)[1].split()[1])


def _workers(session: int, family: str) -> list[int]:
    """Warm workers of one family in the build's session (found through /proc, as `ps` would).

    A worker's forked children carry its command line too; the worker is the one whose parent is not one.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"mbuild.workers.serve" in argv and family.encode() in argv and os.getsid(int(entry.name)) == session:
                found.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return [pid for pid in found if _ppid(pid) not in found]


def _finish(proc: subprocess.Popen, lines: list[str], timeout: float = 300) -> str:
    proc.wait(timeout=timeout)
    time.sleep(0.2)  # the reader thread drains the pipe
    return "".join(lines)


def test_ctrl_c_stops_with_one_line_and_the_rerun_gives_the_same_bundle(digits_cpu_project, tmp_path):
    code = code_digest()
    run_doit(digits_cpu_project, check=True)  # the reference, rebuilt if mbuild's code changed since
    project = make_project(tmp_path / "interrupted", {"digits.yaml": DIGITS_CPU})
    proc, lines = _start(project)
    try:
        _wait_for(_staging(project, "cpu-int8"), proc, lines)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out = _finish(proc, lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode in (130, -signal.SIGINT), out
    after = out.split(".  variant:digits-cnn/cpu-int8\n", 1)[1]
    assert after.strip().splitlines() == [
        "interrupted: finished tasks are kept, nothing half-written; run doit again to resume"], out
    assert not list((project / "build/digits-cnn/targets/cpu-int8").glob(".variant.*")), "staging left behind"
    assert not (project / "build/digits-cnn/targets/cpu-int8/variant/variant.json").exists()

    rerun = run_doit(project, check=True)
    require_same_code(code)
    assert "source:digits-cnn" not in executed_tasks(rerun.stdout), rerun.stdout  # finished work was kept
    assert "variant:digits-cnn/cpu-int8" in executed_tasks(rerun.stdout), rerun.stdout
    assert (project / BUNDLE).read_bytes() == (digits_cpu_project / BUNDLE).read_bytes()


def test_a_killed_worker_fails_only_its_task_and_the_rerun_succeeds(tmp_path):
    project = make_project(tmp_path / "killed-worker", {"digits.yaml": DIGITS_CPU})
    proc, lines = _start(project, {"MBUILD_HEARTBEAT_S": "1"})  # a long step's heartbeat, sooner than 20 s
    try:
        _wait_for(_staging(project, "cpu-int8"), proc, lines)
        workers = _workers(proc.pid, "onnxruntime")
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
        out = _finish(proc, lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out
    died = [line for line in out.splitlines() if line.startswith("error: ")]
    assert died == ["error: variant:digits-cnn/cpu-int8: its onnxruntime worker died during the step (killed, or out "
                    "of memory); the next task starts a new one; run doit again "
                    "(log: .mbuild/logs/variant-digits-cnn-cpu-int8.log)"], out
    assert "Traceback" not in out
    beats = [line for line in out.splitlines() if line.startswith("   ... source:digits-cnn still running (")]
    assert beats and any(line.endswith("exporting the canonical ONNX") or "importing its SDKs" in line
                         for line in beats), out
    assert re.search(r"^\[1/8\] source:digits-cnn  \d+\.\d s", out, re.M), out  # counter and wall time
    ran = executed_tasks(out)
    assert "check:digits-cnn/cpu-fp32" in ran, out  # a new worker took the next onnxruntime task
    assert "  failed   variant:digits-cnn/cpu-int8" in out and "summary: 5 built, 0 up to date, 1 failed, 2 omitted" in out

    rerun = run_doit(project, check=True)
    assert executed_tasks(rerun.stdout) == {"variant:digits-cnn/cpu-int8", "check:digits-cnn/cpu-int8",
                                            "bundle:digits-cnn"}, rerun.stdout
