"""Two doit processes started at once on one project: one builds, the other is refused; nothing is corrupted."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

from mbuild.bundle.verify import verify_bundle
from tests.conftest import DIGITS_CPU, executed_tasks, make_project, run_doit
from tests.reliability._stable import code_digest, require_same_code

BUNDLE = "dist/digits-cnn-1.0.0.mbundle"


def _doit(project, *args):
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_two_builds_at_once(digits_cpu_project, tmp_path):
    code = code_digest()
    run_doit(digits_cpu_project, check=True)  # the reference, rebuilt if mbuild's code changed since it was built
    project = make_project(tmp_path / "p", {"digits.yaml": DIGITS_CPU})
    # both with two worker processes: forked workers must not trip over their parent's lock
    a, b = _doit(project, "-n", "2", "-P", "process"), _doit(project, "-n", "2", "-P", "process")
    while not (project / "build").exists() and a.poll() is None and b.poll() is None:
        time.sleep(0.05)
    listing = run_doit(project, "list", "--all")  # read-only commands still work during a build
    assert listing.returncode == 0 and "bundle:digits-cnn" in listing.stdout, listing.stderr
    results = {p.pid: (p.wait(timeout=600), *p.communicate()) for p in (a, b)}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 75], results
    winner = next(pid for pid, (code, _, _) in results.items() if code == 0)
    _, out, err = next(r for r in results.values() if r[0] == 75)
    assert f"another build is running in this project (pid {winner})" in err and "Traceback" not in err
    assert out == ""  # refused before doing anything

    with sqlite3.connect(project / ".mbuild" / "doit.sqlite") as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    verify_bundle(project / BUNDLE)
    require_same_code(code)
    assert (project / BUNDLE).read_bytes() == (digits_cpu_project / BUNDLE).read_bytes()
    again = run_doit(project, check=True)
    require_same_code(code)
    assert executed_tasks(again.stdout) == set(), again.stdout


def test_lock_is_released_by_a_killed_build(tmp_path):
    """The kernel drops the lock with its holder: a SIGKILLed build never blocks the next one."""
    from mbuild import _lock

    project = tmp_path / "p"
    code = (f"import time; from mbuild import _lock; _lock.acquire({str(project / '.mbuild')!r}); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        try:
            _lock.acquire(project / ".mbuild")
            raise AssertionError("the lock was taken twice")
        except _lock.BuildLockedError as e:
            assert f"pid {holder.pid}" in str(e)
    finally:
        holder.kill()
        holder.wait()
    path = _lock.acquire(project / ".mbuild")
    assert path is not None
    _lock.release(path)
    assert os.environ.get(_lock.LOCK_ENV) is None


def test_refusal_names_a_holder_that_has_not_written_its_pid_yet(tmp_path):
    """The winner locks a moment before it writes its pid; the loser must name it anyway, not print '?'."""
    from mbuild import _lock

    state = tmp_path / ".mbuild"
    state.mkdir()
    code = (f"import fcntl, os, time; fd = os.open({str(state / 'build.lock')!r}, os.O_RDWR | os.O_CREAT); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(0.5); "
            "os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        try:
            _lock.acquire(state)
            raise AssertionError("the lock was taken twice")
        except _lock.BuildLockedError as e:
            assert f"(pid {holder.pid})" in str(e), str(e)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
