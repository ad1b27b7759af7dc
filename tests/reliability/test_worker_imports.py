"""Warm workers import what their steps use and nothing heavier: the import time is most of a cold build.

Each check runs the worker's own preload in a fresh interpreter (as a worker forked from the zygote
would) and reads ``sys.modules`` afterwards.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mbuild.workers.families import PRELOAD, family_of

PROBE = r"""
import json, sys
from mbuild.workers.families import preload
missing = preload("zygote") + preload(sys.argv[1])
for name in sys.argv[3:]:
    __import__(name)  # what a step of the family imports first (must still work)
print(json.dumps({"missing": missing, "loaded": [m for m in sys.argv[2].split(",") if m in sys.modules]}))
"""
HEAVY = ("tensorflow", "sklearn", "executorch", "transformers")


def _probe(family: str, *then: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, family, ",".join(HEAVY), *then], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family, needed", [("coreml", "coremltools.converters.mil.frontend.torch"),
                                            ("tflite", "litert_torch")])
def test_pytorch_conversion_workers_warm_without_frameworks_they_never_call(family, needed):
    got = _probe(family, needed)
    assert got["missing"] == []
    assert got["loaded"] == [], f"the {family} worker imported {got['loaded']} (seconds of CPU a PyTorch build never uses)"


def test_litert_steps_of_a_tensorflow_source_run_where_tensorflow_is_imported():
    assert family_of("convert", "tflite", "tensorflow") == "tflite-tensorflow"
    assert "tensorflow" in PRELOAD["tflite-tensorflow"]
    for kind in ("pytorch", "onnx"):  # litert-torch or onnx2tf (its own process): TensorFlow not needed here
        assert family_of("variant", "tflite", kind) == "tflite"
    assert "tensorflow" not in PRELOAD["tflite"]


def test_coremltools_keeps_its_executorch_frontend_where_executorch_is_imported_first():
    """The ExecuTorch Core ML partitioner converts EDGE-dialect programs: there the block must not apply."""
    code = ("import executorch.exir\n"
            "from mbuild.workers.families import lean_coremltools\n"
            "with lean_coremltools():\n    import coremltools._deps as d\n"
            "print(d._HAS_EXECUTORCH, 'tensorflow' in __import__('sys').modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["True", "False"]
