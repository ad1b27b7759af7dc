"""Facts read from a .tflite flatbuffer: operators, weight tensors, and mbuild's metadata entry.

The quantization audit, the delegate estimates and ``run`` all need to know what is really
in the file, whatever the converter or quantizer said; this module reads it with LiteRT's
own flatbuffer schema (``ai_edge_litert.tools.flatbuffer_utils``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mbuild.recipes.audit import WeightTensor

METADATA_NAME = "mbuild"  # the Model.metadata entry holding our JSON blob
# Weight operand positions per op; constants elsewhere (biases, shapes) are not weights.
WEIGHT_INPUTS = {"CONV_2D": (1,), "DEPTHWISE_CONV_2D": (1,), "FULLY_CONNECTED": (1,), "TRANSPOSE_CONV": (1,),
                 "CONV_3D": (1,), "BATCH_MATMUL": (0, 1), "EMBEDDING_LOOKUP": (1,), "GATHER": (0,),
                 "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9)), "LSTM": tuple(range(1, 9))}
# Ops a weight may pass through before reaching the op that uses it.
PASSTHROUGH = {"DEQUANTIZE", "TRANSPOSE", "RESHAPE", "CAST"}


@dataclass
class OpInfo:
    """One operator of the main subgraph with the types of its tensors."""

    index: int
    op: str
    version: int
    inputs: list[dict] = field(default_factory=list)  # {'dtype', 'shape', 'const'}
    outputs: list[dict] = field(default_factory=list)
    subgraph: int = 0


def _fb():
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils


def ensure_signature(path: Path) -> bool:
    """Give a signature-less .tflite a 'serving_default' signature over its subgraph's inputs and outputs.

    onnx2tf sometimes writes no SignatureDef; ai-edge-quantizer calibrates through signatures and the
    interpreter's signature runner is how apps address tensors by name. Returns True when one was added.
    """
    fb = _fb()
    model = read_model(path.read_bytes())
    if model.signatureDefs:
        return False
    schema = fb.schema_fb
    sg = model.subgraphs[0]

    def tensor_map(index: int):
        entry = schema.TensorMapT()
        name = sg.tensors[index].name
        entry.name = name.decode() if isinstance(name, bytes) else name
        entry.tensorIndex = index
        return entry

    sig = schema.SignatureDefT()
    sig.signatureKey = "serving_default"
    sig.subgraphIndex = 0
    sig.inputs = [tensor_map(i) for i in sg.inputs]
    sig.outputs = [tensor_map(i) for i in sg.outputs]
    model.signatureDefs = [sig]
    path.write_bytes(bytes(fb.convert_object_to_bytearray(model)))
    return True


def read_model(data: bytes):
    """The flatbuffer as LiteRT's object API (``ModelT``)."""
    return _fb().read_model_from_bytearray(bytearray(data))


def _op_names(model) -> list[str]:
    fb = _fb()
    names = []
    for code_index, code in enumerate(model.operatorCodes):
        name = fb.opcode_to_name(model, code_index) or f"OP_{code_index}"
        if name == "CUSTOM" and code.customCode:
            name = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
        names.append(name)
    return names


def _tensor_dtype(tensor) -> str:
    return _fb().type_to_name(tensor.type).lower()


def _is_const(model, tensor) -> bool:
    buf = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def list_ops(model, subgraph: int = 0) -> list[OpInfo]:
    """Operators of one subgraph (0 is the main one delegates partition)."""
    names = _op_names(model)
    sg = model.subgraphs[subgraph]
    ops = []
    for i, op in enumerate(sg.operators or []):
        info = OpInfo(index=i, op=names[op.opcodeIndex], version=model.operatorCodes[op.opcodeIndex].version,
                      subgraph=subgraph)
        for t in op.inputs or []:
            info.inputs.append(_describe(model, sg, t))
        for t in op.outputs or []:
            info.outputs.append(_describe(model, sg, t))
        ops.append(info)
    return ops


def _describe(model, sg, index: int) -> dict:
    if index < 0:
        return {"dtype": "none", "shape": [], "const": True, "name": ""}
    t = sg.tensors[index]
    name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
    return {"dtype": _tensor_dtype(t), "shape": [int(d) for d in (t.shape if t.shape is not None else [])],
            "const": _is_const(model, t), "name": name, "index": index}


