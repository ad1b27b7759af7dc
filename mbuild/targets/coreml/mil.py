"""Read the MIL program inside an ``.mlpackage`` as plain records, without loading it for prediction.

The lint and the quantization audit both need the op list, the tensor types and a few small
constant values (dilations, kernel shapes). They read the saved spec (the public Core ML
protobuf format) rather than coremltools' in-memory program, so they check exactly what ships.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mbuild.errors import BuildError
from mbuild.recipes.audit import WeightTensor

CONST_OPS = {"const"}
COMPRESSION_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense",
                   "constexpr_sparse_to_dense", "constexpr_cast", "constexpr_lut_to_sparse",
                   "constexpr_sparse_blockwise_shift_scale")
_BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "fp64": 64, "int64": 64, "int32": 32, "int16": 16, "int8": 8,
         "uint8": 8, "uint16": 16, "uint32": 32, "bool": 8, "int4": 4, "uint4": 4, "uint6": 6, "uint3": 3,
         "uint2": 2, "uint1": 1}
_DTYPE_NAMES = {"FLOAT32": "fp32", "FLOAT16": "fp16", "BFLOAT16": "bf16", "FLOAT64": "fp64"}
_AUDIT_DTYPE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class Tensor:
    name: str
    dtype: str  # fp16, fp32, int8, uint4 ... ('' for non-tensor values)
    shape: tuple  # ints; None for a dimension that is not static

    @property
    def elements(self) -> int:
        return math.prod(d for d in self.shape if d is not None) if self.shape else 1

    @property
    def static(self) -> bool:
        return all(d is not None for d in self.shape)


@dataclass
class Op:
    type: str
    name: str
    inputs: dict[str, list[str]] = field(default_factory=dict)  # argument -> producer value names
    outputs: list[Tensor] = field(default_factory=list)
    attrs: dict[str, Tensor] = field(default_factory=dict)  # typed attributes and inline arguments
    value: list | None = None  # small immediate values of const ops (ints/floats), else None


@dataclass
class Program:
    spec_version: int
    opset: str
    inputs: dict[str, Tensor]
    outputs: list[str]
    ops: list[Op]
    flexible_inputs: dict[str, str]  # input name -> 'enumerated' | 'range'

    def producers(self) -> dict[str, Op]:
        return {t.name: op for op in self.ops for t in op.outputs}


def load_spec(package: Path):
    """The Model protobuf of an .mlpackage (or .mlmodel), read without compiling it."""
    import coremltools as ct

    try:
        return ct.utils.load_spec(str(package))
    except Exception as e:
        raise BuildError(f"coremltools load_spec: cannot read {Path(package).name}: {e}") from e


def read_program(package: Path) -> Program:
    """Flatten the main function of the package's ML Program into :class:`Op` records."""
    return program_from_spec(load_spec(package))


def program_from_spec(spec) -> Program:
    if not spec.HasField("mlProgram"):
        raise BuildError("coremltools: the model is not an ML Program (convert_to='mlprogram' expected)")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    ops: list[Op] = []
    _walk(block, ops)
    inputs = {i.name: _tensor(i.name, i.type) for i in fn.inputs}
    flexible = {}
    for desc in spec.description.input:
        kind = desc.type.WhichOneof("Type")
        group = {"multiArrayType": "ShapeFlexibility", "imageType": "SizeFlexibility"}.get(kind)
        which = getattr(desc.type, kind).WhichOneof(group) if group else None
        if which in ("enumeratedShapes", "imageSizeRange", "shapeRange", "enumeratedSizes"):
            flexible[desc.name] = "enumerated" if which.startswith("enumerated") else "range"
    return Program(spec_version=spec.specificationVersion, opset=fn.opset, inputs=inputs,
                   outputs=list(block.outputs), ops=ops, flexible_inputs=flexible)


def _walk(block, out: list[Op]) -> None:
    for op in block.operations:
        name = op.attributes["name"].immediateValue.tensor.strings.values[0] if "name" in op.attributes else ""
        record = Op(type=op.type, name=name or (op.outputs[0].name if op.outputs else op.type))
        record.inputs = {k: [a.name for a in v.arguments if a.name] for k, v in op.inputs.items()}
        record.outputs = [_tensor(o.name, o.type) for o in op.outputs]
        record.attrs = {k: _tensor(k, v.type) for k, v in op.attributes.items() if k != "name"}
        for k, v in op.inputs.items():  # inline argument values (iOS18 constexpr payloads are stored so)
            inline = [a.value for a in v.arguments if not a.name and a.HasField("value")]
            if inline:
                record.attrs[k] = _tensor(k, inline[0].type)
        if op.type in CONST_OPS and "val" in op.attributes:
            record.value = _immediate(op.attributes["val"])
        out.append(record)
        for inner in op.blocks:
            _walk(inner, out)


