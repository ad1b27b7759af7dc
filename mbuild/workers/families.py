"""What each warm worker imports before its first task: the SDKs its runtime family's steps use.

Families keep SDKs apart that must not meet in one process: litert-torch (tflite) and
torch.jit (Core ML's tracing fallback, the legacy ONNX export of the source step) never share
a worker, and every action runs in a fresh child forked from its worker, so what one action
imports or changes never reaches the next.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import sys

# family -> modules imported once in the worker (a missing one is skipped: the step then says what to install)
PRELOAD = {
    "source-pytorch": ("numpy", "torch", "onnx", "onnxruntime", "onnxslim", "mbuild.sources.build", "mbuild.steps"),
    "source-onnx": ("numpy", "onnx", "onnxruntime", "onnxslim", "mbuild.sources.build", "mbuild.steps"),
    "source-tensorflow": ("numpy", "tensorflow", "tf2onnx", "onnx", "onnxruntime", "mbuild.sources.build",
                          "mbuild.steps"),
    "coreml": ("numpy", "torch", "coremltools", "coremltools.optimize.coreml", "onnx", "onnxruntime",
               "mbuild.targets.coreml.runtime", "mbuild.steps"),
    # TensorFlow (6 s of CPU) only where the source is TensorFlow: litert-torch, onnx2tf (a subprocess of its
    # own), ai-edge-quantizer and the LiteRT interpreter and analyzer do not need it
    "tflite": ("numpy", "torch", "litert_torch", "ai_edge_quantizer", "ai_edge_litert.interpreter",
               "onnx", "onnxruntime", "mbuild.targets.tflite.runtime", "mbuild.steps"),
    "tflite-tensorflow": ("numpy", "tensorflow", "ai_edge_quantizer", "ai_edge_litert.interpreter",
                          "onnx", "onnxruntime", "mbuild.targets.tflite.runtime", "mbuild.steps"),
    "onnxruntime": ("numpy", "numpy.ma", "onnx", "onnxruntime", "onnxruntime.quantization", "onnxslim",
                    "onnxruntime.tools.mobile_helpers.usability_checker", "onnxruntime.transformers.float16",
                    "mbuild.targets.onnxruntime.runtime", "mbuild.steps"),
    "ncnn": ("numpy", "torch", "ncnn", "pnnx", "mbuild.targets.ncnn.runtime", "mbuild.steps"),
    "executorch": ("numpy", "torch", "mbuild.targets.executorch.lower", "executorch.exir",
                   "executorch.backends.xnnpack.partition.xnnpack_partitioner",
                   "executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "torchao.quantization.pt2e.quantize_pt2e",
                   "executorch.runtime", "mbuild.targets.executorch.runtime", "mbuild.steps"),
    # tensorflowjs runs in its own process
    "tfjs": ("numpy", "numpy.ma", "tensorflow", "keras", "mbuild.targets.tfjs.runtime", "mbuild.steps"),
    "bundle": ("numpy", "mbuild.bundle.build"),
}
# The build's zygotes: a zygote imports its modules once, then forks workers (or the next zygote) on request.
# "zygote" holds torch (~2 s of CPU per family that would import it again; five families use it in the
# example matrix); "zygote-export", a fork of it, adds what the Core ML, LiteRT and ExecuTorch workers all
# import on top: dynamo, torch.export and torchao (2.1 s of CPU each; nothing more, and nothing those
# workers keep out, such as TensorFlow for coremltools).
ZYGOTES = {
    "zygote": (None, ("numpy", "numpy.ma", "torch", "onnx", "onnxruntime")),  # numpy.ma: every check's median
    "zygote-export": ("zygote", ("torch._dynamo", "torch.export", "torchao.quantization",
                                 # what torch.export imports on its first call (0.25-0.4 s of each conversion)
                                 "torch.export._trace", "torch._export", "torch._functorch.aot_autograd",
                                 "torch._inductor", "networkx")),
}
_EXPORT_FAMILIES = ("coreml", "tflite", "executorch")


def zygote_of(family: str) -> str | None:
    """The zygote a family's worker (or a zygote) forks from; None: it starts as a process of its own."""
    if family in ZYGOTES:
        return ZYGOTES[family][0]
    if "torch" not in PRELOAD.get(family, ()):
        return None
    return "zygote-export" if family in _EXPORT_FAMILIES else "zygote"


def forks_from_zygote(family: str) -> bool:
    """Whether the family's worker starts as a fork of one of the build's zygotes (it preloads torch)."""
    return zygote_of(family) is not None


# coremltools imports TensorFlow and scikit-learn at import time to offer their frontends, ExecuTorch's
# exir for its EDGE-dialect frontend (4.8 s) and transformers (1 s, unused); a conversion of a PyTorch
# model (ATEN dialect) needs none of them: the coreml worker warms in 3 s of CPU instead of 13 s. In the
# executorch worker, where exir is already imported, nothing is blocked (see ``without``).
_NOT_FOR_COREMLTOOLS = ("tensorflow", "sklearn", "executorch", "transformers")


def family_of(step: str, runtime: str | None, source_kind: str) -> str:
    """The worker family that runs a step (source by framework, variant/check/convert by runtime).

    LiteRT steps of a TensorFlow source run where TensorFlow is imported; of other sources, where it is not.
    """
    if step == "source":
        return f"source-{source_kind}"
    if step == "bundle" or runtime is None:
        return "bundle"
    if runtime == "tflite" and source_kind == "tensorflow":
        return "tflite-tensorflow"
    return runtime


def preload(family: str) -> list[str]:
    """Import the family's modules (a zygote's: its own and its parents'); returns those that could not be imported."""
    missing = []
    for name in _zygote_modules(family) if family in ZYGOTES else PRELOAD.get(family, ()):
        try:
            if name == "coremltools":
                with lean_coremltools():
                    importlib.import_module(name)
            elif name == "onnxruntime.tools.mobile_helpers.usability_checker":
                import_usability_checker()
            elif name == "mbuild.targets.onnxruntime.runtime":
                importlib.import_module(name)
                from mbuild.targets.onnxruntime.ort_format import warm

                warm()  # one ORT-format converter process for the build's conversions
            else:
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the step itself reports a missing SDK with its install command
            missing.append(name)
    return missing


def _zygote_modules(zygote: str) -> tuple[str, ...]:
    parent, modules = ZYGOTES[zygote]
    return (_zygote_modules(parent) if parent else ()) + modules  # a forked zygote has its parent's already


@contextlib.contextmanager
def without(*modules: str, quiet: tuple[str, ...] = ()):
    """Import inside this block as if ``modules`` were not installed (unless already imported).

    For SDKs that import optional frameworks they do not need here: coremltools probes for
    TensorFlow and scikit-learn, ``onnxruntime.tools`` imports torch for a helper mbuild never calls.
    """
    blocked = [m for m in modules if m not in sys.modules]
    loggers = [logging.getLogger(n) for n in quiet]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    for m in blocked:
        sys.modules[m] = None  # import (and find_spec) say "not installed"; removed again below
    try:
        yield
    finally:
        for m in blocked:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def lean_coremltools():
    """Import coremltools without the TensorFlow and scikit-learn frontends it probes for."""
    return without(*_NOT_FOR_COREMLTOOLS, quiet=("coremltools", "torchao"))


def import_usability_checker():
    """ONNX Runtime's mobile usability checker, without the torch import of ``onnxruntime.tools``."""
    with without("torch"):
        from onnxruntime.tools.mobile_helpers import usability_checker
    return usability_checker
