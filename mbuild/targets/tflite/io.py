"""The I/O contract of a .tflite variant and the interpreter loop that honours it.

Converters rename tensors (litert-torch: ``args_0``/``output_0``), onnx2tf turns NCHW into
NHWC, and quantizers may make inputs and outputs integer. The plan below maps every manifest
input/output to a signature tensor with its layout permutation and quantization, so the app
(and ``run``) can feed arrays in the manifest's declared layout.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from mbuild.errors import BuildError

_INDEXED = re.compile(r"^(?:args|output|input)_(\d+)$")
_LAYOUTS = {3: ("NCW", "NWC"), 4: ("NCHW", "NHWC"), 5: ("NCDHW", "NDHWC")}


def interpreter(path: Path, threads: int = 1):
    """A LiteRT interpreter (XNNPACK CPU) with tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from mbuild.errors import MissingDependencyError

        raise MissingDependencyError("ai-edge-litert", "tflite", "Running .tflite models") from None
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise BuildError(f"LiteRT interpreter cannot load {path.name}: {e}") from e
    return interp


def _signature(interp) -> tuple[str | None, list[tuple[str, dict]], list[tuple[str, dict]]]:
    """Signature key and its (name, details) pairs in subgraph order; names are tensor names without one."""
    sigs = interp.get_signature_list()
    if not sigs:
        return (None, [(d["name"], d) for d in interp.get_input_details()],
                [(d["name"], d) for d in interp.get_output_details()])
    key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
    runner = interp.get_signature_runner(key)
    order_in = [d["index"] for d in interp.get_input_details()]
    order_out = [d["index"] for d in interp.get_output_details()]

    def ordered(details: dict, order: list[int]):
        return sorted(details.items(), key=lambda kv: order.index(kv[1]["index"]) if kv[1]["index"] in order else 1 << 30)

    return key, ordered(runner.get_input_details(), order_in), ordered(runner.get_output_details(), order_out)


def _match(names: list[str], found: list[tuple[str, dict]], what: str) -> list[tuple[str, str, dict]]:
    """Pair manifest names with tensors: same name, else converter index (args_N/output_N), else order."""
    keys = [k for k, _ in found]
    if len(keys) != len(names):
        raise BuildError(f"the .tflite model has {len(keys)} {what}(s) ({', '.join(keys)}) but the manifest "
                         f"declares {len(names)} ({', '.join(names)})")
    lookup = dict(found)
    if set(names) == set(keys):
        return [(n, n, lookup[n]) for n in names]
    indexed = {int(m.group(1)): k for k in keys if (m := _INDEXED.match(k))}
    if len(indexed) == len(keys) and sorted(indexed) == list(range(len(keys))):
        return [(n, indexed[i], lookup[indexed[i]]) for i, n in enumerate(names)]
    return [(n, k, d) for n, (k, d) in zip(names, found)]


def layout_perm(declared: tuple[int, ...], actual: tuple[int, ...]) -> list[int] | None:
    """Permutation p with actual == declared[p]: None if equal, channels-last if that fits."""
    declared, actual = tuple(declared), tuple(actual)
    if declared == actual:
        return None
    rank = len(declared)
    if rank in _LAYOUTS:
        perm = [0, *range(2, rank), 1]
        if tuple(declared[i] for i in perm) == actual:
            return perm
    raise BuildError(f"tensor shape {list(actual)} is neither the declared shape {list(declared)} "
                     f"nor its channels-last form")


