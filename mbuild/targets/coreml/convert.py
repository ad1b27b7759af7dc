"""PyTorch module -> Core ML ML Program: torch.export first, a traced module when export fails.

Manifest settings map onto coremltools' own arguments (compute units, deployment target,
tensor or image inputs, enumerated shapes, compute precision); nothing is hand-rolled.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import TYPE_CHECKING

from mbuild.errors import BuildError

if TYPE_CHECKING:  # pragma: no cover
    from mbuild.manifest.model import InputSpec, Manifest

log = logging.getLogger(__name__)

COMPUTE_UNITS = {"cpu_and_ne": "CPU_AND_NE", "cpu_and_gpu": "CPU_AND_GPU", "all": "ALL", "cpu_only": "CPU_ONLY"}
# OS major version -> coremltools target name (ML Programs start at iOS 15 / macOS 12).
IOS_TARGETS = {15: "iOS15", 16: "iOS16", 17: "iOS17", 18: "iOS18", 26: "iOS26"}
MACOS_TARGETS = {12: "macOS12", 13: "macOS13", 14: "macOS14", 15: "macOS15", 26: "macOS26"}
SPEC_VERSIONS = {"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9, "iOS26": 10,
                 "macOS12": 6, "macOS13": 7, "macOS14": 8, "macOS15": 9, "macOS26": 10}
# declared input dtype -> the dtype Core ML is given (it has no int64/int8/uint8 tensor inputs)
_INPUT_DTYPES = {"float32": "float32", "float16": "float16", "int32": "int32", "int64": "int32",
                 "int8": "int32", "uint8": "int32", "bool": "bool_"}
_COLOR = {"RGB": "RGB", "BGR": "BGR", "GRAYSCALE": "GRAYSCALE"}


def deployment_target(min_os: str, platform: str) -> str:
    """The newest coremltools target not above ``min_os`` (e.g. '17.4' -> iOS17, '20' -> iOS18)."""
    major = int(str(min_os).split(".")[0])
    table = MACOS_TARGETS if platform == "macos" else IOS_TARGETS
    usable = [v for v in table if v <= major]
    if not usable:
        low = min(table)
        raise ValueError(f"min_os {min_os} is below {platform} {low}, the first release that runs ML Programs")
    return table[max(usable)]


def compute_unit(name: str):
    import coremltools as ct

    return getattr(ct.ComputeUnit, COMPUTE_UNITS[name])


@contextlib.contextmanager
def quiet():
    """coremltools prints progress bars and version warnings; keep build logs readable."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield
    if sink.getvalue().strip():
        log.debug("coremltools output:\n%s", sink.getvalue()[-4000:])


def to_mlmodel(model, manifest: Manifest, *, target: str, precision: str, units: str, example=None):
    """Convert ``model`` (eval-mode nn.Module); returns (MLModel, notes, frontend used)."""
    import torch

    from mbuild.sources.pytorch import rewrite_prelu  # shared with ExecuTorch's Core ML path

    model = model.eval()
    example = tuple(t.contiguous() for t in (example or example_inputs(manifest)))
    notes: list[str] = []
    errors: list[str] = []
    for rewrite in (False, True):
        if rewrite:
            if not rewrite_prelu(model):
                break
            notes.append("rewrote nn.PReLU as relu(x) - w * relu(-x) after the first conversion attempt failed")
        try:
            with quiet():
                program = _export(model, manifest, example)
            try:
                return _convert(program, manifest, target, precision, units), notes, "torch.export"
            except Exception as e:  # noqa: BLE001 - fall back to tracing, keep the cause
                errors.append(f"coremltools on the exported program: {type(e).__name__}: {_first_line(e)}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"torch.export: {type(e).__name__}: {_first_line(e)}")
        notes.append(f"{errors[-1]}; fell back to torch.jit.trace")
        try:
            with quiet(), torch.no_grad():
                traced = torch.jit.trace(model, example, check_trace=False)
            return _convert(traced, manifest, target, precision, units), notes, "torch.jit.trace"
        except Exception as e:  # noqa: BLE001
            errors.append(f"traced module: {type(e).__name__}: {_first_line(e)}")
    raise BuildError("coremltools convert: " + "; ".join(errors))


def example_inputs(manifest: Manifest):
    """Contiguous example tensors (mid-range values); for enumerated shapes the largest size per axis."""
    import numpy as np
    import torch

    out = []
    for spec in manifest.inputs.values():
        lo, hi = spec.range or (0, 1)
        arr = np.full(_max_shape(spec), (lo + hi) / 2 if spec.dtype.startswith("float") else lo, dtype=spec.dtype)
        out.append(torch.from_numpy(np.ascontiguousarray(arr)).contiguous())
    return tuple(out)


def _max_shape(spec: InputSpec) -> tuple[int, ...]:
    shapes = [spec.shape, *spec.shapes]
    return tuple(max(s[i] for s in shapes) for i in range(len(spec.shape)))


def _export(model, manifest: Manifest, example):
    import torch

    dynamic = {}
    for (name, spec), _tensor in zip(manifest.inputs.items(), example):
        axes = {}
        for axis in range(len(spec.shape)):
            sizes = {s[axis] for s in (spec.shape, *spec.shapes)}
            if len(sizes) > 1:
                axes[axis] = torch.export.Dim(f"{_safe(name)}_d{axis}", min=min(sizes), max=max(sizes))
        dynamic[name] = axes or None
    dynamic_shapes = dynamic if any(dynamic.values()) else None
    kwargs = {"dynamic_shapes": _by_forward_args(model, dynamic_shapes)} if dynamic_shapes else {}
    program = torch.export.export(model, example, **kwargs)
    return program.run_decompositions({})


def _by_forward_args(model, dynamic: dict):
    """torch.export keys dynamic shapes by forward()'s parameter names; match them by position."""
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters if p != "self"]
    values = list(dynamic.values())
    return {p: v for p, v in zip(params, values)} if len(params) == len(values) else tuple(values)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _convert(source, manifest: Manifest, target: str, precision: str, units: str):
    import coremltools as ct
    import numpy as np

    inputs = [input_type(spec, target) for spec in manifest.inputs.values()]
    outputs = [ct.TensorType(name=name, dtype=np.float32) for name in manifest.outputs]
    with quiet():
        return ct.convert(
            source, inputs=inputs, outputs=outputs, convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, target),
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            compute_units=compute_unit(units))


def input_type(spec: InputSpec, target: str):
    """TensorType named as in the manifest, or ImageType when the manifest declares image preprocessing."""
    import coremltools as ct

    shape = ct.EnumeratedShapes(shapes=[list(s) for s in (spec.shape, *spec.shapes)], default=list(spec.shape)) \
        if spec.shapes else tuple(spec.shape)
    if spec.image is not None:
        color = spec.image.get("color", "RGB")
        bias = spec.image.get("bias", 0.0)
        if isinstance(bias, (int, float)) and color != "GRAYSCALE":
            bias = [float(bias)] * 3
        return ct.ImageType(name=spec.name, shape=shape, scale=float(spec.image.get("scale", 1.0)), bias=bias,
                            color_layout=getattr(ct.colorlayout, _COLOR[color]))
    import numpy as np

    dtype = getattr(np, _INPUT_DTYPES.get(spec.dtype, "float32"))
    if dtype == np.float16 and SPEC_VERSIONS[target] < 7:
        dtype = np.float32  # fp16 I/O needs iOS 16
    return ct.TensorType(name=spec.name, shape=shape, dtype=dtype)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""
