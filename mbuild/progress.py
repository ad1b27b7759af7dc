"""The build's console: one result line per task with its wall time, a counter, an estimate, one summary.

doit's own console reporter prints a line when a task starts and, on failures, every
dependency it could not run. This reporter keeps doit's start (``.  task``) and up-to-date
(``-- task``) lines, adds ``[done/total] task  4.2 s  ~1 m 10 s left`` when a task ends (the
estimate comes from the durations recorded in earlier builds, ``.mbuild/durations.json``), and
ends with one table: built / up to date / failed / omitted, with the first error of each failure.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from doit.exceptions import UnmetDependency
from doit.reporter import ConsoleReporter

DURATIONS = Path(".mbuild") / "durations.json"


def format_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} m {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} m"


def _parallelism(argv: list[str]) -> int:
    """doit's -n N (or --process=N) from the command line; 1 when absent."""
    for i, arg in enumerate(argv):
        value = None
        if arg in ("-n", "--process") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--process="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-n") and arg[2:].isdigit():
            value = arg[2:]
        if value and value.isdigit():
            return max(1, int(value))
    return 1


def _in_order(tasks: dict, selected) -> list[str]:
    """The selected tasks and everything they need, in the order doit takes them: a task after what it needs.

    Group tasks (no actions) stand for their members and are not listed themselves.
    """
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in tasks:
            return
        seen.add(name)
        task = tasks[name]
        for dep in (*task.task_dep, *task.setup_tasks):
            visit(dep)
        if task.actions and not name.startswith("_"):
            order.append(name)

    for name in selected:
        visit(name)
    return order


