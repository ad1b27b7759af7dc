"""ORT-format models (ONNX Runtime Mobile), converted reproducibly by a warm converter process.

ONNX Runtime serializes a hash map whose order follows the process's memory layout, so the same
model gives different bytes from run to run and from checkout to checkout. The converter therefore
runs in a process of its own with address-space randomization off (``setarch -R``), an empty
environment, no site-packages, and its few packages linked under fixed-length relative paths.

That process imports the converter once (0.4 s) and then forks one child per conversion from the
same unchanged state, always at the same point of its loop, so every conversion starts from the
same memory layout: the bytes do not depend on what was converted before, or on how many (tested).
An onnxruntime worker starts one converter for the whole build; a conversion outside a worker
starts one for itself. Either way the bytes are the same.
"""
from __future__ import annotations

import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mbuild._proc import stat_fields
from mbuild.errors import BuildError

# What the converter imports; linked into the process's private, fixed-length import path.
_PACKAGES = ("onnxruntime", "onnx", "numpy", "numpy.libs", "flatbuffers", "google", "ml_dtypes", "opt_einsum",
             "packaging", "typing_extensions.py")
TIMEOUT_S = 600

# The converter process (python -S, cwd = its folder). Each child takes one connection, reads an
# 8-character job name, converts jobs/NAME/in/model.onnx to jobs/NAME/out/model.ort and replies
# "0" or "1"; the parent only forks and waits, so every child starts from the same state. It runs in
# a session of its own, so that a signal to the build's process group (Ctrl-C, a kill) does not end it
# uncleanly: it ends when its owner ends (SIGTERM from the kernel) and removes its folder.
_SERVER = """
import ctypes, os, shutil, signal, socket
from pathlib import Path
from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
def end(signum, frame):  # the owner died (SIGTERM from the kernel): remove the folder, then end
    shutil.rmtree(os.getcwd(), ignore_errors=True)
    os._exit(0)
signal.signal(signal.SIGTERM, end)
libc = ctypes.CDLL(None)
libc.prctl(1, signal.SIGTERM)
if os.getppid() != int(os.environ["OWNER"]):  # the owner ended before the line above
    end(None, None)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("sock")
server.listen(64)
os.close(os.open("ready", os.O_CREAT | os.O_WRONLY, 0o644))
me = os.getpid()
while True:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        libc.prctl(1, signal.SIGKILL)
        if os.getppid() != me:  # the converter ended before the line above
            os._exit(0)
        conn, _ = server.accept()
        server.close()
        job = b""
        while len(job) < 8:
            chunk = conn.recv(8 - len(job))
            if not chunk:
                os._exit(2)
            job += chunk
        os.chdir("jobs/" + job.decode("ascii"))
        code = 1
        try:
            log = os.open("log", os.O_CREAT | os.O_WRONLY, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            convert_onnx_models_to_ort(Path("in/model.onnx"), output_dir=Path("out"),
                                       optimization_styles=[OptimizationStyle.Fixed])
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        try:
            conn.sendall(b"%d" % code)
        finally:
            os._exit(code)
    os.waitpid(pid, 0)
"""


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or, across file systems, copy) a package into the converter's import path."""
    try:
        shutil.copytree(src, dst, copy_function=os.link) if src.is_dir() else os.link(src, dst)
    except OSError:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)


class _Unreachable(Exception):
    """The converter process no longer listens."""


