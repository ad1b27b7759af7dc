"""Float conversion to .tflite, one function per source framework.

PyTorch goes through litert-torch, ONNX through onnx2tf (a subprocess in the build folder,
on a prepared copy: onnx2tf rewrites its input file in place and fetches a sample-image file
from the internet unless one is already in its working folder), TensorFlow through
``tf.lite.TFLiteConverter``. Each returns what it did for the variant's report; whether the
numbers are right is checked by the caller against the reference.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mbuild.errors import BuildError, MissingDependencyError

log = logging.getLogger(__name__)

# onnx2tf looks for this file in its working directory before downloading it (onnx2tf 1.29).
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
ONNX2TF_TIMEOUT_S = 3600


@contextlib.contextmanager
def quiet():
    """Keep the converters' progress prints out of our output; our reporter says what happened."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def convert_pytorch(ctx, dst: Path) -> dict:
    """litert-torch on the source module, traced with the first validation sample."""
    try:
        import litert_torch
    except ImportError:
        raise MissingDependencyError("litert-torch", "tflite", "Converting PyTorch models to .tflite") from None
    from mbuild.sources.pytorch import example_args

    module = ctx.load_source_model().eval()
    args = example_args(ctx.manifest, ctx.validation_inputs(), 0)
    start = time.perf_counter()
    try:
        with quiet():
            edge = litert_torch.convert(module, args)
            edge.export(str(dst))
    except Exception as e:  # noqa: BLE001 - any converter failure is a build failure
        raise BuildError(f"litert-torch: conversion failed: {type(e).__name__}: {str(e)[:800]}") from e
    return {"converter": "litert-torch", "seconds": round(time.perf_counter() - start, 2),
            "layout": "declared (litert-torch keeps PyTorch's layout and inserts transposes)"}


def convert_onnx(ctx, dst: Path) -> dict:
    """onnx2tf on a prepared copy of the canonical ONNX, run in ``work/onnx2tf`` without network needs."""
    folder = ctx.work_dir / "onnx2tf"
    facts = run_onnx2tf(ctx, folder, "model_float32.tflite")
    shutil.copyfile(folder / "out" / "model_float32.tflite", dst)
    return facts


def run_onnx2tf(ctx, folder: Path, wanted: str, extra_args: tuple[str, ...] = ()) -> dict:
    """onnx2tf into ``folder/out`` (its SavedModel and .tflite files); ``wanted`` must be among them.

    Shared by the tflite runtime (the float .tflite) and the tfjs runtime (the SavedModel, with
    ``-osd`` for its signature); returns what was done for the variant's report.
    """
    from mbuild.sources.onnx_prepare import prepare_onnx

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shapes = {n: s.shape for n, s in ctx.manifest.inputs.items()}
    notes = prepare_onnx(ctx.canonical_onnx, folder / "model.onnx", shapes, for_onnx2tf=True)
    sample = _write_sample_images(ctx, folder)
    cmd = [sys.executable, "-m", "onnx2tf", "-i", "model.onnx", "-o", "out", "-nuo", "-n", *extra_args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=ONNX2TF_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"onnx2tf: no result after {ONNX2TF_TIMEOUT_S} s") from e
    (folder / "onnx2tf.log").write_text(proc.stdout + proc.stderr)
    produced = folder / "out" / wanted
    if proc.returncode != 0 or not produced.exists():
        if "onnx2tf" in proc.stderr and "No module named" in proc.stderr:
            raise MissingDependencyError("onnx2tf", "tflite", "Converting ONNX models to .tflite")
        kept = ctx.out_dir.parent / "onnx2tf.log"  # the staging folder is dropped on failure; keep the log
        shutil.copyfile(folder / "onnx2tf.log", kept)
        raise BuildError(f"onnx2tf: exited with {proc.returncode} and no {wanted}: "
                         f"{_onnx2tf_failure(proc.stdout + proc.stderr, folder / 'model.onnx')} (log: {kept})")
    return {"converter": "onnx2tf", "seconds": round(time.perf_counter() - start, 2), "graph_preparation": notes,
            "sample_images_file": sample, "layout": "channels-last (onnx2tf transposes NCHW to NHWC)"}