OUTPUT_PASSTHROUGH = {"RESHAPE", "CONCATENATION", "LOGISTIC", "SOFTMAX", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS",
                      "RELU", "RELU6", "DEQUANTIZE", "QUANTIZE", "PACK", "MUL", "ADD"}


def output_producer_tensors(model, subgraph: int = 0) -> list[str]:
    """Output-tensor names of the ops that produce the model outputs, looking back through reshapes,
    concatenations and activations (what ``keep_outputs_float`` keeps in float)."""
    names = _op_names(model)
    sg = model.subgraphs[subgraph]
    producer = {t: op for op in (sg.operators or []) for t in (op.outputs or [])}
    found, frontier, seen = [], list(sg.outputs or []), set()
    while frontier:
        index = frontier.pop()
        op = producer.get(index)
        if op is None or id(op) in seen:
            continue
        seen.add(id(op))
        found += [_describe(model, sg, t)["name"] for t in (op.outputs or []) if t >= 0]
        if names[op.opcodeIndex] in OUTPUT_PASSTHROUGH:
            frontier += [t for t in (op.inputs or []) if t >= 0 and not _is_const(model, sg.tensors[t])]
    return sorted(set(found))


def weight_tensors(model) -> list[WeightTensor]:
    """Constant weight tensors with their storage type and the op that really consumes them."""
    names = _op_names(model)
    out = []
    for sg in model.subgraphs:
        consumers: dict[int, list[tuple[str, int, object]]] = {}
        for op in sg.operators or []:
            for pos, t in enumerate(op.inputs or []):
                consumers.setdefault(t, []).append((names[op.opcodeIndex], pos, op))
        for index, tensor in enumerate(sg.tensors):
            if not _is_const(model, tensor):
                continue
            found = _weight_consumer(consumers, index)
            if found is None:
                continue
            op, consumer = found
            scope = "\n".join(_describe(model, sg, t)["name"] for t in (consumer.outputs or []) if t >= 0)
            elements = int(np.prod(tensor.shape)) if tensor.shape is not None and len(tensor.shape) else 1
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            out.append(WeightTensor(name=name, op_type=op, dtype=_tensor_dtype(tensor), elements=elements,
                                    nbytes=len(model.buffers[tensor.buffer].data), node=scope))
    return out


def _weight_consumer(consumers, index: int, depth: int = 0) -> tuple[str, object] | None:
    """The weight op (type, operator) reading tensor ``index`` as a weight, looking through DEQUANTIZE and friends."""
    for name, pos, op in consumers.get(index, []):
        if name in PASSTHROUGH and depth < 3:
            found = _weight_consumer(consumers, op.outputs[0], depth + 1)
            if found:
                return found
        elif pos in WEIGHT_INPUTS.get(name, ()):
            return name, op
    return None


def activation_dtypes(model) -> dict[str, int]:
    """How many non-constant tensors of the main subgraph have each dtype (what really runs)."""
    counts: dict[str, int] = {}
    sg = model.subgraphs[0]
    for tensor in sg.tensors:
        if not _is_const(model, tensor):
            d = _tensor_dtype(tensor)
            counts[d] = counts.get(d, 0) + 1
    return dict(sorted(counts.items()))


def weight_granularity(model) -> str | None:
    """'per_channel' when quantized weights carry one scale per output channel, else 'per_tensor'."""
    sg_scales = []
    for sg in model.subgraphs:
        for tensor in sg.tensors:
            q = tensor.quantization
            if _is_const(model, tensor) and q is not None and q.scale is not None and len(q.scale) > 0:
                if _tensor_dtype(tensor) in ("int8", "int4", "uint8"):
                    sg_scales.append(len(q.scale))
    if not sg_scales:
        return None
    return "per_channel" if max(sg_scales) > 1 else "per_tensor"


def embed_metadata(data: bytes, payload: dict, description: str) -> bytes:
    """Add (or replace) the ``mbuild`` metadata entry: a JSON blob apps and ``run`` can read back."""
    fb = _fb()
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(data)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(blob, dtype=np.uint8)
    model.buffers.append(buffer)
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME]
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    model.description = description
    return bytes(fb.convert_object_to_bytearray(model))


def read_metadata(path: Path) -> dict | None:
    """The ``mbuild`` metadata entry of a .tflite file, or None if it has none."""
    model = read_model(Path(path).read_bytes())
    for entry in model.metadata or []:
        if _name(entry.name) == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode())
    return None


def _name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
