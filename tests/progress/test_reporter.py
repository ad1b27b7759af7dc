"""The build console on real doit Task objects: counter, wall time, estimate from history, one summary."""
from __future__ import annotations

import io
import json

from doit.exceptions import TaskFailed, UnmetDependency
from doit.task import Task

from mbuild.progress import BuildReporter


def _task(name: str) -> Task:
    return Task(name, [(lambda: True, [])])


def test_result_lines_estimate_and_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".mbuild").mkdir()
    (tmp_path / ".mbuild" / "durations.json").write_text(json.dumps({"variant:m/a": 30.0, "check:m/a": 10.0}))
    tasks = {n: _task(n) for n in ("source:m", "variant:m/a", "check:m/a", "bundle:m")}
    out = io.StringIO()
    r = BuildReporter(out, {})
    r.initialize(tasks, list(tasks))
    r.skip_uptodate(tasks["source:m"])
    r.execute_task(tasks["variant:m/a"])
    r.add_failure(tasks["variant:m/a"], TaskFailed("variant:m/a: converter crashed\nmore detail"))
    r.add_failure(tasks["check:m/a"], UnmetDependency("variant:m/a"))
    r.add_failure(tasks["bundle:m"], UnmetDependency("check:m/a"))
    r.complete_run()
    lines = out.getvalue().splitlines()
    assert lines[0] == "-- source:m"
    assert lines[1] == ".  variant:m/a"
    # left: check:m/a as recorded (10 s) + bundle:m, never timed, at the median of what was (20 s)
    assert lines[2].startswith("[2/4] FAILED variant:m/a  0.0 s  ~30.0 s left"), lines
    assert lines[3].startswith("summary: 0 built, 1 up to date, 1 failed, 2 omitted in "), lines
    assert lines[4].split() == ["failed", "variant:m/a", "variant:m/a:", "converter", "crashed"]
    assert lines[5].split() == ["omitted", "check:m/a", "not", "run:", "needs", "variant:m/a"]
    assert "UnmetDependency" not in out.getvalue() and len(lines) == 7


def test_durations_are_recorded_for_the_next_estimate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tasks = {n: _task(n) for n in ("source:m", "bundle:m")}
    out = io.StringIO()
    r = BuildReporter(out, {})
    r.initialize(tasks, list(tasks))
    for t in tasks.values():
        r.execute_task(t)
        r.add_success(t)
    r.complete_run()
    assert out.getvalue().splitlines()[1].startswith("[1/2] source:m  0.0 s")
    assert sorted(json.loads((tmp_path / ".mbuild" / "durations.json").read_text())) == ["bundle:m", "source:m"]
    assert "summary: 2 built, 0 up to date, 0 failed, 0 omitted" in out.getvalue()


def test_a_selection_counts_what_it_needs_in_the_order_doit_runs_it():
    """`doit check:m/a` also runs the source and the variant first: they are counted, and listed before it."""
    tasks = {n: _task(n) for n in ("source:m", "variant:m/a", "check:m/a", "_hidden")}
    tasks["variant:m/a"].task_dep = ["source:m", "_hidden"]
    tasks["check:m/a"].task_dep = ["variant:m/a"]
    tasks["check"] = Task("check", None, task_dep=["check:m/a"])  # a group: stands for its members
    r = BuildReporter(io.StringIO(), {})
    r.initialize(tasks, ["check"])
    assert r.order == ["source:m", "variant:m/a", "check:m/a"]
    assert r.total == 3 and r.pending == set(r.order)