def _onnx2tf_failure(log: str, model_path: Path) -> str:
    """The ONNX node onnx2tf failed on (name and op type) and the exception it ended with, no traceback."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", log)
    names = re.findall(r"onnx_op_name:\s*(\S+)", text)
    errors = [line.strip() for line in text.splitlines() if re.match(r"^\s*[A-Za-z_.]*(Error|Exception): ", line)]
    where = "conversion"
    if names:
        where = f"ONNX node {names[-1]!r}" + (f" ({_op_type(model_path, names[-1])})" if model_path.exists() else "")
    cause = errors[-1][:500] if errors else " | ".join(text.strip().splitlines()[-2:])[-500:]
    return f"{where} failed: {cause}"


def _op_type(model_path: Path, name: str) -> str:
    import onnx

    def find(graph):
        for node in graph.node:
            if node.name == name:
                return node.op_type
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH and (found := find(attr.g)):
                    return found
        return None

    try:
        return find(onnx.load(str(model_path), load_external_data=False).graph) or "op type unknown"
    except Exception:  # noqa: BLE001 - a diagnostic only
        return "op type unknown"


def _write_sample_images(ctx, folder: Path) -> str | None:
    """Pre-write onnx2tf's sample-image file from our own data so it never downloads one.

    onnx2tf fetches it when every input is 4-D with 3 channels; it resizes the images to
    the input size itself, so our samples at their native size serve as they are.
    """
    specs = list(ctx.manifest.inputs.values())
    if not all(len(s.shape) == 4 and 3 in (s.shape[1], s.shape[-1]) for s in specs):
        return None
    data = ctx.validation_inputs()  # onnx2tf only needs the file to exist for a float conversion
    x = np.asarray(data[specs[0].name], dtype=np.float32)
    x = x.reshape(-1, *specs[0].shape[1:])[:20]
    if specs[0].shape[1] == 3 and specs[0].shape[-1] != 3:
        x = np.transpose(x, (0, 2, 3, 1))
    np.save(folder / ONNX2TF_SAMPLE_FILE, np.ascontiguousarray(x))
    return ONNX2TF_SAMPLE_FILE


def convert_tensorflow(ctx, dst: Path) -> dict:
    """tf.lite.TFLiteConverter on a SavedModel folder, a .keras/.h5 file or a Keras model object."""
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingDependencyError("tensorflow", "tflite", "Converting TensorFlow models to .tflite") from None
    model = ctx.load_source_model()
    start = time.perf_counter()
    try:
        with quiet():
            converter = _tf_converter(tf, model, ctx)
            data = converter.convert()
    except BuildError:
        raise
    except Exception as e:  # noqa: BLE001
        raise BuildError(f"TFLiteConverter: conversion failed: {type(e).__name__}: {str(e)[:800]}") from e
    dst.write_bytes(data)
    return {"converter": "tf.lite.TFLiteConverter", "seconds": round(time.perf_counter() - start, 2),
            "layout": "declared"}


def _tf_converter(tf, model, ctx):
    """From the source's named tf.function (mbuild.sources.tensorflow), else from a path or Keras model."""
    from mbuild.sources.tensorflow import TFModel, tflite_converter

    if isinstance(model, TFModel):
        return tflite_converter(ctx.manifest, model, ctx.work_dir)
    signature = ctx.manifest.source.signature
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.is_dir():
            return tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=[signature])
        if path.suffix in (".keras", ".h5"):
            return tf.lite.TFLiteConverter.from_keras_model(tf.keras.models.load_model(str(path), compile=False))
        raise BuildError(f"TFLiteConverter: cannot convert {path.name}; give a SavedModel folder, .keras or .h5 file")
    return tf.lite.TFLiteConverter.from_keras_model(model)
