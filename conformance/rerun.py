"""Re-run every built conformance cell outside mbuild and check the verdict mbuild recorded.

For each target with a built artifact, this loads the file from the build folder and runs it with the
runtime's own API: ``onnxruntime.InferenceSession`` for .onnx; ``ai_edge_litert`` for .tflite, int8 I/O
quantized/dequantized with the scale and zero point the interpreter reports, checked against the ones
mbuild recorded; ``executorch.runtime`` for .pte; the ``ncnn`` package for .ncnn (CPU, fp16 storage,
packing and arithmetic off, as mbuild's check runs it; blobs found in the .param text); and
@tensorflow/tfjs on the wasm backend in Node for .tfjs, through this folder's own ``rerun_tfjs.cjs`` (I/O
read from model.json's signature). The reference is the source model run here too (ONNX Runtime on the
source .onnx, PyTorch on the module and weights, tf_keras on a Keras 2 .h5), or mbuild's recorded
reference where this script has no runner of its own (other TensorFlow sources). The metrics are computed
by the code below, not by ``mbuild.validate``: cosine, top-1 agreement, CTC decoding with exact match and
character error rate, box decoding with NMS, IoU matching, recall, precision and matched-box IoU, and the
range error of a regression output. Each recomputed metric that has a limit in the recorded tolerance is
judged here and compared with mbuild's judgement of the same limit (a failure naming that output and
tolerance key, or none). A cell agrees when every such limit gets the same verdict. Limits this script
does not recompute (per-channel SNR, per-part tensor gates) are listed, not judged. Writes
``work/rerun.json``; ``run.py`` puts the verdicts in the README.

    .venv/bin/python conformance/rerun.py [MODEL ...]    # after run.py (needs the build folder)
    .venv/bin/python conformance/rerun.py --self-check   # each judged limit of each agreeing cell falsified in turn: must disagree
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE / "work" / "rerun.json"

# tolerance key -> (metric, 'min' | 'max') for the metrics recomputed here
JUDGED = {"cosine_min": ("cosine", "min"), "top1_agreement_min": ("top1_agreement", "min"),
          "exact_match_min": ("exact_match", "min"), "cer_max": ("cer", "max"),
          "recall_min": ("recall", "min"), "precision_min": ("precision", "min"),
          "box_iou_min": ("box_iou", "min"), "range_error_max": ("range_error", "max")}


# -- the data and the reference ---------------------------------------------------------------------

def validation_inputs(spec: dict, base: Path) -> dict[str, np.ndarray]:
    """Manifest input name -> [samples, *declared shape], straight from the manifest's npz."""
    v = spec["data"]["validation"]
    with np.load(base / v["npz"]) as z:
        return {name: np.asarray(z[key]) for name, key in v["inputs"].items()}


def reference_outputs(spec: dict, base: Path, inputs: dict, build: Path) -> tuple[dict, str]:
    """The source model's outputs on the validation inputs, and where they came from."""
    src = spec["source"]
    names = list(spec["outputs"])
    if "onnx" in src:
        return run_onnx(base / src["onnx"]["model"], spec, inputs), "source .onnx run here (onnxruntime)"
    if "pytorch" in src:
        return run_pytorch(src["pytorch"], base, names, inputs), "source module run here (PyTorch)"
    if "tensorflow" in src and Path(src["tensorflow"]["model"]).suffix in (".h5", ".hdf5"):
        return run_keras2(base / src["tensorflow"]["model"], names, inputs), "source .h5 run here (tf_keras)"
    with np.load(build / "source" / "reference.npz") as z:
        return {n: np.asarray(z[f"output:{n}"]) for n in names}, "mbuild's recorded reference (no runner here)"


