"""Source -> SavedModel -> tensorflowjs graph model (model.json + shards).

TensorFlow/Keras sources: a SavedModel carrying the manifest's names (Keras 3 *layers* models
convert through tensorflowjs's Keras path without error, but tfjs 4.22 cannot load them:
``batch_shape``). PyTorch and ONNX sources: onnx2tf's SavedModel of the canonical ONNX (the same
onnx2tf run the tflite runtime makes, with ``-osd`` for a signature), channels-last.
The converter runs in its own process (see converter_main), once for every graph model a variant
needs; its quantization flags are given as ``--flag=*`` and the two paths last: the flags take an
optional value and would otherwise swallow the input path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mbuild._io import dist_version
from mbuild.errors import BuildError
from mbuild.targets.base import BuildContext

TIMEOUT_S = 900
# recipe -> tensorflowjs's weight quantization flag (weights only: dequantized to float32 when the model loads)
QUANTIZE_FLAG = {"fp16": "--quantize_float16", "uint8": "--quantize_uint8", "uint16": "--quantize_uint16"}


def saved_model(ctx: BuildContext) -> tuple[Path, str, dict]:
    """The SavedModel folder and signature key the converter reads, and how it was made."""
    kind = ctx.manifest.source.kind
    if kind == "tensorflow":
        from mbuild.sources.tensorflow import saved_model_for

        folder, signature = saved_model_for(ctx.manifest, ctx.load_source_model(), ctx.work_dir)
        how = "the source's SavedModel" if folder == ctx.manifest.source.model_path else "Keras ExportArchive"
        return folder, signature, {"from": f"SavedModel ({how}, signature {signature!r})"}
    from mbuild.targets.tflite.convert import run_onnx2tf

    facts = run_onnx2tf(ctx, ctx.work_dir / "onnx2tf", "saved_model.pb", ("-osd",))
    made = "the canonical ONNX (torch.onnx)" if kind == "pytorch" else "the canonical ONNX"
    return (ctx.work_dir / "onnx2tf" / "out", "serving_default",
            {"from": f"onnx2tf's SavedModel of {made}", "onnx2tf": facts})


def convert(folder: Path, signature: str, jobs: list[tuple[Path, str | None]], shard_bytes: int) -> dict:
    """Write ``out/model.json`` and shards for each ``(out, weights)`` job in one converter process.

    ``weights`` is a key of QUANTIZE_FLAG, or None for float32.
    """
    commands = []
    for out, weights in jobs:
        args = ["--input_format=tf_saved_model", "--output_format=tfjs_graph_model", f"--signature_name={signature}",
                f"--weight_shard_size_bytes={shard_bytes}"]
        if weights:
            args.append(f"{QUANTIZE_FLAG[weights]}=*")
        commands.append(args + [str(folder), str(out)])
    cmd = [sys.executable, "-m", "mbuild.targets.tfjs.converter_main", json.dumps(commands)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"tensorflowjs_converter did not finish within {TIMEOUT_S} s") from e
    shown = "\n".join("tensorflowjs_converter " + " ".join(c) for c in commands)
    sys.stderr.write(f"{shown}\n{proc.stdout}{proc.stderr}")  # the task log
    if proc.returncode != 0 or not all((out / "model.json").is_file() for out, _ in jobs):
        if "No module named 'tensorflowjs'" in proc.stderr:
            raise BuildError("converting to TensorFlow.js needs the 'tensorflowjs' package, which is not installed; "
                             "install it with: pip install --no-deps -r requirements/tfjs.txt (scripts/setup.sh does)")
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise BuildError(f"tensorflowjs_converter failed (exit {proc.returncode}): {tail[-600:] or 'no output'}")
    return {"converter": f"tensorflowjs {dist_version('tensorflowjs')}", "seconds": round(time.perf_counter() - start, 2),
            "command": " ".join(commands[0][:-2] + ["<saved_model>", "<out>"])}
