"""The doit side of the warm workers: one worker per runtime family per build, started on first use.

Every doit process of a build (``-n 2`` forks two) talks to the same worker over an abstract
Unix socket named after the project and the build's doit pid; the first that needs a family
starts its worker (under a lock, so only one starts). A worker that died (killed, out of memory)
fails only the requests it was running; the next request starts a new one. Workers end with the
build's doit process.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mbuild._proc import stat_fields
from mbuild.workers.families import forks_from_zygote, zygote_of

BUILD_PID_ENV = "MBUILD_BUILD_PID"  # set by dodo.py in doit's main process; workers end with it


@dataclass
class Outcome:
    """How a step ended: an exit code, or the signal that killed it (or its worker)."""

    rc: int | None
    signal: int | None
    seconds: float
    worker_died: bool = False


def _address(root: str, family: str) -> str:
    tag = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:16]
    return f"mbuild-{tag}-{os.environ.get(BUILD_PID_ENV, os.getpid())}-{family}"


def _connect(address: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + address)
        return s
    except OSError:
        s.close()
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = stat_fields(pid)
    return fields is None or fields[0] != "Z"  # a zombie (our own exited child) is not a worker


def _spawn(root: str, family: str, address: str) -> int:
    """Start the family's worker unless one is starting or running; returns its pid."""
    folder = Path(root) / ".mbuild" / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{family}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid_file = folder / f"{family}.pid"
        try:
            owner, pid = pid_file.read_text().split()
            if owner == address and _alive(int(pid)):
                return int(pid)
        except (OSError, ValueError):
            pass
        pid = _fork_from_zygote(root, family, address) if forks_from_zygote(family) else None
        if pid is None:
            pid = _start_process(root, [family, address])
        pid_file.write_text(f"{address} {pid}\n")
        return pid


def _start_process(root: str, args: list[str]) -> int:
    build_pid = os.environ.get(BUILD_PID_ENV, str(os.getpid()))
    proc = subprocess.Popen([sys.executable, "-m", "mbuild.workers.serve", *args, build_pid], cwd=root,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc.pid


def _fork_from_zygote(root: str, family: str, address: str, timeout: float = 300.0) -> int | None:
    """The pid of a new worker (or zygote) forked from its zygote (started on first use); None if it cannot be had."""
    name = zygote_of(family)
    zygote = _address(root, name)
    conn = _connect(zygote) or _listening(zygote, _spawn(root, name, zygote), timeout)
    if conn is None:
        return None
    try:
        conn.sendall((json.dumps({"family": family, "address": address}) + "\n").encode())
        conn.settimeout(30)
        return int(json.loads(conn.makefile("rb").readline())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        conn.close()


def _listening(address: str, pid: int, timeout: float) -> socket.socket | None:
    """A connection to the process ``pid`` once it listens at ``address``; None if it dies or times out first."""
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        conn = _connect(address)
        if conn is not None:
            return conn
        time.sleep(0.05)
    return None


def _warm_connection(root: str, family: str, heartbeat, start: float, every: float) -> socket.socket:
    address = _address(root, family)
    conn = _connect(address)
    if conn is not None:
        return conn
    pid = _spawn(root, family, address)
    next_beat = start + every
    while True:
        time.sleep(0.05)
        conn = _connect(address)
        if conn is not None:
            return conn
        if not _alive(pid):
            pid = _spawn(root, family, address)  # it died while importing: once more, then the step fails
            if not _alive(pid):
                raise OSError(f"the {family} worker did not start")
        if heartbeat and time.monotonic() >= next_beat:
            heartbeat(time.monotonic() - start, False)
            next_beat += every


def prestart_in_order(families: list[tuple[str, str]], timeout: float = 300.0, jobs: int = 1) -> None:
    """Warm ``(root, family)`` workers in order, each once the one before it listens (daemon threads).

    One importing worker beside the running step keeps a 2-core machine busy without slowing that step.
    Families without torch warm in a lane of their own: the first of them imports while the zygote
    imports torch, when the build's other core would otherwise wait (the build order runs their steps first).
    With ``jobs`` > 1 (``doit -n``) each torch family has a lane of its own: they still wait for their
    zygote, but then import side by side, because steps of several of them wait at once (in one `-n 2`
    build the LiteRT worker, warmed behind the Core ML one, was ready at 10.2 s instead of 7.7 s, and its
    conversion ended the build).
    """
    import threading

    def warm(lane: list[tuple[str, str]]) -> None:
        for root, family in lane:
            address = _address(root, family)
            conn = _connect(address) or _listening(address, _spawn(root, family, address), timeout)
            if conn is not None:
                conn.close()

    torch = [f for f in families if forks_from_zygote(f[1])]
    for lane in [[f for f in families if not forks_from_zygote(f[1])], *([[f] for f in torch] if jobs > 1 else [torch])]:
        if lane:
            threading.Thread(target=warm, args=(lane,), name="mbuild-prestart", daemon=True).start()


def run_step(family: str, argv: list[str], cwd: str, log: str, env: dict | None = None,
             heartbeat: Callable | None = None, every: float = 20.0) -> Outcome:
    """Run ``python -m mbuild.actions ARGV`` in a child of the family's warm worker, its output in ``log``."""
    start = time.monotonic()
    conn = _warm_connection(cwd, family, heartbeat, start, every)
    try:
        conn.sendall((json.dumps({"argv": argv, "cwd": cwd, "log": log, "env": env or {}}) + "\n").encode())
        reply = _reply(conn, heartbeat, start, every)
    except KeyboardInterrupt:
        _cancel(conn)
        raise
    finally:
        conn.close()
    if reply is None:
        return Outcome(rc=None, signal=None, seconds=time.monotonic() - start, worker_died=True)
    return Outcome(rc=reply["rc"], signal=reply["signal"], seconds=reply["seconds"])


def _reply(conn: socket.socket, heartbeat, start: float, every: float) -> dict | None:
    data = b""
    next_beat = start + every
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([conn], [], [], max(0.0, next_beat - time.monotonic()) if heartbeat else None)
        if not ready:
            heartbeat(time.monotonic() - start, True)
            next_beat += every
            continue
        try:
            chunk = conn.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            return None  # the worker went away mid-step
        data += chunk
    return json.loads(data)


def _cancel(conn: socket.socket, seconds: float = 10.0) -> None:
    """After Ctrl-C: hang up, and give the step's child time to clean up its staging folder before doit exits."""
    try:
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([conn], [], [], deadline - time.monotonic())
            if not ready or not conn.recv(65536):
                return
    except (OSError, KeyboardInterrupt):
        return
