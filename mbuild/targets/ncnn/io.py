"""The ncnn I/O contract and a runner: pnnx's blob names (in0, out0, ...) mapped to the manifest's names.

pnnx names the graph's inputs ``in0, in1, ...`` in the order of the model's arguments and its
outputs ``out0, out1, ...`` in the order of its results, and ncnn has no batch axis: a declared
``[1, C, H, W]`` input is fed as ``[C, H, W]``, and outputs come back without the leading 1.
The plan says which blob is which manifest tensor and what shape each side has.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild.errors import BuildError
from mbuild.targets.ncnn.model import input_blobs, output_blobs, read_param

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

FP16_SWITCHES = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic")


def import_ncnn():
    """The ncnn Python package, or a BuildError with the install command."""
    try:
        import ncnn
    except ImportError as e:
        raise BuildError("the ncnn Python package is not installed; install it with: pip install 'mbuild[ncnn]'") from e
    return ncnn


def plan_io(param: Path, manifest, output_shapes: dict[str, tuple]) -> dict:
    """Which blob carries which manifest input/output, with the declared and the blob shapes."""
    layers = read_param(param)
    ins, outs = input_blobs(layers), output_blobs(layers)
    if len(ins) != len(manifest.inputs) or len(outs) != len(manifest.outputs):
        raise BuildError(f"pnnx wrote {len(ins)} input(s) {ins} and {len(outs)} output(s) {outs}; the manifest "
                         f"declares {len(manifest.inputs)} input(s) and {len(manifest.outputs)} output(s)")
    expected_in = [f"in{i}" for i in range(len(ins))]
    expected_out = [f"out{i}" for i in range(len(outs))]
    if sorted(ins) != sorted(expected_in) or sorted(outs) != sorted(expected_out):
        raise BuildError(f"pnnx named the blobs {ins} -> {outs}, not in0.. -> out0..: their order is unknown")
    inputs = [{"name": n, "blob": f"in{i}", "shape": list(spec.shape), "blob_shape": list(spec.shape[1:])}
              for i, (n, spec) in enumerate(manifest.inputs.items())]
    outputs = [{"name": n, "blob": f"out{i}", "shape": list(output_shapes[n]), "blob_shape": list(output_shapes[n][1:])}
               for i, n in enumerate(manifest.outputs)]
    return {"inputs": inputs, "outputs": outputs}


def layout_changes(plan: dict) -> list[dict]:
    """The dropped batch axis of every tensor, in the form the other runtimes record layout changes."""
    return [{"side": side, "tensor": t["name"], "blob": t["blob"], "from": t["shape"], "to": t["blob_shape"],
             "reshape": True, "why": "ncnn has no batch axis"}
            for side, key in (("input", "inputs"), ("output", "outputs")) for t in plan[key]]


class Runner:
    """One ncnn.Net on the CPU; ``fp16=False`` switches fp16 storage, packing and arithmetic off."""

    def __init__(self, param: Path, weights: Path, plan: dict, *, fp16: bool | None = False, threads: int = 1):
        ncnn = import_ncnn()
        self.net = ncnn.Net()
        opt = self.net.opt
        self.defaults = {k: bool(getattr(opt, k)) for k in FP16_SWITCHES}
        if fp16 is not None:  # None: the device defaults, as an app gets them
            for k in FP16_SWITCHES:
                setattr(opt, k, fp16)
        opt.use_vulkan_compute = False  # no GPU on the build host; the CPU is what is measured
        opt.num_threads = threads
        self.options = {k: bool(getattr(opt, k)) for k in FP16_SWITCHES}
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise BuildError(f"ncnn could not load {Path(param).name} / {Path(weights).name}")
        self.plan = plan

    def run(self, inputs: dict[str, "np.ndarray"]) -> tuple[dict[str, "np.ndarray"], list[float]]:
        """Every sample through the net; outputs as [samples, *declared shape]; per-sample ms (first dropped)."""
        import numpy as np

        ncnn = import_ncnn()
        count = len(next(iter(inputs.values())))
        outs: dict[str, list] = {o["name"]: [] for o in self.plan["outputs"]}
        latencies = []
        for i in range(count):
            start = time.perf_counter()
            ex = self.net.create_extractor()
            for spec in self.plan["inputs"]:
                sample = np.ascontiguousarray(inputs[spec["name"]][i], dtype=np.float32)
                ex.input(spec["blob"], ncnn.Mat(sample.reshape(spec["blob_shape"])))
            for spec in self.plan["outputs"]:
                status, mat = ex.extract(spec["blob"])
                if status != 0:
                    raise BuildError(f"ncnn could not compute blob {spec['blob']} ({spec['name']}): status {status}")
                value = np.array(mat)
                if value.size != int(np.prod(spec["shape"])):
                    raise BuildError(f"ncnn blob {spec['blob']} has shape {list(value.shape)}; output "
                                     f"{spec['name']!r} is declared {spec['shape']}")
                outs[spec["name"]].append(value.reshape(spec["shape"]))
            latencies.append((time.perf_counter() - start) * 1000)
        return {n: np.stack(v) for n, v in outs.items()}, latencies[1:]
