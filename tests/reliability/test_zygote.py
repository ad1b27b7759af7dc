"""Warm workers of the families that preload torch are forked from the build's zygotes, which imported it once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BUILD = r"""
import json, os, sys, time
os.environ["MBUILD_BUILD_PID"] = str(os.getpid())
from mbuild.workers import pool
root = sys.argv[1]
pids = {}
for family in ("source-pytorch", "ncnn", "onnxruntime", "tflite"):
    pool._warm_connection(root, family, None, time.monotonic(), 20.0).close()
for family in ("source-pytorch", "ncnn", "onnxruntime", "tflite", "zygote-export"):
    pids[family] = int((open(os.path.join(root, ".mbuild", "workers", family + ".pid")).read().split()[1]))
print(json.dumps({"build": os.getpid(), **pids}), flush=True)
"""


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


def _maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_torch_families_fork_from_the_zygote_and_all_end_with_the_build(tmp_path):
    (tmp_path / ".mbuild").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(proc.stdout.readline())
        zygote = _ppid(pids["source-pytorch"])
        assert zygote != pids["build"] and _ppid(zygote) == pids["build"]
        assert b"zygote" in Path(f"/proc/{zygote}/cmdline").read_bytes().split(b"\0")
        assert _ppid(pids["ncnn"]) == zygote, "a second torch family did not fork from the same zygote"
        assert _maps_torch(zygote) and _maps_torch(pids["ncnn"])
        assert _ppid(pids["onnxruntime"]) == pids["build"] and not _maps_torch(pids["onnxruntime"]), \
            "a family without torch should start lean, on its own"
        # LiteRT (like Core ML and ExecuTorch) forks from the second zygote, which forked from the first
        # with dynamo, torch.export and torchao imported once for all three
        assert _ppid(pids["zygote-export"]) == zygote and _ppid(pids["tflite"]) == pids["zygote-export"]
    finally:
        proc.stdout.close()
        proc.wait(timeout=60)
    alive = [zygote, *(pids[f] for f in ("source-pytorch", "ncnn", "onnxruntime", "tflite", "zygote-export"))]
    deadline = time.monotonic() + 15
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if os.path.exists(f"/proc/{p}") and "Z" not in _state(p)]
        time.sleep(0.1)
    assert alive == [], f"workers outlived their build: {alive}"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except OSError:
        return "Z"