def _tensor(name: str, vtype) -> Tensor:
    from coremltools.proto import MIL_pb2

    if vtype.WhichOneof("type") != "tensorType":
        return Tensor(name, "", ())
    tt = vtype.tensorType
    raw = MIL_pb2.DataType.Name(tt.dataType)
    dtype = _DTYPE_NAMES.get(raw, raw.lower())
    dims = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions)
    return Tensor(name, dtype, dims)


def _immediate(value) -> list | None:
    """Small inline constants (ints, floats, bools); large ones live in weight.bin and are not read."""
    if value.WhichOneof("value") != "immediateValue" or not value.immediateValue.HasField("tensor"):
        return None
    t = value.immediateValue.tensor
    for kind in ("ints", "longInts", "floats", "doubles", "bools"):
        if t.HasField(kind):
            return list(getattr(t, kind).values)
    return None


# -- quantization audit -----------------------------------------------------------------------------

def weight_tensors(program: Program) -> list[WeightTensor]:
    """Every constant a compute op consumes, with the storage type it really ships in."""
    producers = program.producers()
    found: dict[str, WeightTensor] = {}
    for op in program.ops:
        if op.type in CONST_OPS or op.type.startswith("constexpr_"):
            continue
        for arg, names in op.inputs.items():
            if not _is_weight_arg(op.type, arg):
                continue
            for name in names:
                src = producers.get(name)
                if src is None or name in found:
                    continue
                if src.type in CONST_OPS or src.type.startswith("constexpr_"):
                    out = src.outputs[0]
                    if not out.dtype or not out.shape:
                        continue
                    dtype, nbytes = storage(src, producers)
                    found[name] = WeightTensor(name=name, op_type=op.type, dtype=dtype, elements=out.elements,
                                               nbytes=nbytes)
    return sorted(found.values(), key=lambda t: t.name)


def _is_weight_arg(op_type: str, arg: str) -> bool:
    """Weights are what a layer multiplies by (biases, norms and shape constants are not audited)."""
    if arg == "weight" or arg.startswith("weight_"):
        return True
    return arg in ("x", "y") and op_type in ("matmul", "einsum", "gather", "gather_along_axis", "gather_nd")


def storage(op: Op, producers: dict[str, Op]) -> tuple[str, int]:
    """(storage dtype, bytes) of a const or of the compressed payload behind a constexpr op."""
    out = op.outputs[0]
    if op.type in CONST_OPS:
        return _AUDIT_DTYPE.get(out.dtype, out.dtype), _nbytes(out.elements, out.dtype)
    payload = _payload(op, producers)
    if op.type in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"):
        return payload.dtype, _nbytes(payload.elements, payload.dtype)
    if op.type == "constexpr_lut_to_dense":
        lut = _arg(op, producers, "lut")
        bits = _lut_bits(op, payload, lut)
        return f"palettized-{bits}bit", _nbytes(out.elements, f"uint{bits}") + _nbytes(lut.elements, lut.dtype)
    if op.type == "constexpr_sparse_to_dense":
        nonzero = _arg(op, producers, "nonzero_data")
        return f"sparse-{_AUDIT_DTYPE.get(nonzero.dtype, nonzero.dtype)}", (
            _nbytes(nonzero.elements, nonzero.dtype) + _nbytes(out.elements, "uint1"))
    return f"{op.type}", _nbytes(out.elements, out.dtype)


def _arg(op: Op, producers: dict[str, Op], key: str) -> Tensor:
    """An argument of a constexpr op: an attribute (iOS16/17) or an input from a const (iOS18+)."""
    if key in op.attrs:
        return op.attrs[key]
    for name in op.inputs.get(key, ()):
        src = producers.get(name)
        if src is not None:
            if src.type.startswith("constexpr_"):  # nested compression: report the innermost payload
                return _payload(src, producers)
            return src.outputs[0]
    return Tensor(key, op.outputs[0].dtype, op.outputs[0].shape)


def _payload(op: Op, producers: dict[str, Op]) -> Tensor:
    for key in ("quantized_data", "data", "indices", "nonzero_data"):
        if key in op.attrs or key in op.inputs:
            return _arg(op, producers, key)
    return op.outputs[0]


def _lut_bits(op: Op, indices: Tensor, lut: Tensor) -> int:
    """Index width: iOS16 packs indices into uint8 bytes (width from the LUT's 2**n entries); iOS18 types them."""
    if indices.dtype == "uint8" and lut.shape and len(lut.shape) == 1:
        entries = lut.shape[0] if lut.shape else 0
        return max(1, round(math.log2(entries))) if entries else 8
    return _BITS.get(indices.dtype, 8)


def _nbytes(elements: int, dtype: str) -> int:
    return math.ceil(elements * _BITS.get(dtype, 32) / 8)


def compression_ops(program: Program) -> dict[str, int]:
    """How many of each constexpr (compression) op the program holds."""
    counts: dict[str, int] = {}
    for op in program.ops:
        if op.type.startswith("constexpr_"):
            counts[op.type] = counts.get(op.type, 0) + 1
    return dict(sorted(counts.items()))
