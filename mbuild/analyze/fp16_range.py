"""Which activations leave fp16's range on real data (reported for fp16 recipes, naming the tensors).

ONNX Runtime's host fp16 run keeps many ops in fp32 and does not show what an fp16 GPU or ANE
does with a value above 65504 (inf) or a tensor that lives below 6.1e-5 (subnormal, flushed to
zero on much hardware). The fp32 canonical graph is run with every intermediate tensor exposed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 6.103515625e-05
SAMPLES = 16
UNDERFLOW_SHARE = 0.5  # a tensor counts when most of its nonzero values are subnormal in fp16 ...
UNDERFLOW_RMS = 1e-3  # ... and it is small as a whole (a few tiny values in a large tensor do not matter)


def fp16_range(onnx_path: Path, inputs: dict[str, np.ndarray], samples: int = SAMPLES) -> dict:
    import onnx

    from mbuild.sources.onnx import session

    model = onnx.load(str(onnx_path))
    graph = model.graph
    existing = {o.name for o in graph.output}
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    names = [o for n in graph.node for o in n.output if o and o not in existing and types.get(o) in float_types]
    for name in names:
        graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    tmp = onnx_path.with_name(onnx_path.stem + ".fp16range.onnx")
    onnx.save(model, str(tmp))
    try:
        sess = session(tmp)
        out_names = [o.name for o in sess.get_outputs()]
        count = min(samples, len(next(iter(inputs.values()))))
        peak: dict[str, float] = {}
        small: dict[str, list[float]] = {}
        for i in range(count):
            feed = {k: np.ascontiguousarray(v[i]) for k, v in inputs.items()}
            for name, value in zip(out_names, sess.run(out_names, feed)):
                v = np.abs(np.asarray(value, dtype=np.float64))
                if not v.size:
                    continue
                peak[name] = max(peak.get(name, 0.0), float(np.max(v)))
                nz = v[v > 0]
                share = float(np.mean(nz < FP16_MIN_NORMAL)) if nz.size else 0.0
                rms = float(np.sqrt(np.mean(v * v)))
                small.setdefault(name, [0.0, 0.0])
                small[name][0] += share / count
                small[name][1] = max(small[name][1], rms)
    finally:
        tmp.unlink(missing_ok=True)
    overflow = sorted(({"tensor": n, "max_abs": round(p, 6)} for n, p in peak.items() if p > FP16_MAX),
                      key=lambda t: -t["max_abs"])
    underflow = sorted(({"tensor": n, "subnormal_share": round(s, 4), "rms": float(f"{r:.3g}")}
                        for n, (s, r) in small.items() if s >= UNDERFLOW_SHARE and r < UNDERFLOW_RMS),
                       key=lambda t: -t["subnormal_share"])
    return {"overflow": overflow[:20], "underflow": underflow[:20], "checked_tensors": len(peak), "samples": count,
            "note": "measured on the fp32 canonical ONNX with ONNX Runtime (every intermediate float tensor)"}