class Converter:
    """One converter process and its folder (``pkgs`` linked in, ``jobs/`` for the conversions)."""

    def __init__(self) -> None:
        import onnxruntime

        self.owner = os.getpid()
        self.folder = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.folder / "owner").write_text(f"{self.owner} {_started(self.owner)}\n")  # see sweep_stale
        site = Path(onnxruntime.__file__).resolve().parent.parent
        for name in _PACKAGES:  # ~600 folders linked once per converter, not once per conversion
            if (site / name).exists():
                _link_tree(site / name, self.folder / "pkgs" / name)
        (self.folder / "jobs").mkdir()
        cmd = [os.path.realpath(sys.executable), "-S", "-c", _SERVER]
        setarch = shutil.which("setarch")
        if setarch and platform.system() == "Linux":
            cmd = [setarch, platform.machine(), "-R", *cmd]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONPATH": "pkgs", "PYTHONNOUSERSITE": "1",
               "LC_ALL": "C", "OWNER": f"{os.getpid():010d}"}  # fixed width: the layout must not depend on it
        with open(self.folder / "server.log", "wb") as log:
            self.process = subprocess.Popen(cmd, cwd=self.folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # see _SERVER

    def wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not (self.folder / "ready").exists():
            if self.process.poll() is not None:
                tail = (self.folder / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise BuildError(f"onnxruntime ORT-format converter did not start: {' | '.join(tail)}")
            if time.monotonic() > deadline:
                raise BuildError(f"onnxruntime ORT-format converter did not start within {TIMEOUT_S} s")
            time.sleep(0.01)

    def convert(self, onnx_path: Path, dst: Path) -> None:
        if os.getpid() == self.owner:
            self.wait_ready()
        name = secrets.token_hex(4)  # 8 characters: every job's paths have the same length
        job = self.folder / "jobs" / name
        (job / "in").mkdir(parents=True)
        try:
            shutil.copyfile(onnx_path, job / "in" / "model.onnx")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.settimeout(TIMEOUT_S)
                    conn.connect(str(self.folder / "sock"))
                    conn.sendall(name.encode("ascii"))
                    reply = conn.recv(1)
            except (ConnectionError, FileNotFoundError) as e:
                raise _Unreachable(str(e)) from e
            if not reply and not self._running():
                raise _Unreachable("the converter process ended")
            produced = job / "out" / "model.ort"
            if reply != b"0" or not produced.exists():
                log = job / "log"
                lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
                raise BuildError("onnxruntime ORT-format conversion failed: "
                                 f"{lines[-1] if lines else 'the converter process ended without an answer'}")
            shutil.copyfile(produced, dst)
        except OSError as e:
            raise BuildError(f"onnxruntime ORT-format conversion failed: {e}") from e
        finally:
            shutil.rmtree(job, ignore_errors=True)

    def _running(self) -> bool:
        fields = stat_fields(self.process.pid)  # a step forked from the worker cannot poll() the converter
        return fields is not None and fields[0] not in "ZX"

    def close(self) -> None:
        if os.getpid() != self.owner:  # a forked step child shares its worker's converter; the worker ends it
            return
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_WARM: list[Converter] = []  # the worker's converter; its step children (forks) inherit and use it
PREFIX = "mbuild-ort-"
STALE_S = 3600  # a folder without an owner file (killed while it was made) is removed once this old


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), which tells a reused pid apart; None if gone."""
    fields = stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def sweep_stale(tmp: str | None = None) -> list[Path]:
    """Remove converter folders whose owner died without cleaning up (SIGKILL while the folder was made)."""
    removed = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            pid, started = (folder / "owner").read_text().split()
            stale = _started(int(pid)) != started
        except FileNotFoundError:
            try:
                stale = time.time() - folder.stat().st_mtime > STALE_S
            except OSError:
                continue
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def warm() -> None:
    """Start the build's converter in this (worker) process; it ends with the process."""
    import atexit

    if not _WARM:
        sweep_stale()
        converter = Converter()
        converter.wait_ready()  # before the worker takes its first step
        _WARM.append(converter)
        atexit.register(converter.close)


def convert_to_ort(onnx_path: Path, dst: Path) -> None:
    """``onnx_path`` converted to ORT format (optimization style Fixed) at ``dst``, byte-reproducibly."""
    if _WARM:
        try:
            _WARM[0].convert(onnx_path, dst)
            return
        except _Unreachable:  # the worker's converter was killed: this conversion starts its own
            pass
    converter = Converter()
    try:
        converter.convert(onnx_path, dst)
    finally:
        converter.close()
