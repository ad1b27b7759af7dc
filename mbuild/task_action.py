"""doit's side of every build task: run the step in a warm worker's child and report it in one place.

The step itself (:mod:`mbuild.actions`) runs in another process; this module only starts it, relays
mbuild's own result lines from the step's log, prints a heartbeat while it runs, and turns its end
into doit's success or TaskFailed. It imports nothing of the build steps, so the task graph
(:mod:`mbuild.tasks`) can name it without pulling them in.
"""
from __future__ import annotations

import sys
from pathlib import Path

STEP_LOG_ENV = "MBUILD_STEP_LOG"  # set in a worker's child: the step's output already goes to this log
HEARTBEAT_S = 20.0  # a step running longer than this says every HEARTBEAT_S what it is doing (MBUILD_HEARTBEAT_S)
_OWN_LINE = ("source:", "convert:", "variant:", "check:", "bundle:", "note: ", "warning: ", "error: ")


def log_path(root: str, task: str) -> Path:
    """Where a task's output goes: ``.mbuild/logs/<task>.log`` (kept until the task runs again)."""
    safe = task.replace(":", "-").replace("/", "-")
    return Path(root) / ".mbuild" / "logs" / f"{safe}.log"


def run_task_step(name: str, step: str, manifest: str, target: str | None, family: str, root: str):
    """The python-action of every build task: run the step in a warm worker's child, report in one place.

    Returns True, or doit's TaskFailed with the step's first error line (doit then reports it once).
    """
    import os

    from doit.exceptions import TaskFailed

    from mbuild.workers import pool

    log = log_path(root, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [step, manifest] + ([target] if target else [])

    def heartbeat(seconds: float, warm: bool) -> None:
        doing = _last_line(log) if warm else f"starting the {family} worker (importing its SDKs, once per build)"
        print(f"   ... {name} still running ({seconds:.0f} s): {doing}", flush=True)

    every = float(os.environ.get("MBUILD_HEARTBEAT_S", HEARTBEAT_S))
    outcome = pool.run_step(family, argv, cwd=root, log=str(log), env={STEP_LOG_ENV: os.path.relpath(log, root)},
                            heartbeat=heartbeat, every=every)
    lines = _own_lines(log)
    for line in lines:
        print(line, file=sys.stderr if line.startswith(("warning: ", "error: ")) else sys.stdout, flush=True)
    if outcome.rc == 0:
        return True
    rel = os.path.relpath(log, root)
    if outcome.rc == 130:  # the step saw Ctrl-C before doit's own process did
        from mbuild.progress import note_interrupted

        note_interrupted()
        raise KeyboardInterrupt
    if outcome.rc is not None:
        errors = [line for line in lines if line.startswith("error: ")]
        message = errors[0][len("error: "):] if errors else f"exited with status {outcome.rc} (log: {rel})"
        if not errors:
            print(f"error: {name}: {message}", file=sys.stderr, flush=True)
        chatter = _line_count(log) - len(lines)
        if errors and chatter > 0:
            print(f"   the converters' output of this step: {rel} ({chatter} lines)", file=sys.stderr, flush=True)
        return TaskFailed(message)
    if outcome.worker_died:
        message = (f"{name}: its {family} worker died during the step (killed, or out of memory); the next task "
                   f"starts a new one; run doit again (log: {rel})")
    else:
        import signal as _signal

        sig = _signal.Signals(outcome.signal).name if outcome.signal else "a signal"
        message = f"{name}: the step's process was killed by {sig} (out of memory, or killed by hand); run doit " \
                  f"again (log: {rel})"
    print(f"error: {message}", file=sys.stderr, flush=True)
    return TaskFailed(message)


def _own_lines(log: Path) -> list[str]:
    """mbuild's own result, warning and error lines of a step, without the converters' chatter."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.startswith(_OWN_LINE)]


def _line_count(log: Path) -> int:
    try:
        return sum(1 for line in log.read_text(errors="replace").splitlines() if line.strip())
    except OSError:
        return 0


def _last_line(log: Path) -> str:
    """The step's latest output line (its current phase or the converter's progress), shortened."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 4096))
            tail = fh.read().decode(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return "no output yet"
    tail = [t.strip() for t in tail if t.strip()]
    return tail[-1].removeprefix("phase: ")[:120] if tail else "working (no output yet)"