def run_pytorch(src: dict, base: Path, names: list[str], inputs: dict) -> dict:
    import importlib.util

    import torch

    file, cls = src["model"].rsplit(":", 1)
    module_spec = importlib.util.spec_from_file_location("rerun_model", base / file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    model = getattr(module, cls)()
    model.load_state_dict(torch.load(base / src["weights"], map_location="cpu", weights_only=True))
    model.eval()
    outs: dict[str, list] = {n: [] for n in names}
    with torch.no_grad():
        for i in range(len(next(iter(inputs.values())))):
            result = model(*[torch.from_numpy(np.asarray(a[i])) for a in inputs.values()])
            result = result if isinstance(result, tuple) else (result,)
            for n, y in zip(names, result):
                outs[n].append(y.numpy())
    return {n: np.stack(v) for n, v in outs.items()}


def run_keras2(path: Path, names: list[str], inputs: dict) -> dict:
    """A legacy Keras 2 .h5 model with tf_keras (mbuild loads it with Keras 3): all samples as one batch."""
    import tf_keras

    model = tf_keras.models.load_model(str(path), compile=False)
    arrays = list(inputs.values())
    count = len(arrays[0])
    result = model.predict([a.reshape(-1, *a.shape[2:]) for a in arrays], verbose=0)  # [samples * 1, ...]
    result = result if isinstance(result, list) else [result]
    batch = arrays[0].shape[1]  # the declared batch of each sample
    return {n: np.asarray(y, dtype=np.float32).reshape(count, batch, *y.shape[1:]) for n, y in zip(names, result)}


# -- the runtimes ---------------------------------------------------------------------------------

def _tensor(spec: dict, name: str) -> str:
    entry = spec["outputs"][name] or {}
    return entry.get("tensor", name) if isinstance(entry, dict) else name


def run_onnx(path: Path, spec: dict, inputs: dict) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    sess_in, sess_out = sess.get_inputs(), [o.name for o in sess.get_outputs()]
    names = list(spec["outputs"])
    # by name when the model kept them, else by position (a build may rename tensors it cannot carry)
    in_names = [n if n in {i.name for i in sess_in} else sess_in[k].name for k, n in enumerate(inputs)]
    wanted = [_tensor(spec, n) for n in names]
    out_names = [w if w in sess_out else sess_out[k] for k, w in enumerate(wanted)]
    types = {i.name: i.type for i in sess_in}
    outs: dict[str, list] = {n: [] for n in names}
    for i in range(len(next(iter(inputs.values())))):
        feed = {}
        for sess_name, arr in zip(in_names, inputs.values()):
            x = np.asarray(arr[i])
            feed[sess_name] = x.astype(np.float16) if types[sess_name] == "tensor(float16)" else x
        for n, y in zip(names, sess.run(out_names, feed)):
            outs[n].append(np.asarray(y, dtype=np.float32))
    return {n: np.stack(v) for n, v in outs.items()}


def run_tflite(path: Path, io: dict, inputs: dict) -> tuple[dict, list[str]]:
    """Outputs in the declared layout, and any scale/zero point that differs from mbuild's record."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    runner = interp.get_signature_runner(io["signature"]) if io.get("signature") else None
    details_in = runner.get_input_details() if runner else {d["name"]: d for d in interp.get_input_details()}
    details_out = runner.get_output_details() if runner else {d["name"]: d for d in interp.get_output_details()}
    problems = []

    def quant(entry: dict, details: dict) -> tuple[float, int] | None:
        d = details[entry["key"]]
        scale, zero = d.get("quantization", (0.0, 0))
        recorded = entry.get("quantization")
        if np.dtype(d["dtype"]).kind in "iu" and scale:
            if not recorded or abs(recorded["scale"] - scale) > 1e-12 or recorded["zero_point"] != zero:
                problems.append(f"{entry['name']}: interpreter scale/zero {scale}/{zero}, recorded {recorded}")
            return float(scale), int(zero)
        return None

    q_in = {e["name"]: quant(e, details_in) for e in io["inputs"]}
    q_out = {e["name"]: quant(e, details_out) for e in io["outputs"]}
    outs: dict[str, list] = {e["name"]: [] for e in io["outputs"]}
    for i in range(len(next(iter(inputs.values())))):
        feed = {}
        for e in io["inputs"]:
            x = np.asarray(inputs[e["name"]][i], dtype=np.float64)
            if e.get("perm"):
                x = np.transpose(x, e["perm"])
            x = np.reshape(x, e["shape"])
            dtype = np.dtype(details_in[e["key"]]["dtype"])
            if q_in[e["name"]]:
                scale, zero = q_in[e["name"]]
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale + zero), info.min, info.max)
            feed[e["key"]] = np.ascontiguousarray(x.astype(dtype))
        if runner:
            result = runner(**feed)
        else:
            for e in io["inputs"]:
                interp.set_tensor(details_in[e["key"]]["index"], feed[e["key"]])
            interp.invoke()
            result = {e["key"]: interp.get_tensor(details_out[e["key"]]["index"]) for e in io["outputs"]}
        for e in io["outputs"]:
            y = np.asarray(result[e["key"]]).astype(np.float64)
            if q_out[e["name"]]:
                scale, zero = q_out[e["name"]]
                y = (y - zero) * scale
            if e.get("perm"):
                y = np.transpose(y, np.argsort(e["perm"]))
            outs[e["name"]].append(np.reshape(y, e["declared_shape"]).astype(np.float32))
    return {n: np.stack(v) for n, v in outs.items()}, problems


def run_pte(path: Path, spec: dict, inputs: dict) -> tuple[dict, list[str]]:
    """ExecuTorch's Python runtime, one sample at a time (a .pte takes exactly its exported shapes)."""
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    names = list(spec["outputs"])
    outs: dict[str, list] = {n: [] for n in names}
    for i in range(len(next(iter(inputs.values())))):
        result = method.execute([torch.from_numpy(np.ascontiguousarray(a[i], dtype=np.float32))
                                 for a in inputs.values()])
        if len(result) != len(names):
            raise RuntimeError(f"the program returned {len(result)} outputs, the manifest declares {len(names)}")
        for n, y in zip(names, result):
            outs[n].append(np.asarray(y, dtype=np.float32).copy())
    return {n: np.stack(v) for n, v in outs.items()}, []


def ncnn_blobs(param: Path) -> tuple[list[str], list[str]]:
    """The graph's input blobs (tops of Input layers) and output blobs (tops nobody reads), from the .param text."""
    lines = param.read_text().split("\n")[2:]  # magic 7767517, then "layers blobs"
    inputs, produced, consumed = [], [], set()
    for line in filter(None, (x.split() for x in lines)):
        kind, bottoms, tops = line[0], int(line[2]), int(line[3])
        names = line[4:4 + bottoms + tops]
        consumed.update(names[:bottoms])
        produced += names[bottoms:]
        if kind == "Input":
            inputs += names[bottoms:]
    return inputs, [b for b in produced if b not in consumed]


def run_ncnn(folder: Path, spec: dict, inputs: dict, ref: dict, recorded_io: dict,
             fp16_off: bool = True) -> tuple[dict, list[str]]:
    """The ncnn package on the CPU with fp16 storage, packing and arithmetic off (as mbuild's check runs it).

    pnnx names blobs in0.. / out0.. in argument and result order; ncnn has no batch axis, so a sample is
    fed without its leading 1 and each output is reshaped to the reference's per-sample shape.
    ``fp16_off=False``: ncnn's own defaults for this CPU (mbuild's second, informational run).
    """
    import ncnn

    in_blobs, out_blobs = ncnn_blobs(folder / "model.param")
    order = lambda blobs, prefix: sorted(blobs, key=lambda b: int(b[len(prefix):]) if b[len(prefix):].isdigit() else 1e9)  # noqa: E731
    in_blobs, out_blobs = order(in_blobs, "in"), order(out_blobs, "out")
    names = list(spec["outputs"])
    if len(in_blobs) != len(inputs) or len(out_blobs) != len(names):
        raise RuntimeError(f"model.param has inputs {in_blobs} and outputs {out_blobs}; the manifest declares "
                           f"{len(inputs)} and {len(names)}")
    notes = [f"{e['name']}: blob {blob} here, mbuild recorded {e.get('blob')}"
             for side, blobs in (("inputs", in_blobs), ("outputs", out_blobs))
             for e, blob in zip(recorded_io.get(side, []), blobs) if e.get("blob") != blob]
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    if fp16_off:
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    if net.load_param(str(folder / "model.param")) or net.load_model(str(folder / "model.bin")):
        raise RuntimeError(f"ncnn could not load {folder.name}")
    outs: dict[str, list] = {n: [] for n in names}
    for i in range(len(next(iter(inputs.values())))):
        ex = net.create_extractor()
        for blob, arr in zip(in_blobs, inputs.values()):
            x = np.ascontiguousarray(arr[i], dtype=np.float32)
            ex.input(blob, ncnn.Mat(x.reshape(x.shape[1:])))  # drop the batch of 1
        for blob, n in zip(out_blobs, names):
            status, mat = ex.extract(blob)
            if status != 0:
                raise RuntimeError(f"ncnn extract {blob}: status {status}")
            y = np.array(mat, dtype=np.float32)
            want = ref[n].shape[1:]
            if y.size != int(np.prod(want)):
                raise RuntimeError(f"ncnn blob {blob} has {list(y.shape)}, the reference {list(want)} per sample")
            outs[n].append(y.reshape(want))
    return {n: np.stack(v) for n, v in outs.items()}, notes


def _fits(model: list[int], shape: list[int]) -> bool:
    return len(model) == len(shape) and all(m in (-1, s) for m, s in zip(model, shape))


def _last(shape: list[int]) -> list[int]:
    """The permutation that moves axis 1 (channels) last."""
    return [0, *range(2, len(shape)), 1]


def tfjs_modules() -> Path:
    env = os.environ.get("MBUILD_TFJS_NODE_MODULES")
    return Path(env) if env else HERE.parent / "tools" / "tfjs" / "node_modules"


def run_tfjs(folder: Path, spec: dict, inputs: dict, ref: dict) -> tuple[dict, list[str]]:
    """@tensorflow/tfjs on the wasm backend in Node (rerun_tfjs.cjs), with the I/O read from model.json's signature.

    Inputs map by name, else by position; a channels-last model (onnx2tf's SavedModel of a PyTorch/ONNX
    source) is fed transposed and its outputs (output_0, output_1, ..) transposed back. Where this plan
    differs from the one mbuild wrote into model.json it is noted.
    """
    import subprocess
    import tempfile

    model_json = json.loads((folder / "model.json").read_text())
    sig = model_json.get("signature") or {}
    sig_in, sig_out = sig.get("inputs", {}), sig.get("outputs", {})
    dims = lambda e: [int(d.get("size", -1)) for d in e.get("tensorShape", {}).get("dim", [])]  # noqa: E731
    names = list(spec["outputs"])
    if len(sig_in) != len(inputs) or len(sig_out) != len(names):
        raise RuntimeError(f"model.json signature has {len(sig_in)} inputs / {len(sig_out)} outputs; the manifest "
                           f"declares {len(inputs)} / {len(names)}")
    plan_in, plan_out = [], []
    for k, name in enumerate(inputs):
        key = name if name in sig_in else list(sig_in)[k]
        shape, model = list(spec["inputs"][name]["shape"]), dims(sig_in[key])
        perm = None if _fits(model, shape) else _last(shape)
        if perm and not _fits(model, [shape[p] for p in perm]):
            raise RuntimeError(f"input {name}: model takes {model}, declared {shape}")
        plan_in.append((name, key, perm))
    keys = names if set(names) <= set(sig_out) else sorted(sig_out, key=lambda s: int(s.rsplit("_", 1)[-1]))
    for name, key in zip(names, keys):
        shape, model = list(ref[name].shape[1:]), dims(sig_out[key])  # the reference: [samples, *shape]
        perm = None if _fits(model, shape) or len(shape) < 3 else _last(shape)
        if perm and not _fits(model, [shape[p] for p in perm]):
            perm = None  # the sizes are checked when the result is reshaped
        plan_out.append((name, key, perm))
    recorded = ((model_json.get("userDefinedMetadata") or {}).get("mbuild") or {}).get("io") or {}
    notes = [f"{side} {name}: key {key!r}, perm {perm} here; mbuild wrote key {e.get('key')!r}, perm {e.get('perm')}"
             for side, plan in (("inputs", plan_in), ("outputs", plan_out))
             for (name, key, perm), e in zip(plan, recorded.get(side, []))
             if e.get("key") != key or (e.get("perm") or None) != perm]
    count = len(next(iter(inputs.values())))
    with tempfile.TemporaryDirectory(prefix="rerun-tfjs-") as tmp:
        tmp = Path(tmp)
        job = {"model": str(folder), "samples": count, "outputs": [k for _, k, _ in plan_out], "inputs": []}
        for k, (name, key, perm) in enumerate(plan_in):
            x = np.asarray(inputs[name], dtype="<f4")  # [samples, *declared]
            if perm:
                x = np.transpose(x, [0, *(p + 1 for p in perm)])
            np.ascontiguousarray(x).tofile(tmp / f"in{k}.f32")
            job["inputs"].append({"key": key, "file": str(tmp / f"in{k}.f32"), "shape": list(x.shape[1:])})
        (tmp / "job.json").write_text(json.dumps(job))
        proc = subprocess.run(["node", str(HERE / "rerun_tfjs.cjs"), str(tfjs_modules()), str(tmp / "job.json")],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            raise RuntimeError(f"node exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
        done = json.loads((tmp / "done.json").read_text())
        outs = {}
        for name, key, perm in plan_out:
            y = np.fromfile(done["files"][key], dtype="<f4").reshape(count, *done["shapes"][key])
            if perm:
                y = np.transpose(y, [0, *(int(p) + 1 for p in np.argsort(perm))])
            outs[name] = y.reshape(ref[name].shape).astype(np.float32)
    if done["backend"] != "wasm":
        notes.append(f"ran on the {done['backend']} backend, not wasm")
    return outs, notes


# -- metrics, written here from their definitions -------------------------------------------------

def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean over samples of the cosine between the flattened outputs."""
    r = ref.reshape(len(ref), -1).astype(np.float64)
    o = out.reshape(len(out), -1).astype(np.float64)
    num = (r * o).sum(1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
    return float(np.mean(np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num == 0, 1.0, 0.0))))


def sample_axis(axis: int, sample_rank: int) -> int:
    """A manifest axis (counted in the model's shape, batch included) in a [samples, *shape] array."""
    return (axis % sample_rank) + 1


def top1_agreement(ref: np.ndarray, out: np.ndarray, axis: int) -> float:
    a = sample_axis(axis, ref.ndim - 1)
    return float(np.mean(np.argmax(ref, axis=a) == np.argmax(out, axis=a)))


def ctc_decode(logits: np.ndarray, blank: int) -> list[int]:
    """Best path: argmax per time step, repeats merged, blanks dropped. ``logits``: [time, vocab]."""
    best = logits.argmax(axis=-1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(c) for c in best[keep] if c != blank]


def levenshtein(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (x != y))
    return row[-1]


def sequence(ref: np.ndarray, out: np.ndarray, decl: dict) -> dict:
    vocab = sample_axis(decl.get("axis", -1), ref.ndim - 1)
    r = np.moveaxis(ref, vocab, -1).reshape(len(ref), -1, ref.shape[vocab])
    o = np.moveaxis(out, vocab, -1).reshape(len(out), -1, out.shape[vocab])
    blank = decl.get("blank", 0)
    if decl.get("decode", "ctc") == "ctc":
        rs, os_ = [ctc_decode(x, blank) for x in r], [ctc_decode(x, blank) for x in o]
    else:  # argmax: one token per step, nothing merged
        rs, os_ = [list(map(int, x.argmax(-1))) for x in r], [list(map(int, x.argmax(-1))) for x in o]
    chars = sum(len(x) for x in rs)
    return {"exact_match": float(np.mean([a == b for a, b in zip(rs, os_)])),
            "cer": sum(levenshtein(a, b) for a, b in zip(rs, os_)) / chars if chars else None}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [n, 4] with every box in b [m, 4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda z: np.prod(np.clip(z[:, 2:] - z[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def as_xyxy(b: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "cxcywh":
        return np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    if fmt == "xywh":
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    return b


def detections(boxes: np.ndarray, scores: np.ndarray, thr: float, nms: float) -> list[tuple]:
    """(box, class, score) after the score threshold and per-class NMS, best first."""
    cls, conf = scores.argmax(1), scores.max(1)
    order = [i for i in np.argsort(-conf, kind="stable") if conf[i] >= thr]
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if cls[k] == cls[i]]
        if not same or box_iou(boxes[[i]], boxes[same]).max() <= nms:
            kept.append(i)
    return [(boxes[i], int(cls[i]), float(conf[i])) for i in kept]


def _slice(arr: np.ndarray, part: dict) -> np.ndarray:
    """A declared part as [samples, candidates, values] (values: coordinates or class scores)."""
    axis = sample_axis(part.get("axis", -1), arr.ndim - 1)
    lo, hi = part.get("range", [0, arr.shape[axis]])
    x = np.moveaxis(np.take(arr, np.arange(lo, hi), axis=axis), axis, -1)
    return x.reshape(len(arr), -1, hi - lo)


def _activate(s: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-s))
    if activation == "softmax":
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    return s


def _matches(found: list[tuple], other: list[tuple], need: float) -> list[float]:
    """IoU of each detection in ``found`` (best first) that takes its best unused same-class one in ``other``."""
    free, ious = list(range(len(other))), []
    for box, c, _ in found:
        cand = [j for j in free if other[j][1] == c]
        if not cand:
            continue
        iou = box_iou(box[None], np.stack([other[j][0] for j in cand]))[0]
        if iou.max() >= need:
            free.remove(cand[int(iou.argmax())])
            ious.append(float(iou.max()))
    return ious


def detection(ref: dict, out: dict, name: str, decl: dict) -> dict:
    """Recall, precision and matched-box IoU as docs/recipes.md defines them.

    A detection is looked for on the other side decoded with the threshold lowered by score_margin
    (default 0.05): a score that only jitters across the threshold is neither lost nor invented.
    """
    parts = decl["parts"]
    bp, sp = parts["boxes"], parts["scores"]
    thr, nms = decl.get("score_threshold", 0.25), decl.get("iou_threshold", 0.45)
    need, margin = decl.get("match_iou", 0.5), decl.get("score_margin", 0.05)
    src = lambda arrays, p: arrays[p.get("output", name)]  # noqa: E731
    total_ref = total_out = precise = 0
    matched: list[float] = []
    for s in range(len(ref[name])):
        decoded = []
        for arrays in (ref, out):
            b = as_xyxy(_slice(src(arrays, bp), bp)[s].astype(np.float64), bp.get("format", "xyxy"))
            sc = _activate(_slice(src(arrays, sp), sp)[s].astype(np.float64), sp.get("activation", "none"))
            decoded.append((detections(b, sc, thr, nms), detections(b, sc, thr - margin, nms)))
        (r, r_low), (o, o_low) = decoded
        total_ref, total_out = total_ref + len(r), total_out + len(o)
        matched += _matches(r, o_low, need)  # the reference's objects the variant still finds
        precise += len(_matches(o, r_low, need))  # the variant's objects the reference also has
    return {"recall": len(matched) / total_ref if total_ref else None,
            "precision": precise / total_out if total_out else None,
            "box_iou": float(np.mean(matched)) if matched else None,
            "reference_detections": total_ref, "matched": len(matched)}


def range_error(ref: np.ndarray, out: np.ndarray, declared: list | None) -> float | None:
    """The largest absolute error as a share of the declared value range (else the range the reference spans)."""
    lo, hi = declared if declared else (float(ref.min()), float(ref.max()))
    width = float(hi) - float(lo)
    err = float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max())
    return err / width if width > 0 else None


def metrics_for(spec: dict, ref: dict, out: dict) -> dict[str, dict]:
    result = {}
    for name, decl in spec["outputs"].items():
        decl = decl or {}
        m = {"cosine": cosine(ref[name], out[name])}
        kind = decl.get("kind", "generic")
        if kind == "classification":
            m["top1_agreement"] = top1_agreement(ref[name], out[name], decl.get("axis", -1))
        elif kind == "sequence":
            m.update(sequence(ref[name], out[name], decl))
        elif kind == "detection":
            m.update(detection(ref, out, name, decl))
        elif kind == "regression":
            m["range_error"] = range_error(ref[name], out[name], decl.get("range"))
        result[name] = m
    return result


# -- judging --------------------------------------------------------------------------------------

def compare(mine: dict[str, dict], validation: dict) -> dict:
    """Judge each recomputed metric against the recorded limit and set it beside mbuild's judgement."""
    tolerance = validation.get("tolerance") or {}
    failures = validation.get("failures") or []
    judged, disagreements, not_judged = [], [], []
    for output, limits in tolerance.items():
        if not isinstance(limits, dict) or output not in mine:
            continue
        for key, limit in limits.items():
            if key not in JUDGED:
                not_judged.append(f"{output}: {key}")
                continue
            metric, sense = JUDGED[key]
            value = mine[output].get(metric)
            if value is None:
                continue
            broken = value > limit if sense == "max" else value < limit
            theirs = any(f.get("output") == output and f.get("tolerance") == key and not f.get("part")
                         for f in failures)
            recorded = (validation.get("metrics") or {}).get(output, {}).get(metric)
            judged.append({"output": output, "key": key, "value": value, "recorded": recorded, "limit": limit,
                           "broken_here": broken, "broken_in_mbuild": theirs})
            if broken != theirs:
                disagreements.append(f"{output}: {metric} = {value:.6g} here ({'breaks' if broken else 'meets'} "
                                     f"{key} {limit:g}), mbuild recorded {recorded!r} and "
                                     f"{'a failure' if theirs else 'no failure'}")
    verdict_here = "failed" if any(j["broken_here"] for j in judged) else "passed"
    return {"agree": not disagreements, "judged": judged, "disagreements": disagreements,
            "not_judged": sorted(set(not_judged)), "verdict_here": verdict_here,
            "verdict_mbuild": validation.get("status")}


def rerun_manifest(path: Path) -> dict[str, dict]:
    spec = yaml.safe_load(path.read_text())
    base = path.parent
    build = HERE / "build" / spec["name"]
    cells: dict[str, dict] = {}
    targets = [t for t in spec.get("targets", {}) if (build / "targets" / t / "report.json").exists()]
    if not targets:
        return cells
    inputs = validation_inputs(spec, base)
    ref, ref_from = reference_outputs(spec, base, inputs, build)
    for target in targets:
        tdir = build / "targets" / target
        report = json.loads((tdir / "report.json").read_text())
        validation = report.get("validation") or {}
        variant_file = tdir / "variant" / "variant.json"
        variant = json.loads(variant_file.read_text()) if variant_file.exists() else {}
        if validation.get("status") not in ("passed", "failed") or "artifact" not in variant:
            cells[target] = {"status": "not run", "reason": f"mbuild recorded {validation.get('status')!r}"}
            continue
        artifact = tdir / "variant" / variant["artifact"]
        notes = []
        try:
            if artifact.suffix == ".onnx":
                out = run_onnx(artifact, spec, inputs)
            elif artifact.suffix == ".tflite":
                out, notes = run_tflite(artifact, variant["io"], inputs)
            elif artifact.suffix == ".pte":
                out, notes = run_pte(artifact, spec, inputs)
            elif artifact.suffix == ".ncnn":
                out, notes = run_ncnn(artifact, spec, inputs, ref, variant.get("io") or {})
            elif artifact.suffix == ".tfjs":
                out, notes = run_tfjs(artifact, spec, inputs, ref)
            else:
                cells[target] = {"status": "not run", "reason": f"no runner here for {artifact.suffix}"}
                continue
        except Exception as e:  # noqa: BLE001 - a runtime that cannot load the artifact is a finding
            cells[target] = {"status": "error", "reason": f"{type(e).__name__}: {str(e)[:300]}"}
            continue
        mine = metrics_for(spec, ref, out)
        verdict = compare(mine, validation)
        second = (report.get("also_checked") or {}).get("device_defaults")
        if artifact.suffix == ".ncnn" and second:  # mbuild's informational run with ncnn's defaults: judged the same
            try:
                again, _ = run_ncnn(artifact, spec, inputs, ref, variant.get("io") or {}, fp16_off=False)
                other = compare(metrics_for(spec, ref, again), {**second, "tolerance": validation.get("tolerance")})
                verdict["disagreements"] += [f"device defaults: {d}" for d in other["disagreements"]]
                verdict["agree"] = not verdict["disagreements"]
                verdict["device_defaults"] = {k: other[k] for k in ("verdict_here", "agree", "judged")}
            except Exception as e:  # noqa: BLE001
                verdict["device_defaults"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        cells[target] = {"status": "agree" if verdict["agree"] else "disagree", "artifact": str(artifact.relative_to(HERE)),
                         "reference": ref_from, "metrics": mine, "io_notes": notes, **verdict}
    return cells


def self_check() -> int:
    caught, tried = falsified_records_caught()
    print(f"self-check: {caught} of {tried} deliberately wrong records caught")
    return 0 if tried and caught == tried else 1


def falsified_records_caught() -> tuple[int, int]:
    """Show that the comparison can disagree: flip mbuild's recorded judgement of each judged limit, one at a time."""
    import copy

    results = json.loads(OUT.read_text())
    tried = caught = 0
    for model, cells in results.items():
        spec_name = yaml.safe_load((HERE / "manifests" / f"{model}.yaml").read_text())["name"]
        for target, c in cells.items():
            if c["status"] not in ("agree", "disagree"):
                continue
            recorded = json.loads((HERE / "build" / spec_name / "targets" / target / "report.json").read_text())[
                "validation"]
            base = compare(c["metrics"], recorded)
            if not base["agree"]:
                continue
            for j in base["judged"]:
                validation = copy.deepcopy(recorded)
                if j["broken_in_mbuild"]:  # pretend mbuild passed it
                    validation["failures"] = [f for f in validation["failures"] if not (
                        f.get("output") == j["output"] and f.get("tolerance") == j["key"])]
                else:  # pretend mbuild failed it
                    validation.setdefault("failures", []).append({"output": j["output"], "tolerance": j["key"],
                                                                  "part": None})
                tried += 1
                caught += not compare(c["metrics"], validation)["agree"]
    return caught, tried


def main(argv: list[str] | None = None) -> int:
    """Re-run the models named in ``argv`` (default: all) and merge them into work/rerun.json."""
    only = set(sys.argv[1:] if argv is None else argv)
    results = {}
    for path in sorted((HERE / "manifests").glob("*.yaml")):
        if only and path.stem not in only:
            continue
        results[path.stem] = rerun_manifest(path)
        for target, c in results[path.stem].items():
            line = f"{path.stem}/{target}: {c['status']}"
            if c["status"] in ("agree", "disagree"):
                shown = ", ".join(f"{j['output']} {j['key']} {j['value']:.4g}" for j in c["judged"])
                line += f" (here {c['verdict_here']}, mbuild {c['verdict_mbuild']}; {shown})"
                line += "".join(f"\n    DISAGREES: {d}" for d in c["disagreements"])
            else:
                line += f" ({c['reason']})"
            print(line)
    if only and OUT.exists():
        results = {**json.loads(OUT.read_text()), **results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1, default=float))
    return 1 if any(c["status"] == "disagree" for cells in results.values() for c in cells.values()) else 0


if __name__ == "__main__":
    sys.exit(self_check() if sys.argv[1:] == ["--self-check"] else main())
