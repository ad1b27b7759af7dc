"""A warm worker: ``python -m mbuild.workers.serve FAMILY ADDRESS BUILD_PID``, shared by a build's doit processes.

It imports its family's SDKs once, then listens on an abstract Unix socket. Each connection is
one request (a step's argv, as a JSON line) and runs in a child forked from the worker: the child
starts with the SDKs loaded and nothing else, so every action sees the same fresh process it would
have in a cold start (artifacts stay byte-identical whatever ran before), a crash or a leak dies
with the child, and concurrent requests (``doit -n 2``) run side by side. The reply is one JSON
line ``{"rc", "signal", "seconds"}``. A client that hangs up (Ctrl-C) gets its child stopped with
SIGTERM (clean-up runs); the worker ends, stopping its children, when the build's doit process ends.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the worker) dies: no orphans writing into a build."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _interrupt(signum, frame):
    """Stop the step once: Ctrl-C (SIGINT) and the worker's SIGTERM after the hang-up both arrive, and a
    second KeyboardInterrupt inside the first one's finally-blocks would leave its staging folder behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _child(request: dict) -> int:
    """Run one step in this forked child with its output in the task's log file."""
    _die_with_parent()
    signal.signal(signal.SIGINT, _interrupt)  # Ctrl-C: KeyboardInterrupt, finally-blocks clean up
    signal.signal(signal.SIGTERM, _interrupt)  # the client hung up: the same clean stop
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    os.chdir(request["cwd"])
    os.environ.update(request.get("env", {}))
    from mbuild import actions

    return actions.main(request["argv"])


def _fork(request: dict, keep: socket.socket, close: list) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1  # pragma: no cover - the child
    try:
        for obj in close:
            obj.close()
        code = _child(request)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - actions.main handles errors; this is a last resort
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _read_request(conn: socket.socket) -> dict | None:
    data = b""
    conn.settimeout(30)
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    conn.settimeout(None)
    return json.loads(data)


def _quiet_process() -> None:
    """A worker's process settings: Ctrl-C is for doit and the running steps; SDK chatter goes nowhere."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # import-time chatter of the SDKs goes nowhere; steps log into their own files
    from mbuild.actions import quiet_frameworks

    quiet_frameworks()


def _open_build(build_pid: int) -> int | None:
    """A pidfd of the build's doit process (readable once it ends); None if it has ended already."""
    try:
        return os.pidfd_open(build_pid)
    except ProcessLookupError:
        return None


def serve(family: str, address: str, build_pid: int) -> int:
    _quiet_process()
    build = _open_build(build_pid)
    return 0 if build is None else _serve_warm(family, address, build)


def zygote(name: str, address: str, build_pid: int) -> int:
    """A zygote of the build started as a process of its own (see ``mbuild.workers.families.ZYGOTES``)."""
    _quiet_process()
    build = _open_build(build_pid)
    if build is None:
        return 0
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the workers it forks are reaped by the kernel
    return _zygote_loop(name, address, build)


def _zygote_loop(name: str, address: str, build: int) -> int:
    """Import what the zygote's families share, then fork their workers (or a further zygote) on request.

    A request is ``{"family", "address"}``; the reply ``{"pid"}`` names the new process, which imports the
    rest of its family's SDKs and serves at ``address`` exactly as a worker started on its own would.
    """
    from mbuild.workers.families import ZYGOTES, preload

    preload(name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + address)
    server.listen(16)
    while True:
        ready, _, _ = select.select([server, build], [], [])
        if build in ready:
            return 0
        conn, _ = server.accept()
        try:
            request = _read_request(conn)
        except (OSError, ValueError):
            request = None
        if not request:
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the new worker or zygote
            code = 1
            try:
                server.close()
                conn.close()
                if request["family"] in ZYGOTES:
                    code = _zygote_loop(request["family"], request["address"], build)
                else:
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # it waits for its own step children
                    code = _serve_warm(request["family"], request["address"], build)
            finally:
                _end(code)
        try:
            conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
        except OSError:
            pass
        conn.close()


def _serve_warm(family: str, address: str, build: int) -> int:
    """Import the family's SDKs, listen at ``address`` and run each request in a forked child until the build ends."""
    from mbuild.workers.families import preload

    preload(family)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + address)  # bound once warm: a client that connects gets the imported SDKs
    server.listen(64)
    running: dict[int, tuple[int, socket.socket, float]] = {}  # child pidfd -> (pid, connection, start)
    by_conn: dict[socket.socket, int] = {}
    while True:
        ready, _, _ = select.select([server, build, *running, *by_conn], [], [])
        if build in ready:  # the build ended (or was killed): stop what still runs, let it clean up, end
            pids = [pid for pid, _, _ in running.values()]
            for pid in pids:
                _stop(pid)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if os.waitpid(p, os.WNOHANG) == (0, 0)]
                time.sleep(0.05)
            return 0
        for fd in ready:
            if fd is server:
                conn, _ = server.accept()
                request = _read_request(conn)
                if request is None:
                    conn.close()
                    continue
                others = [server, *by_conn]
                pid = _fork(request, conn, others)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, conn, time.perf_counter())
                by_conn[conn] = pidfd
            elif isinstance(fd, int) and fd in running:
                pid, conn, start = running.pop(fd)
                by_conn.pop(conn, None)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                reply = {"seconds": round(time.perf_counter() - start, 3), "rc": None, "signal": None}
                if os.WIFSIGNALED(status):
                    reply["signal"] = os.WTERMSIG(status)
                else:
                    reply["rc"] = os.WEXITSTATUS(status)
                try:
                    conn.sendall((json.dumps(reply) + "\n").encode())
                except OSError:
                    pass
                conn.close()
            elif isinstance(fd, socket.socket) and fd in by_conn:
                try:
                    hung_up = not fd.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    hung_up = False
                except OSError:
                    hung_up = True
                if hung_up:  # the client stopped (Ctrl-C): stop its step; the reply still goes out
                    pidfd = by_conn.pop(fd)
                    os.kill(running[pidfd][0], signal.SIGTERM)


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _end(code: int) -> None:
    """End a worker without Python's finalization, which takes 1-2 s of CPU in a process holding torch or
    TensorFlow, after the build has ended; exit handlers (the ORT converter's clean-up) still run."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    from mbuild.workers.families import ZYGOTES

    if sys.argv[1] in ZYGOTES:
        _end(zygote(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    _end(serve(sys.argv[1], sys.argv[2], int(sys.argv[3])))
