"""TensorFlow/Keras source -> SavedModel with the manifest's names -> tensorflowjs graph model (model.json + shards).

Keras 3 *layers* models convert through tensorflowjs's Keras path without error but tfjs 4.22
cannot load them (``batch_shape``), so every model goes through a SavedModel. The converter runs in
its own process (see converter_main) with the quantization flags given as ``--flag=*`` and the two
paths last: the flags take an optional value and would otherwise swallow the input path.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mbuild.errors import BuildError
from mbuild.targets.base import BuildContext

TIMEOUT_S = 900
# recipe -> tensorflowjs's weight quantization flag (weights only: dequantized to float32 when the model loads)
QUANTIZE_FLAG = {"fp16": "--quantize_float16", "uint8": "--quantize_uint8", "uint16": "--quantize_uint16"}


def saved_model(ctx: BuildContext) -> tuple[Path, str]:
    """The SavedModel folder and signature key the converter reads (the source's own, or a Keras export)."""
    from mbuild.sources.tensorflow import saved_model_for

    return saved_model_for(ctx.manifest, ctx.load_source_model(), ctx.work_dir)


def convert(ctx: BuildContext, folder: Path, signature: str, out: Path, weights: str | None,
            shard_bytes: int) -> dict:
    """Write ``out/model.json`` and its shards; ``weights`` is a key of QUANTIZE_FLAG or None (float32)."""
    cmd = [sys.executable, "-m", "mbuild.targets.tfjs.converter_main", "--input_format=tf_saved_model",
           "--output_format=tfjs_graph_model", f"--signature_name={signature}",
           f"--weight_shard_size_bytes={shard_bytes}"]
    if weights:
        cmd.append(f"{QUANTIZE_FLAG[weights]}=*")
    cmd += [str(folder), str(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"tensorflowjs_converter did not finish within {TIMEOUT_S} s") from e
    sys.stderr.write(f"tensorflowjs_converter {' '.join(cmd[3:])}\n{proc.stdout}{proc.stderr}")  # the task log
    if proc.returncode != 0 or not (out / "model.json").is_file():
        if "No module named 'tensorflowjs'" in proc.stderr:
            raise BuildError("converting to TensorFlow.js needs the 'tensorflowjs' package, which is not installed; "
                             "install it with: pip install --no-deps -r requirements/tfjs.txt (scripts/setup.sh does)")
        tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-3:])
        raise BuildError(f"tensorflowjs_converter failed (exit {proc.returncode}): {tail[-600:] or 'no output'}")
    return {"converter": f"tensorflowjs {_version('tensorflowjs')}", "from": "SavedModel (signature "
            f"{signature!r})", "seconds": round(time.perf_counter() - start, 2),
            "command": " ".join(cmd[3:-2] + ["<saved_model>", "<out>"])}


def _version(dist: str) -> str:
    from mbuild._io import dist_version

    return dist_version(dist)
