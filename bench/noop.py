"""Time a no-op `doit` (nothing changed): median and spread of repeated runs."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_noop(root: Path = ROOT, runs: int = 7, args: tuple[str, ...] = ()) -> list[float]:
    subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, capture_output=True)  # built
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, capture_output=True,
                              text=True)
        times.append(time.perf_counter() - start)
        ran = [line for line in proc.stdout.splitlines() if line.startswith(".  ")]
        if ran:
            raise SystemExit(f"not a no-op: {ran}")
    return times


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import fmt, machine, stats

    print(f"| measurement | time | machine |\n|---|---|---|\n"
          f"| no-op `doit` on manifests/ | {fmt(stats(time_noop()))} | {machine()} |")
