"""Build-system numbers on a copy of the project: cold build, no-op, one-target edit, -n 2 vs -n 1."""
from __future__ import annotations

import shutil

from _common import PROJECT, doit, fmt, make_project, ran, stats
from noop import time_noop

EDIT_FILE = "manifests/digits.yaml"
EDIT_FROM = "cpu: {runtime: onnxruntime, recipe: int8-dyn}"
EDIT_TO = "cpu: {runtime: onnxruntime, recipe: fp16}"


def _reset(project):
    for d in ("build", "dist", ".mbuild"):
        shutil.rmtree(project / d, ignore_errors=True)


def run(edits: int = 3, noops: int = 7) -> dict:
    project = make_project()
    cold1, out1, rc1 = doit(project, "-n", "1")
    tasks = len(ran(out1))
    noop = time_noop(project, runs=noops)
    edit_times, edit_ran = [], []
    path = project / EDIT_FILE
    text = path.read_text()
    for i in range(edits):
        path.write_text(text.replace(EDIT_FROM, EDIT_TO) if i % 2 == 0 else text)
        t, out, _ = doit(project)
        edit_times.append(t)
        edit_ran.append(ran(out))
    path.write_text(text)
    doit(project)  # back to the original state
    _reset(project)
    cold2, out2, rc2 = doit(project, "-n", "2", "-P", "process")
    return {"tasks": tasks, "cold_n1": cold1, "cold_n1_rc": rc1, "cold_n2": cold2, "cold_n2_rc": rc2,
            "noop": stats(noop), "edit": stats(edit_times), "edit_ran": edit_ran[0],
            "edit_counts": [len(x) for x in edit_ran], "project": PROJECT}


def table(r: dict) -> str:
    rows = [
        "| measurement | wall time | notes |", "|---|---|---|",
        f"| cold build of manifests/, `doit -n 1` | {r['cold_n1']:.1f} s (n=1) | {r['tasks']} tasks ran; exit {r['cold_n1_rc']} |",
        f"| cold build, `doit -n 2 -P process` | {r['cold_n2']:.1f} s (n=1) | speed-up {r['cold_n1'] / r['cold_n2']:.2f}x; "
        f"exit {r['cold_n2_rc']} |",
        f"| no-op `doit` (nothing changed) | {fmt(r['noop'])} | no task ran |",
        f"| one-target edit (`{EDIT_FILE}`: target `cpu` recipe int8-dyn <-> fp16) | {fmt(r['edit'])} | "
        f"ran: {', '.join(r['edit_ran'])}; tasks per run: {', '.join(map(str, r['edit_counts']))} |",
    ]
    return "\n".join(rows)