def only_unit_dims_differ(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    """True when the shapes hold the same elements in the same memory order ([] vs [1], [2,1,128] vs [1,2,128])."""
    return [d for d in declared if d != 1] == [a for a in actual if a != 1]


def _entry(name: str, key: str, d: dict, declared: tuple[int, ...]) -> dict:
    shape = tuple(int(s) for s in d["shape"])
    scale, zero = d.get("quantization", (0.0, 0))
    dtype = np.dtype(d["dtype"]).name
    try:
        perm, reshape = layout_perm(declared, shape), False
    except BuildError:
        if not only_unit_dims_differ(declared, shape):  # onnx2tf adds or moves size-1 axes (scalars become [1])
            raise
        perm, reshape = None, True
    entry = {"name": name, "key": key, "tensor": d["name"], "shape": list(shape), "declared_shape": list(declared),
             "dtype": dtype, "perm": perm}
    if reshape:
        entry["reshape"] = True
    if dtype in ("int8", "uint8", "int16") and scale:
        entry["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return entry


def to_model_layout(x: np.ndarray, e: dict) -> np.ndarray:
    """One sample in the declared layout -> the layout of the model's tensor."""
    if e["perm"]:
        x = np.transpose(x, e["perm"])
    if e.get("reshape"):
        x = np.reshape(x, e["shape"])
    return x


def from_model_layout(y: np.ndarray, e: dict) -> np.ndarray:
    """One output of the model -> the declared layout."""
    if e.get("reshape"):
        return np.reshape(y, e["declared_shape"])
    return np.transpose(y, np.argsort(e["perm"])) if e["perm"] else y


def plan_io(interp, manifest, output_shapes: dict[str, tuple[int, ...]]) -> dict:
    """Map the manifest's inputs/outputs to the model's signature tensors (shapes, layout, int params)."""
    key, ins, outs = _signature(interp)
    inputs = [_entry(n, k, d, tuple(manifest.inputs[n].shape)) for n, k, d in _match(list(manifest.inputs), ins, "input")]
    outputs = []
    for n, k, d in _match(list(manifest.outputs), outs, "output"):
        declared = tuple(output_shapes.get(n, d["shape"]))
        outputs.append(_entry(n, k, d, declared))
    return {"signature": key, "inputs": inputs, "outputs": outputs}


def layout_changes(plan: dict) -> list[dict]:
    """The layout changes an app must apply, in the bundle's I/O-contract form."""
    changes = []
    for side in ("inputs", "outputs"):
        for e in plan[side]:
            if e["perm"]:
                rank = len(e["perm"])
                src, dst = _LAYOUTS.get(rank, ("declared", "permuted"))
                changes.append({"tensor": e["name"], "side": side[:-1], "from": src, "to": dst, "perm": e["perm"]})
            elif e.get("reshape"):  # same bytes, other shape: an app feeds its buffer unchanged
                changes.append({"tensor": e["name"], "side": side[:-1], "from": e["declared_shape"],
                                "to": e["shape"], "reshape": True})
    return changes


class Runner:
    """Feeds samples in the manifest's layout, one at a time, and returns outputs in that layout."""

    def __init__(self, path: Path, plan: dict, threads: int = 1):
        self.interp = interpreter(path, threads)
        self.plan = plan
        self.call = (self.interp.get_signature_runner(plan["signature"]) if plan["signature"] else None)

    def feed(self, inputs: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        """Sample ``i`` of every input, laid out and typed as the model wants it."""
        feed = {}
        for e in self.plan["inputs"]:
            feed[e["key"]] = _to_model_dtype(to_model_layout(np.asarray(inputs[e["name"]][i]), e), e)
        return feed

    def invoke(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.call is not None:
            result = self.call(**feed)
        else:
            for e in self.plan["inputs"]:
                self.interp.set_tensor(self._index(e), feed[e["key"]])
            self.interp.invoke()
            result = {e["key"]: self.interp.get_tensor(self._index(e)) for e in self.plan["outputs"]}
        out = {}
        for e in self.plan["outputs"]:
            out[e["name"]] = from_model_layout(_from_model_dtype(np.asarray(result[e["key"]]), e), e)
        return out

    def _index(self, e: dict) -> int:
        details = self.interp.get_input_details() + self.interp.get_output_details()
        return next(d["index"] for d in details if d["name"] == e["tensor"])

    def run(self, inputs: dict[str, np.ndarray], *, warmup: bool = True) -> tuple[dict[str, np.ndarray], list[float]]:
        """Outputs as [samples, *shape] and per-sample wall time in ms (a warm-up call is not timed)."""
        count = len(next(iter(inputs.values())))
        if warmup and count:
            self.invoke(self.feed(inputs, 0))
        collected: dict[str, list] = {e["name"]: [] for e in self.plan["outputs"]}
        latencies = []
        for i in range(count):
            feed = self.feed(inputs, i)
            start = time.perf_counter()
            result = self.invoke(feed)
            latencies.append((time.perf_counter() - start) * 1000.0)
            for name, y in result.items():
                collected[name].append(y)
        return {n: np.stack(v) for n, v in collected.items()}, latencies


def _to_model_dtype(x: np.ndarray, e: dict) -> np.ndarray:
    q = e.get("quantization")
    dtype = np.dtype(e["dtype"])
    if q:
        info = np.iinfo(dtype)
        x = np.clip(np.round(x.astype(np.float64) / q["scale"] + q["zero_point"]), info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype))


def _from_model_dtype(y: np.ndarray, e: dict) -> np.ndarray:
    q = e.get("quantization")
    if q:
        return ((y.astype(np.float32) - q["zero_point"]) * q["scale"]).astype(np.float32)
    return y
