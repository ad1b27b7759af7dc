"""``python -m mbuild.targets.tfjs.converter_main JSON``: tensorflowjs's converter, with two absent imports stood in.

JSON is a list of converter argument lists, run one after another in this process (TensorFlow is
imported once for a variant and its fp32 sibling).

tensorflowjs 4.22 imports ``tensorflow_decision_forests`` (whose releases pin TF <= 2.19) and
``tensorflow_hub`` (which needs ``pkg_resources``, gone from setuptools 81+) at import time, but a
SavedModel conversion calls neither. Empty modules of those names are placed in ``sys.modules`` of
this process only, which mbuild starts for the conversion: nothing is installed and no other
process sees them. A real installed module of either name is used instead when it imports.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

STOOD_IN = ("tensorflow_decision_forests", "tensorflow_hub")


def stand_in_missing() -> list[str]:
    """Put an empty module in ``sys.modules`` for each of ``STOOD_IN`` that does not import; their names."""
    placed = []
    for name in STOOD_IN:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - ImportError, or tensorflow_hub's own failing import of pkg_resources
            sys.modules[name] = types.ModuleType(name)
            placed.append(name)
    return placed


def main(commands: list[list[str]]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    placed = stand_in_missing()
    if placed:
        print(f"mbuild: empty stand-ins for {', '.join(placed)} (not used by SavedModel conversion)", file=sys.stderr)
    from tensorflowjs.converters import converter

    for argv in commands:
        converter.convert(argv)
    return 0


if __name__ == "__main__":
    import json

    sys.exit(main(json.loads(sys.argv[1])))
