"""Build state heals: a deleted or corrupted build file reruns the task that made it; staging left by a kill goes.

Before, doit only checked that declared targets existed, so deleting a converted artifact or corrupting a
report made every later build fail (FileNotFoundError / JSONDecodeError) with no way back but deleting
build/. Each rerun here ends with the bundle a clean build makes and a further run that does nothing.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ctrl_c_reaches_it, executed_tasks, run_doit

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"
TARGET = Path("build/digits-cnn/targets/cpu-int8")


@pytest.fixture()
def built(digits_cpu_project, tmp_path) -> Path:
    project = tmp_path / "copy"
    shutil.copytree(digits_cpu_project, project, symlinks=True)
    first = run_doit(project, check=True)
    assert executed_tasks(first.stdout) == set(), first.stdout  # a copied, built project is up to date
    return project


def _artifact(project: Path) -> Path:
    files = [p for p in (project / TARGET / "variant").rglob("*") if p.is_file() and p.name != "variant.json"]
    assert files, "no artifact beside variant.json"
    return files[0]


def _heals(project: Path, reference: Path, expected: set[str]) -> None:
    rerun = run_doit(project, check=True)
    assert expected <= executed_tasks(rerun.stdout), rerun.stdout
    assert (project / BUNDLE).read_bytes() == (reference / BUNDLE).read_bytes()
    again = run_doit(project, check=True)
    assert executed_tasks(again.stdout) == set(), again.stdout


def test_a_deleted_artifact_reruns_its_variant(built, digits_cpu_project):
    _artifact(built).unlink()
    _heals(built, digits_cpu_project, {"variant:digits-cnn/cpu-int8"})


@pytest.mark.slow
def test_a_corrupted_report_and_source_file_rerun_their_tasks(built, digits_cpu_project):
    (built / TARGET / "report.json").write_text("{not json")
    data = next((built / "build/digits-cnn/source").rglob("*.npz"))
    data.write_bytes(b"garbage")
    _heals(built, digits_cpu_project, {"check:digits-cnn/cpu-int8", "source:digits-cnn"})


def test_staging_folders_of_a_killed_build_are_removed(built):
    staging = built / TARGET / ".variant.abcd1234"
    (staging / "variant").mkdir(parents=True)
    (staging / "variant" / "half.onnx").write_bytes(b"half")
    run_doit(built, check=True)
    assert not staging.exists()
    assert not list((built / "build").rglob(".variant.*"))


@pytest.mark.slow
def test_doit_clean_removes_everything_mbuild_made(built):
    proc = run_doit(built, "clean")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = [p.relative_to(built).as_posix() for top in ("build", "dist") for p in (built / top).rglob("*")]
    assert left == [], left


def test_ctrl_c_ends_with_one_line_and_no_traceback(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from tests.conftest import DIGITS_CPU, make_project

    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    proc = subprocess.Popen([sys.executable, "-m", "doit"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, preexec_fn=ctrl_c_reaches_it,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any(line.startswith(".  source:") for line in list(lines)):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.01)
    time.sleep(1.0)  # inside the source step's imports
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    proc.wait(timeout=120)
    reader.join(timeout=10)
    proc.stdout.close()
    out = "".join(lines)
    assert proc.returncode != 0
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert out.count("interrupted") == 1 and proc.returncode == 130, out


def test_a_full_disk_stops_the_build_with_one_line(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import DIGITS_CPU, make_project

    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    proc = subprocess.run([sys.executable, "-m", "doit"], cwd=project, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MBUILD_MIN_FREE_MB": str(10**12)})  # as if the disk were full
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: only ") and "free some space" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
