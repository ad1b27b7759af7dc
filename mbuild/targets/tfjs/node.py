"""Running a graph model in Node with @tensorflow/tfjs 4.22 (core + converter + cpu) and the wasm backend.

The Node packages live in the project (``tools/tfjs``: package.json + package-lock.json, installed by
``scripts/setup.sh`` with ``npm ci``), never globally; ``MBUILD_TFJS_NODE_MODULES`` points elsewhere.
Inputs go to Node as raw little-endian arrays and outputs come back the same way (run_graph_model.cjs).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mbuild.errors import BuildError

RUNNER = Path(__file__).parent / "data" / "run_graph_model.cjs"
PACKAGES = ("@tensorflow/tfjs-core", "@tensorflow/tfjs-converter", "@tensorflow/tfjs-backend-cpu",
            "@tensorflow/tfjs-backend-wasm")
TIMEOUT_S = 1800
DTYPES = {"float32": "<f4", "int32": "<i4"}


def node_modules() -> Path:
    """The project's tools/tfjs/node_modules (or ``MBUILD_TFJS_NODE_MODULES``)."""
    if os.environ.get("MBUILD_TFJS_NODE_MODULES"):
        return Path(os.environ["MBUILD_TFJS_NODE_MODULES"])
    return Path(__file__).resolve().parents[3] / "tools" / "tfjs" / "node_modules"


def missing() -> str | None:
    """Why the Node runner cannot run here (no node, or the npm packages not installed), or None."""
    if shutil.which("node") is None:
        return "node is not installed (Node 18+ runs the tfjs check)"
    where = node_modules()
    absent = [p for p in PACKAGES if not (where / p / "package.json").is_file()]
    if absent:
        return f"the npm packages {', '.join(absent)} are not in {where}; run scripts/setup.sh (npm ci in tools/tfjs)"
    return None


def package_version(name: str = "@tensorflow/tfjs-core") -> str:
    try:
        return json.loads((node_modules() / name / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "not installed"


def run(model_dir: Path, inputs: dict, outputs: list[str], backend: str = "wasm") -> tuple[dict, list[float], dict]:
    """Outputs ``{name: [samples, *shape]}``, per-sample latencies (ms) and the runner's facts (backend, version)."""
    import numpy as np

    why = missing()
    if why:
        raise BuildError(f"cannot run the tfjs model: {why}")
    samples = len(next(iter(inputs.values())))
    with tempfile.TemporaryDirectory(prefix="mbuild-tfjs-") as tmp:
        tmp = Path(tmp)
        specs = []
        for i, (name, array) in enumerate(inputs.items()):
            dtype = str(np.asarray(array).dtype)
            if dtype not in DTYPES:
                raise BuildError(f"tfjs run: input {name!r} is {dtype}; the runner feeds float32 or int32")
            file = tmp / f"in{i}.bin"
            np.ascontiguousarray(array, dtype=DTYPES[dtype]).tofile(file)
            specs.append({"name": name, "file": str(file), "shape": list(array.shape[1:]), "dtype": dtype})
        request = {"model": str(model_dir), "backend": backend, "samples": samples, "inputs": specs,
                   "outputs": outputs, "out_dir": str(tmp), "reply": str(tmp / "reply.json")}
        (tmp / "request.json").write_text(json.dumps(request))
        try:
            proc = subprocess.run(["node", str(RUNNER), str(node_modules()), str(tmp / "request.json")],
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise BuildError(f"tfjs run: Node did not finish {samples} samples within {TIMEOUT_S} s") from e
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
            raise BuildError(f"tfjs run in Node failed (exit {proc.returncode}): {tail[-600:] or 'no output'}")
        reply = json.loads((tmp / "reply.json").read_text())
        result = {name: np.fromfile(reply["files"][name], dtype="<f4").reshape(samples, *reply["shapes"][name])
                  for name in outputs}
    facts = {"backend": reply["backend"], "tfjs": reply["tfjs"]}
    return result, reply["latency_ms"], facts
