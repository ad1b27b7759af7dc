"""Error attribution for quantized .tflite variants from the interpreter's intermediate tensors.

The float and the quantized model are run on the same samples with every tensor preserved;
tensors that keep their name in both are compared (quantized ones dequantized). A tensor whose
quantized copy makes the SQNR drop sharply at the ops that read it is what ``exclude: auto``
keeps in float (by the op scopes ai-edge-quantizer matches: output-tensor names).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ATTRIBUTION_SAMPLES = 32
ATTRIBUTION_BYTES = 1 << 30


def _debug_interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp


def _collect(path: Path, plan: dict, inputs: dict[str, np.ndarray], count: int) -> dict[str, list[np.ndarray]]:
    """Every non-constant tensor's value (dequantized to float) per sample."""
    import warnings

    from mbuild.targets.tflite.io import Runner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = _debug_interpreter(path)
    runner = Runner.__new__(Runner)
    runner.interp, runner.plan, runner.call = interp, plan, None
    details = [d for d in interp.get_tensor_details() if d["name"]]
    values: dict[str, list[np.ndarray]] = {}
    for i in range(count):
        if i == 1:  # every tensor of every sample is kept (twice: float and quantized): bound the memory
            per_sample = sum(v[0].nbytes for v in values.values()) * 2 or 1
            count = min(count, max(1, ATTRIBUTION_BYTES // per_sample))
        if i >= count:
            break
        feed = runner.feed(inputs, i)
        for e in plan["inputs"]:
            interp.set_tensor(runner._index(e), feed[e["key"]])
        interp.invoke()
        for d in details:
            try:
                value = interp.get_tensor(d["index"])
            except ValueError:
                continue
            scale, zero = d["quantization"]
            if value.dtype.kind in "iu" and scale:
                value = (value.astype(np.float32) - zero) * scale
            elif value.dtype.kind != "f":
                continue
            values.setdefault(d["name"], []).append(np.asarray(value, dtype=np.float32))
    return values


def _sqnr(ref: list[np.ndarray], out: list[np.ndarray]) -> float | None:
    r = np.concatenate([x.ravel() for x in ref]).astype(np.float64)
    o = np.concatenate([x.ravel() for x in out]).astype(np.float64)
    if r.shape != o.shape:
        return None
    noise = float(np.sum((r - o) ** 2))
    signal = float(np.sum(r * r))
    if signal == 0:
        return None
    return 99.0 if noise == 0 else float(10 * np.log10(signal / noise))


def attribute(float_path: Path, float_plan: dict, quant_path: Path, quant_plan: dict,
              inputs: dict[str, np.ndarray]) -> dict:
    from mbuild.targets.tflite.model import list_ops, read_model

    count = min(ATTRIBUTION_SAMPLES, len(next(iter(inputs.values()))))
    ref = _collect(float_path, float_plan, inputs, count)
    count = min(count, min((len(v) for v in ref.values()), default=count))  # the float run's memory bound holds
    out = _collect(quant_path, quant_plan, inputs, count)
    ref = {k: v[:count] for k, v in ref.items()}
    out = {k: v[:count] for k, v in out.items()}
    sqnr = {name: s for name in ref.keys() & out.keys() if (s := _sqnr(ref[name], out[name])) is not None}
    ops = list_ops(read_model(Path(quant_path).read_bytes()))
    producer, readers = {}, {}
    for op in ops:
        outs = [t["name"] for t in op.outputs if t.get("name")]
        for name in outs:
            producer[name] = (op, outs)
        for t in op.inputs:
            if t.get("name") and not t.get("const"):
                readers.setdefault(t["name"], []).append((op, outs))

    def reading(tensor: str) -> list:
        """Ops that read ``tensor`` directly or through the QUANTIZE op inserted after it."""
        found = []
        for op, outs in readers.get(tensor, []):
            if op.op == "QUANTIZE":
                found += [r for o in outs for r in readers.get(o, [])]
            else:
                found.append((op, outs))
        return found

    layers = []
    for tensor, before in sqnr.items():
        if tensor not in producer or producer[tensor][0].op in ("QUANTIZE", "DEQUANTIZE"):
            continue
        downstream = reading(tensor)
        after = [sqnr[o] for _, outs in downstream for o in outs if o in sqnr]
        if not after:
            continue
        op = producer[tensor][0]
        keep = {tensor, *(o for _, outs in downstream for o in outs)}
        layers.append({"tensor": tensor, "node": tensor, "op": op.op, "damage_db": round(before - min(after), 3),
                       "cross_model_sqnr_db": round(before, 3), "exclude": sorted(keep)})
    layers.sort(key=lambda x: -x["damage_db"])
    return {"method": "LiteRT interpreter intermediate tensors (float vs quantized .tflite, dequantized); "
                      "damage_db = SQNR drop from a tensor to the outputs of the ops reading its quantized copy",
            "samples": count, "layers": layers[:10]}
