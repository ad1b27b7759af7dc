"""How close mbuild gets to its converters: the full digits matrix side by side in one run.

``.venv/bin/python bench/speed.py [--previous REV]`` measures, one after the other on this machine:
the direct one-process script (bench/direct_digits.py), a cold ``doit -n 1`` and a cold ``doit -n 2
-P process`` of manifests/digits.yaml with this tree (``--repeats`` times each, interleaved; medians),
the same ``-n 1`` build with the previous commit's tree (``git archive REV``, once), and the no-op
``doit`` on manifests/ next to its floor (a bare doit with as many tasks and the same sqlite
backend). Writes the "Speed" section of bench/results.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, WORK, doit, fmt, make_project, ran, stats  # noqa: E402

TITLE = "Speed: the full digits matrix (11 targets), mbuild vs the previous commit and a direct script"
FLOOR_DODO = '''\
import json
from pathlib import Path

from doit.tools import config_changed

DOIT_CONFIG = {"dep_file": ".floor.sqlite", "backend": "sqlite3", "verbosity": 2}
N = int(Path("count").read_text())


def task_floor():
    for i in range(N):
        Path(f"in{i}").touch()
        yield {"name": str(i), "actions": [f"echo {i} > out{i}"], "file_dep": [f"in{i}"], "targets": [f"out{i}"],
               "uptodate": [config_changed(json.dumps({"task": i}))]}
'''


MATRIX_REV = "5b7a49e"  # manifests/digits.yaml of this commit: the 11-target matrix the issue and direct_digits.py measure


def _digits_project(name: str) -> Path:
    """The 11-target digits matrix (both trees can build it; later example targets need newer runtimes)."""
    project = make_project(WORK / name, manifests=False)
    (project / "manifests").mkdir()
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{MATRIX_REV}:manifests/digits.yaml"], check=True,
                          capture_output=True, text=True).stdout
    (project / "manifests" / "digits.yaml").write_text(text)
    return project


def _cold(name: str, tree: Path, *args: str) -> tuple[float, int, int]:
    project = _digits_project(name)
    time.sleep(3)  # the workers of the build before end within ~2 s; their exit must not weigh on this one
    t, out, rc = doit(project, *args, env={"PYTHONPATH": str(tree)})
    if rc:
        print(out[-3000:])
    return t, len(ran(out)), rc


def _noop(project: Path, env: dict, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t, out, rc = doit(project, env=env)
        if ran(out) or rc:
            raise SystemExit(f"not a no-op (exit {rc}): {ran(out)}")
        times.append(t)
    return times


def _task_count(project: Path, env: dict) -> int:
    proc = subprocess.run([sys.executable, "-m", "doit", "list", "--all", "-q"], cwd=project, text=True,
                          capture_output=True, env={**os.environ, **env})
    return len([line for line in proc.stdout.splitlines() if ":" in line and not line.startswith("release:")])


def run(previous: str, noops: int, repeats: int) -> dict:
    r: dict = {"previous": previous}
    prev = WORK / "previous-tree"
    shutil.rmtree(prev, ignore_errors=True)
    prev.mkdir(parents=True)
    subprocess.run(f"git -C {ROOT} archive {previous} | tar -x -C {prev}", shell=True, check=True)
    for tree in (ROOT, prev):  # bytecode as scripts/setup.sh leaves it (PYTHONDONTWRITEBYTECODE would hide it)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "mbuild")], check=True)
    r["direct_runs"], r["cold_runs"], r["n2_runs"] = [], [], []
    for i in range(repeats):  # interleaved, so that a slow spell of the machine hits all three alike
        out = WORK / "direct"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "direct_digits.py"), str(out), str(ROOT)],
                              capture_output=True, text=True)
        r["direct_runs"].append(time.perf_counter() - start)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        t, r["tasks"], r["cold_rc"] = _cold("speed-now", ROOT, "-n", "1")
        r["cold_runs"].append(t)
        t, _, r["n2_rc"] = _cold("speed-n2", ROOT, "-n", "2", "-P", "process")
        r["n2_runs"].append(t)
        print(f"run {i + 1}: direct {r['direct_runs'][-1]:.1f} s, mbuild -n 1 {r['cold_runs'][-1]:.1f} s, "
              f"-n 2 {r['n2_runs'][-1]:.1f} s", flush=True)
    for key in ("direct", "cold", "n2"):
        r[key] = statistics.median(r[f"{key}_runs"])
    r["old"], r["old_tasks"], r["old_rc"] = _cold("speed-previous", prev, "-n", "1")
    print(f"previous cold -n 1 {r['old']:.1f} s", flush=True)
    project = make_project(WORK / "speed-noop")
    env = {"PYTHONPATH": str(ROOT)}
    t, _, rc = doit(project, env=env)
    r["all_cold"], r["all_rc"] = t, rc
    r["noop"] = stats(_noop(project, env, noops))
    r["noop_tasks"] = _task_count(project, env)
    floor = WORK / "speed-floor"
    shutil.rmtree(floor, ignore_errors=True)
    floor.mkdir(parents=True)
    (floor / "dodo.py").write_text(FLOOR_DODO)
    (floor / "count").write_text(str(r["noop_tasks"]))
    doit(floor)
    r["floor"] = stats(_noop(floor, {}, noops))
    return r


def _runs(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} s ({', '.join(f'{v:.1f}' for v in values)}; n={len(values)})"


def table(r: dict) -> str:
    return "\n".join([
        "| measurement | value | target | notes |", "|---|---|---|---|",
        f"| direct: the same work in one Python process (bench/direct_digits.py) | {_runs(r['direct_runs'])} | | "
        "imports, conversions, quantizations, validation runs |",
        f"| mbuild cold build of manifests/digits.yaml, `doit -n 1` | {_runs(r['cold_runs'])} | | {r['tasks']} tasks; "
        f"exit {r['cold_rc']} |",
        f"| **mbuild cold build / direct** | **{r['cold'] / r['direct']:.2f}** | <= 1.3 | medians; run by run: "
        f"{', '.join(f'{c / d:.2f}' for c, d in zip(r['cold_runs'], r['direct_runs']))} |",
        f"| previous commit ({r['previous']}), same build, `-n 1` | {r['old']:.1f} s (n=1) | | {r['old_tasks']} tasks; "
        f"exit {r['old_rc']} |",
        f"| **cold digits `-n 1`, now / previous commit** | **{r['cold'] / r['old']:.2f}x** | <= 0.4x | |",
        f"| mbuild cold build, `doit -n 2 -P process` | {_runs(r['n2_runs'])} | | exit {r['n2_rc']} |",
        f"| **`-n 2` speed-up** | **{r['cold'] / r['n2']:.2f}** | >= 1.7 | medians; run by run: "
        f"{', '.join(f'{c / n:.2f}' for c, n in zip(r['cold_runs'], r['n2_runs']))} |",
        f"| **no-op `doit` on manifests/** ({r['noop_tasks']} tasks) | **{fmt(r['noop'])}** | <= 0.30 s | "
        f"cold build of manifests/ took {r['all_cold']:.1f} s (exit {r['all_rc']}) |",
        f"| floor: bare doit, {r['noop_tasks']} tasks, sqlite backend (a no-op imports neither PyYAML nor jsonschema now) "
        f"| {fmt(r['floor'])} | | |",
    ])


def write_section(text: str, note: str, title: str = TITLE) -> None:
    """Replace (or append) the section headed ``title`` in bench/results.md."""
    path = ROOT / "bench" / "results.md"
    body = path.read_text() if path.exists() else "# mbuild bench results\n"
    head, sep, rest = body.partition(f"\n## {title}\n")
    if sep:
        after = rest.split("\n## ", 1)
        rest = ("\n## " + after[1]) if len(after) > 1 else ""
    else:
        head, rest = body.rstrip() + "\n", ""
    path.write_text(f"{head.rstrip()}\n\n## {title}\n\n{note}\n\n{text}\n{rest}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--previous", default="5b7a49e",
                        help="the commit to compare with (default: main just before issue 17 was merged)")
    parser.add_argument("--noops", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the direct script and of each cold build")
    parser.add_argument("--note", default="", help="conditions of this run (machine load)")
    args = parser.parse_args()
    r = run(args.previous, args.noops, args.repeats)
    text = table(r)
    print(text)
    note = (f"Measured with `bench/speed.py` on {datetime.date.today().isoformat()} in one session: the direct script and "
            f"both cold builds {args.repeats} times each, interleaved (medians); the previous commit once. {args.note}").strip()
    write_section(text, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
