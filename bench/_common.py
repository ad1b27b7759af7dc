"""Shared bench helpers: the machine, robust statistics, a throw-away project and timed doit runs."""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
PROJECT = WORK / "project"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def stats(values: list[float]) -> dict:
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(round(q * (len(s) - 1))))]  # noqa: E731
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "p10": pick(0.1), "p90": pick(0.9), "n": len(s)}


def fmt(st: dict, unit: str = "s", digits: int = 3) -> str:
    """'median (min-max, n=N)' - the spread is the full range for small n, p10-p90 for many runs."""
    lo, hi = (st["min"], st["max"]) if st["n"] < 20 else (st["p10"], st["p90"])
    rng = "min-max" if st["n"] < 20 else "p10-p90"
    return f"{st['median']:.{digits}f} {unit} ({rng} {lo:.{digits}f}-{hi:.{digits}f}, n={st['n']})"


def make_project(dst: Path = PROJECT, manifests: bool = True) -> Path:
    """A copy of the project's dodo.py, manifests/, examples/ and bench manifests (no build state)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copyfile(ROOT / "dodo.py", dst / "dodo.py")
    shutil.copytree(ROOT / "examples", dst / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    if manifests:
        shutil.copytree(ROOT / "manifests", dst / "manifests")
    (dst / "bench").mkdir()
    shutil.copytree(ROOT / "bench" / "manifests", dst / "bench" / "manifests")
    return dst


def doit(project: Path, *args: str, env: dict | None = None) -> tuple[float, str, int]:
    """Wall time, merged output and exit code of one `python -m doit ...` in the project."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=project, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - start, proc.stdout, proc.returncode


def ran(output: str) -> list[str]:
    return [line[3:].strip() for line in output.splitlines() if line.startswith(".  ")]


def write_mobilenet_data(folder: Path) -> None:
    """224x224 crops of scikit-image photos, ImageNet-normalised, NCHW (validation and calibration)."""
    import numpy as np
    from skimage import data
    from skimage.transform import resize

    photos = [getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    folder.mkdir(parents=True, exist_ok=True)
    for split, seed, count in (("val", 11, 48), ("calib", 12, 32)):
        rng = np.random.default_rng(seed)
        xs = []
        for i in range(count):
            img = photos[i % len(photos)] / 255.0
            h, w = img.shape[:2]
            side = int(rng.integers(160, min(h, w) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = resize(img[y:y + side, x:x + side], (224, 224), anti_aliasing=True)
            xs.append(((crop - mean) / std).transpose(2, 0, 1)[None])
        with open(folder / f"mobilenet-{split}.npz", "wb") as fh:
            np.savez(fh, x=np.stack(xs).astype(np.float32))
