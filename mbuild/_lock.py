"""One build at a time per project: a POSIX record lock on .mbuild/build.lock held while doit runs.

Two builds racing on the same tree would redo the same work and interleave writes to
dist/ and to doit's state; the second one is refused with the first one's pid instead.
A record lock (``lockf``) belongs to the process that took it: workers forked by
``doit -n 2 -P process`` do not inherit it (an ``flock`` they would, and outlive a killed parent
holding it), and the kernel drops it the moment the holder dies, even by SIGKILL. Forked workers
are also told to die with the process that forked them (Linux), so a killed build leaves no
worker behind. A lock file still naming a dead holder is taken over with a one-line note.
Actions started by a locked doit see ``MBUILD_BUILD_LOCK`` and do not lock again.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
import time
from pathlib import Path

from mbuild.errors import MbuildError

LOCK_ENV = "MBUILD_BUILD_LOCK"
# doit commands that only read state: no lock, so `doit list` works during a build
READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion"}
DOIT_COMMANDS = READ_ONLY_COMMANDS | {"run", "clean", "forget", "ignore", "reset-dep", "strace", "auto"}

_held: dict[Path, int] = {}


class BuildLockedError(MbuildError):
    """Another build holds the project's lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later


def doit_command(argv: list[str]) -> str:
    """The doit command named in ``argv`` ('run' when none is: that is doit's default)."""
    for arg in argv:
        if arg in DOIT_COMMANDS:
            return arg
    return "run"


def acquire(state_dir: Path) -> Path | None:
    """Take the project lock (non-blocking); None if this process or an ancestor already holds it."""
    state_dir = Path(state_dir).resolve()
    path = state_dir / "build.lock"
    if path in _held or os.environ.get(LOCK_ENV) == str(path):
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder_pid(fd) or _read_holder(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise BuildLockedError(f"another build is running in this project (pid {holder}); wait for it to "
                                   f"finish, or stop it (lock: {path})") from None
        raise
    previous = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if previous and previous != str(os.getpid()):
        print(f"note: the build with pid {previous} ended without releasing the project lock; taking it over",
              file=sys.stderr)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd
    os.environ[LOCK_ENV] = str(path)
    _workers_die_with_parent()
    return path


_FLOCK = "hhqqi4x"  # struct flock on Linux (64-bit): type, whence, start, len, pid


def _holder_pid(fd: int) -> str:
    """The pid the kernel records for the lock's holder ('' where F_GETLK cannot say)."""
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except (OSError, struct.error, AttributeError):
        return ""
    return str(answer[4]) if answer[0] != fcntl.F_UNLCK and answer[4] > 0 else ""


def _read_holder(fd: int, wait_s: float = 2.0) -> str:
    """The holder's pid from the file, waiting briefly: it takes the lock a moment before it writes its pid."""
    deadline = time.monotonic() + wait_s
    while True:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder or time.monotonic() >= deadline:
            return holder or "?"
        time.sleep(0.02)


_hooked = False
_forking_pid = [0]


def _workers_die_with_parent() -> None:
    """Forked children of a lock-holding process get SIGKILL when it dies (Linux prctl PR_SET_PDEATHSIG)."""
    global _hooked
    if _hooked or not sys.platform.startswith("linux"):
        return
    _hooked = True

    def before() -> None:
        _forking_pid[0] = os.getpid()

    def in_child() -> None:
        if not _held:  # the lock was released: forks are none of our business
            return
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != _forking_pid[0]:  # the parent died before prctl took effect
            os._exit(1)

    os.register_at_fork(before=before, after_in_child=in_child)


def release(path: Path | None) -> None:
    """Drop a lock taken by :func:`acquire` in this process (no-op for None)."""
    if path is None or path not in _held:
        return
    fd = _held.pop(path)
    os.environ.pop(LOCK_ENV, None)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def lock_for_doit(root: Path, argv: list[str]) -> None:
    """Called by dodo.py: lock for commands that change state; print one line and exit if locked."""
    import sys

    if doit_command(argv) in READ_ONLY_COMMANDS:
        return
    try:
        path = acquire(Path(root) / ".mbuild")
    except BuildLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    _release_at_exit(path)
    from mbuild._state import remove_staging
    from mbuild.manifest import begin_build_snapshot

    remove_staging(Path(root))  # what a killed build was writing; nobody else writes there while we hold the lock
    _enough_space(Path(root))
    begin_build_snapshot()  # the graph is made from the manifests read now; actions refuse changed ones


def _release_at_exit(path: Path | None) -> None:
    """Empty the lock file when this build ends normally, so the next build has nothing to take over.

    A killed build never gets here: its pid stays in the file and the next build notes the take-over.
    Forked children (``doit -n 2 -P process``) inherit the hook but do not own the lock, so they skip it.
    """
    if path is None:
        return
    import atexit

    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and release(path))


MIN_FREE_MB = 256  # below this a build would die in doit's state database with a traceback (ENOSPC)


def _enough_space(root: Path) -> None:
    """Stop with one line when the disk holding the project is (nearly) full, before doit writes its state."""
    import shutil

    need = int(os.environ.get("MBUILD_MIN_FREE_MB", MIN_FREE_MB))
    try:
        free = shutil.disk_usage(root / ".mbuild").free // (1024 * 1024)
    except OSError:
        return
    if free < need:
        print(f"error: only {free} MB free on the disk holding {root} (a build needs at least {need} MB for build/ "
              "and .mbuild/); free some space and run the build again", file=sys.stderr)
        raise SystemExit(1)

