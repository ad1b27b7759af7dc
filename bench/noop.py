"""Time a no-op `doit` (nothing changed) on manifests/: median and spread of repeated runs."""
from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_noop(runs: int = 7) -> list[float]:
    subprocess.run([sys.executable, "-m", "doit"], cwd=ROOT, check=True, capture_output=True)  # make sure it is built
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "doit"], cwd=ROOT, check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        ran = [line for line in proc.stdout.splitlines() if line.startswith(".  ")]
        if ran:
            raise SystemExit(f"not a no-op: {ran}")
    return times


if __name__ == "__main__":
    t = time_noop()
    print(f"| measurement | median | min | max | runs | machine |\n|---|---|---|---|---|---|\n"
          f"| no-op `doit` on manifests/ | {statistics.median(t):.3f} s | {min(t):.3f} s | {max(t):.3f} s | {len(t)} | "
          f"{platform.processor() or platform.machine()}, {platform.system()}, Python {platform.python_version()} |")
