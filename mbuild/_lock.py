"""One build at a time per project: an fcntl lock on .mbuild/build.lock held while doit runs.

Two builds racing on the same tree would redo the same work and interleave writes to
dist/ and to doit's state; the second one is refused with the first one's pid instead.
The lock is tied to the open file, so the kernel drops it when the holder dies (even by
SIGKILL) and worker processes forked by ``doit -n 2 -P process`` share their parent's.
Actions started by a locked doit see ``MBUILD_BUILD_LOCK`` and do not lock again.
"""
from __future__ import annotations

import errno
import fcntl
import os
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
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _read_holder(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise BuildLockedError(f"another build is running in this project (pid {holder}); wait for it to "
                                   f"finish, or stop it (lock: {path})") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd
    os.environ[LOCK_ENV] = str(path)
    return path


def _read_holder(fd: int, wait_s: float = 2.0) -> str:
    """The holder's pid, waiting briefly: it takes the lock a moment before it writes its pid."""
    deadline = time.monotonic() + wait_s
    while True:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder or time.monotonic() >= deadline:
            return holder or "?"
        time.sleep(0.02)


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
        acquire(Path(root) / ".mbuild")
    except BuildLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
