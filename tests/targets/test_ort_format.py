"""ORT-format conversion: a warm converter gives the same bytes as a fresh one, whatever it converted before."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mbuild.errors import BuildError
from mbuild.targets.onnxruntime import ort_format


def _model(path: Path, kind: str) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(len(kind))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"])]
    if kind == "pooled":
        nodes += [helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    else:
        nodes += [helper.make_node("Sigmoid", ["r"], ["s"]), helper.make_node("Mul", ["r", "s"], ["y"])]
    graph = helper.make_graph(nodes, kind, [x], [y], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _in_child(fn) -> None:
    """Run ``fn`` in a forked child, as a step forked from its warm worker does."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


def test_warm_conversions_are_byte_identical_to_fresh_ones_in_any_order(tmp_path, monkeypatch):
    models = [_model(tmp_path / f"{k}.onnx", k) for k in ("pooled", "swish")]
    fresh = {}
    for m in models:  # no warm converter in this process: each conversion starts its own
        ort_format.convert_to_ort(m, tmp_path / f"{m.stem}.fresh.ort")
        fresh[m.stem] = _digest(tmp_path / f"{m.stem}.fresh.ort")
    assert fresh["pooled"] != fresh["swish"]
    monkeypatch.setattr(ort_format, "_WARM", [])
    ort_format.warm()
    converter = ort_format._WARM[0]
    try:
        for i, m in enumerate(models + models[::-1] + models):
            out = tmp_path / f"{m.stem}.{i}.ort"
            _in_child(lambda m=m, out=out: ort_format.convert_to_ort(m, out))
            assert _digest(out) == fresh[m.stem], f"conversion {i} of {m.stem} differs from a fresh conversion"
        assert list((converter.folder / "jobs").iterdir()) == [], "a job folder was left behind"
    finally:
        converter.close()
    assert not converter.folder.exists()


def test_a_model_the_converter_cannot_read_is_one_clear_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(BuildError) as e:
        ort_format.convert_to_ort(bad, tmp_path / "model.ort")
    assert "ORT-format conversion failed" in str(e.value) and "Protobuf" in str(e.value)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    assert not (tmp_path / "model.ort").exists()


def test_a_killed_converter_is_replaced_for_the_next_conversion(tmp_path, monkeypatch):
    model = _model(tmp_path / "m.onnx", "pooled")
    ort_format.convert_to_ort(model, tmp_path / "fresh.ort")
    monkeypatch.setattr(ort_format, "_WARM", [])
    ort_format.warm()
    converter = ort_format._WARM[0]
    try:
        os.kill(converter.process.pid, signal.SIGKILL)
        converter.process.wait()
        ort_format.convert_to_ort(model, tmp_path / "after.ort")
        assert _digest(tmp_path / "after.ort") == _digest(tmp_path / "fresh.ort")
    finally:
        converter.close()


OWNER = """
import sys, time
from mbuild.targets.onnxruntime import ort_format
ort_format.warm()
print(ort_format._WARM[0].process.pid, ort_format._WARM[0].folder, flush=True)
time.sleep(600)
"""


def test_the_converter_ends_with_the_process_that_started_it_and_removes_its_folder(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        pid, folder = owner.stdout.readline().split()
        pid = int(pid)
        assert Path(f"/proc/{pid}").exists() and Path(folder).is_dir()
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the converter outlived its worker"
    assert not Path(folder).exists(), "the converter's folder outlived its worker"


def test_folders_of_owners_that_died_are_swept_and_live_ones_kept(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    ended_start = ort_format._started(ended.pid)
    ended.wait()
    folders = {name: tmp_path / f"{ort_format.PREFIX}{name}" for name in ("dead", "live", "old", "young")}
    for folder in folders.values():
        (folder / "pkgs").mkdir(parents=True)
    (folders["dead"] / "owner").write_text(f"{ended.pid} {ended_start}\n")
    (folders["live"] / "owner").write_text(f"{os.getpid()} {ort_format._started(os.getpid())}\n")
    old = time.time() - ort_format.STALE_S - 60  # no owner file: killed before writing it, an hour ago
    os.utime(folders["old"], (old, old))
    removed = ort_format.sweep_stale(str(tmp_path))
    assert sorted(p.name for p in removed) == sorted(folders[n].name for n in ("dead", "old"))
    assert folders["live"].is_dir() and folders["young"].is_dir()