class BuildReporter(ConsoleReporter):
    """doit reporter class for mbuild builds (``DOIT_CONFIG['reporter']``)."""

    desc = "mbuild: result lines with wall time, counter and estimate; one summary table"

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.start = time.monotonic()
        self.total = 0
        self.done = 0
        self.started: dict[str, float] = {}
        self.pending: set[str] = set()
        self.built: list[str] = []
        self.uptodate: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.omitted: list[tuple[str, str]] = []
        self.history = self._read_history()
        self.measured: dict[str, float] = {}
        self.jobs = _parallelism(sys.argv[1:])
        self.tasks: dict = {}
        self.prestarted: set[tuple[str, str]] = set()
        self.order: list[str] = []

    # -- doit's reporter interface ---------------------------------------------------------------------
    def initialize(self, tasks, selected_tasks):
        self.tasks = tasks
        self.order = _in_order(tasks, selected_tasks)
        self.pending = set(self.order)
        self.total = len(self.pending)

    def execute_task(self, task):
        if task.actions and not task.name.startswith("_"):
            self.started[task.name] = time.monotonic()
            self.write(f".  {task.title()}\n")
            self.outstream.flush()
            if task.name.startswith("source:"):
                self._prestart_workers(task.name.split(":", 1)[1])

    def _prestart_workers(self, model: str) -> None:
        """A source step runs: everything of that model will be rebuilt, so warm its families' workers now.

        Their imports then overlap with the source step instead of waiting for it (one core converts,
        the other imports). They warm one after the other, in the order the build needs them: five
        workers importing at once on two cores slowed the source step, which everything waits for, 2.5x.
        """
        from mbuild.workers.pool import prestart_in_order

        families = []
        for name in [n for n in self.order if n in self.pending]:
            if name.split(":", 1)[-1].split("/")[0] != model or name in self.started:
                continue
            step = self.tasks[name].actions[0] if self.tasks.get(name) and self.tasks[name].actions else None
            args = getattr(step, "args", None)
            if args and len(args) == 6 and (args[4], args[5]) not in self.prestarted:
                self.prestarted.add((args[4], args[5]))
                families.append((args[5], args[4]))
        if families:
            prestart_in_order(families, jobs=self.jobs)

    def add_success(self, task):
        if not task.actions or task.name.startswith("_"):
            return
        seconds = self._finish(task.name)
        self.built.append(task.name)
        self.write(f"{self._counter()} {task.name}  {format_seconds(seconds)}{self._estimate()}\n")
        self.outstream.flush()

    def add_failure(self, task, fail):
        if isinstance(fail, UnmetDependency):
            if task.actions:
                self._finish(task.name, record=False)
                self.omitted.append((task.name, f"not run: needs {_first_line(fail.message)}"))
            return
        seconds = self._finish(task.name, record=False)
        message = _first_line(fail.message) or fail.get_name()
        self.failed.append((task.name, message))
        self.write(f"{self._counter()} FAILED {task.name}  {format_seconds(seconds)}{self._estimate()}\n")
        self.outstream.flush()

    def skip_uptodate(self, task):
        if task.name.startswith("_"):
            return
        self.pending.discard(task.name)
        self.done += 1
        self.uptodate.append(task.name)
        if task.actions:
            self.write(f"-- {task.title()}\n")

    def complete_run(self):
        self._save_history()
        if _INTERRUPTED:
            return  # one line says it (install_interrupt_hook)
        if self.runtime_errors:
            self.write("doit: " + "; ".join(self.runtime_errors) + "\n")
        if not (self.built or self.failed or self.omitted):
            return  # nothing ran: the up-to-date lines said it all
        elapsed = format_seconds(time.monotonic() - self.start)
        counts = [f"{len(self.built)} built", f"{len(self.uptodate)} up to date", f"{len(self.failed)} failed",
                  f"{len(self.omitted)} omitted"]
        self.write(f"summary: {', '.join(counts)} in {elapsed}\n")
        width = max([len(n) for n, _ in self.failed + self.omitted] or [0])
        for name, message in self.failed:
            self.write(f"  failed   {name:<{width}}  {message}\n")
        for name, message in self.omitted:
            self.write(f"  omitted  {name:<{width}}  {message}\n")

    # -- helpers ---------------------------------------------------------------------------------------
    def _finish(self, name: str, record: bool = True) -> float:
        seconds = time.monotonic() - self.started.pop(name, time.monotonic())
        self.pending.discard(name)
        self.done += 1
        if record:
            self.measured[name] = round(seconds, 3)
        return seconds

    def _counter(self) -> str:
        width = len(str(self.total))
        return f"[{self.done:>{width}}/{self.total}]"

    def _estimate(self) -> str:
        """Time left from earlier builds' durations of the tasks not done yet (an upper bound: some are up to date)."""
        known = [self.history[n] for n in self.pending if n in self.history]
        if not self.pending or not known:
            return ""
        import statistics  # only once a build has pending tasks: a no-op skips its import

        typical = statistics.median(self.history.values())
        left = sum(self.history.get(n, typical) for n in self.pending) / self.jobs
        return f"  ~{format_seconds(left)} left"

    def _read_history(self) -> dict[str, float]:
        try:
            data = json.loads(DURATIONS.read_text())
            return {k: float(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save_history(self) -> None:
        if not self.measured:
            return
        data = {**self.history, **self.measured}
        try:
            DURATIONS.parent.mkdir(exist_ok=True)
            tmp = DURATIONS.with_name(f".durations.{os.getpid()}.json")
            tmp.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n")
            os.replace(tmp, DURATIONS)
        except OSError:
            pass


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


_INTERRUPTED = []


def note_interrupted() -> None:
    """The build is being interrupted (a step ended by Ctrl-C): the summary gives way to the one line."""
    _INTERRUPTED.append(True)


INTERRUPTED_LINE = "interrupted: finished tasks are kept, nothing half-written; run doit again to resume"


def install_interrupt_hook() -> None:
    """Ctrl-C ends a command with one line and exit status 130; what finished is kept (doit saved it).

    The build's own process raises KeyboardInterrupt, so doit still saves the state of the tasks that
    finished (its sqlite backend commits only when it closes); doit's ``-n`` worker processes, forked
    from it, exit at once and silently (their task is cut short and reruns next time)."""
    import signal

    previous = sys.excepthook
    owner = os.getpid()

    def on_sigint(signum, frame):
        if os.getpid() != owner:
            os._exit(130)
        _INTERRUPTED.append(True)
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            sys.stdout.flush()
            sys.stderr.write(INTERRUPTED_LINE + "\n")
            sys.stderr.flush()
            os._exit(130)
        previous(kind, value, tb)

    sys.excepthook = hook
