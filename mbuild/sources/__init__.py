"""Source frameworks, one module each, registered explicitly and imported lazily.

A source module offers ``load(manifest)``, ``run_reference(manifest, model, inputs)``,
``export_onnx(manifest, model, out_path)`` and ``versions()``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

SOURCES = {
    "pytorch": "mbuild.sources.pytorch",
    "onnx": "mbuild.sources.onnx",
    "tensorflow": "mbuild.sources.tensorflow",
}


def get_source(kind: str) -> ModuleType:
    return importlib.import_module(SOURCES[kind])
