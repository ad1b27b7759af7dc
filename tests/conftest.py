"""Shared fixtures: throw-away projects built with the real doit, converters and runtimes."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIGITS_FILES = ["model.py", "weights.pt", "val.npz", "calib.npz"]

DIGITS_CPU = """\
mbuild: 1
name: digits-cnn
version: 1.0.0
source:
  pytorch: {model: ../examples/digits/model.py:DigitsCNN, weights: ../examples/digits/weights.pt}
inputs:
  image: {shape: [1, 1, 8, 8], dtype: float32, range: [0, 1]}
outputs:
  logits: {kind: classification}
data:
  calibration: {npz: ../examples/digits/calib.npz, inputs: {image: x}, limit: 128}
  validation: {npz: ../examples/digits/val.npz, inputs: {image: x}, labels: y}
recipes:
  fp32: {precision: fp32}
  fp16: {precision: fp16}
  int8: {quantize: {scheme: static, calibration: calibration}}
targets:
  cpu-fp32: {runtime: onnxruntime, recipe: fp32}
  cpu-int8: {runtime: onnxruntime, recipe: int8}
validate:
  int8: {cosine_min: 0.99}
"""


def make_project(root: Path, manifests: dict[str, str], examples: tuple[str, ...] = ("digits",)) -> Path:
    """A project folder with dodo.py, the named example folders and the given manifests."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dodo.py", root / "dodo.py")
    for ex in examples:
        src = REPO / "examples" / ex
        dst = root / "examples" / ex
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and f.suffix in (".py", ".pt", ".npz", ".onnx", ".yaml"):
                shutil.copyfile(f, dst / f.name)
    (root / "manifests").mkdir(exist_ok=True)
    for name, text in manifests.items():
        (root / "manifests" / name).write_text(text)
    return root


def run_doit(project: Path, *args: str, check: bool = False, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=project, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def ctrl_c_reaches_it() -> None:
    """preexec_fn for a build a test will Ctrl-C: SIGINT handled as in a terminal.

    A suite started in the background by a non-interactive shell (``cmd &``, as CI runners may) inherits
    SIGINT ignored, and so would every build it starts; a real terminal never hands that on.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def executed_tasks(stdout: str) -> set[str]:
    """Tasks doit ran (lines '.  task'), as opposed to those it found up to date ('-- task')."""
    return {line[3:].strip() for line in stdout.splitlines() if line.startswith(".  ")}


def run_mbuild(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbuild", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="session")
def digits_cpu_project(tmp_path_factory) -> Path:
    """The digits CNN built once for the CPU (fp32 + static int8) with the real doit."""
    project = make_project(tmp_path_factory.mktemp("digits-cpu"), {"digits.yaml": DIGITS_CPU})
    run_doit(project, check=True)
    return project


@pytest.fixture(scope="session")
def digits_full_project(tmp_path_factory) -> Path:
    """manifests/digits.yaml (Core ML, LiteRT and ONNX Runtime targets) built once with the real tools."""
    project = make_project(tmp_path_factory.mktemp("digits-full"),
                           {"digits.yaml": (REPO / "manifests" / "digits.yaml").read_text()})
    run_doit(project, check=True, timeout=1500)
    return project


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (minutes-long loops)")


# Session fixtures too costly to build twice: with `--dist loadfile` each test process builds its own, so their
# tests must all live in one file.
ONE_FILE_FIXTURES = {"digits_full_project": "tests/e2e/test_digits_bundle.py"}


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run only when asked for (`--slow`, or a `-m` expression such as `-m slow`)."""
    for item in items:
        for fixture, home in ONE_FILE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.nodeid.startswith(home):
                raise pytest.UsageError(f"{item.nodeid} uses {fixture}: move it into {home}, where the other tests of "
                                        "that build are (each test process would build it again)")
    if config.getoption("--slow") or config.option.markexpr:
        return
    skip = pytest.mark.skip(reason="slow: run with --slow or -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


CHROMIUM = Path("/usr/bin/chromium")


def chromium_screenshot(html: Path, tmp_path: Path) -> Path:
    """A headless-Chromium screenshot of a local page (the flags keep it off this machine's closed network)."""
    png = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,1600",
           Path(html).resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert png.exists(), f"chromium wrote no screenshot (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    return png

