"""Recipes for .tflite through ai-edge-quantizer, and a description of what was really applied.

fp16 is AEQ's float-casting algorithm, int8 dynamic / weight-only / static W8A8 / int16x8
its min-max uniform quantization. Static recipes keep float inputs/outputs unless the target
asks for integer I/O (``io: int8|uint8``), which AEQ then produces natively. The summary is
written from the quantized flatbuffer (weight and activation types, scale counts), not from
the recipe, because a quantizer that skips ops still exits 0.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mbuild.errors import BuildError, MissingDependencyError
from mbuild.targets.tflite import model as fbm
from mbuild.targets.tflite.convert import quiet


def _aeq():
    try:
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    except ImportError:
        raise MissingDependencyError("ai-edge-quantizer", "tflite", "Quantizing .tflite models") from None
    return quantizer, qtyping, algorithm_manager


def quantize(ctx, float_path: Path, dst: Path, plan: dict, io_type: str) -> dict:
    """Apply the recipe to ``float_path`` and write ``dst``; returns the facts for Variant.quantization."""
    recipe = ctx.recipe
    q = recipe.quantize
    quantizer, qtyping, algos = _aeq()
    qz = quantizer.Quantizer(str(float_path))
    ops = qtyping.TFLOperationName
    if q is None:  # fp16: weights stored as float16, dequantized at load time
        cfg = qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
        qz.update_quantization_recipe(".*", ops.ALL_SUPPORTED, cfg, algorithm_key=algos.AlgorithmName.FLOAT_CASTING)
    else:
        _add_int_config(qz, q, qtyping)
        if q.scheme == "static":
            _set_io(qz, io_type, qtyping, algos)
        if q.keep_outputs_float:
            from mbuild.targets.tflite.model import output_producer_tensors, read_model

            ctx = _with_extra(ctx, output_producer_tensors(read_model(float_path.read_bytes())))
        _exclude(qz, ctx, q, qtyping, algos)
    samples = 0
    calibration = None
    try:
        if qz.need_calibration:
            data = ctx.calibration_inputs()
            samples = len(next(iter(data.values())))
            calibration = _calibrate(qz, float_path.read_bytes(), data, plan)
        with quiet():
            result = qz.quantize(calibration, enable_progress_report=False)
    except BuildError:
        raise
    except Exception as e:  # noqa: BLE001 - AEQ raises ValueError/RuntimeError/KeyError alike
        raise BuildError(f"ai-edge-quantizer: {type(e).__name__}: {str(e)[:800]}") from e
    dst.write_bytes(bytes(result.quantized_model))
    return {"calibration_samples": samples, "excluded": sorted(_excluded_names(ctx, q)) if q else []}


def _add_int_config(qz, q, qtyping) -> None:
    gran = (qtyping.QuantGranularity.CHANNELWISE if q.granularity == "per_channel"
            else qtyping.QuantGranularity.TENSORWISE)
    bits = int(q.weights.removeprefix("int"))
    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    if q.scheme == "dynamic":
        qz.add_dynamic_config(".*", ops, bits, granularity=gran)
    elif q.scheme == "static":
        act_bits = 16 if q.activations == "int16" else 8
        qz.add_static_config(".*", ops, act_bits, bits, weight_granularity=gran)
    else:
        qz.add_weight_only_config(".*", ops, bits, granularity=gran)


def _set_io(qz, io_type: str, qtyping, algos) -> None:
    """Float I/O (a QUANTIZE/DEQUANTIZE pair inside the model), or uint8/int8 I/O for the app to feed."""
    for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        if io_type == "float32":
            qz.update_quantization_recipe(".*", op, algorithm_key=algos.AlgorithmName.NO_QUANTIZE)
        elif io_type == "uint8":
            cfg = qtyping.OpQuantizationConfig(
                activation_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=8, symmetric=False, dtype=qtyping.TensorDataType.UINT),
                compute_precision=qtyping.ComputePrecision.INTEGER)
            qz.update_quantization_recipe(".*", op, cfg)
        # int8: AEQ's static recipe already makes the model's inputs and outputs int8


def _with_extra(ctx, names: list[str]):
    """The context with more names to keep in float (frozen dataclass, so a copy)."""
    import dataclasses

    return dataclasses.replace(ctx, exclude_extra=tuple(ctx.exclude_extra) + tuple(names))


def _excluded_names(ctx, q) -> set[str]:
    names = set(q.exclude) if isinstance(q.exclude, tuple) else set()
    return names | set(getattr(ctx, "exclude_extra", ()))


def _exclude(qz, ctx, q, qtyping, algos) -> None:
    """Keep listed op types (CONV_2D ...) or output-tensor names in float."""
    no_q = algos.AlgorithmName.NO_QUANTIZE
    known = {o.value for o in qtyping.TFLOperationName}
    for name in sorted(_excluded_names(ctx, q)):
        if name.upper() in known:
            qz.update_quantization_recipe(".*", qtyping.TFLOperationName(name.upper()), algorithm_key=no_q)
        else:
            # AEQ matches against the op's scope: its output-tensor names, each followed by ';'
            qz.update_quantization_recipe(f"(^|;){re.escape(name)};", qtyping.TFLOperationName.ALL_SUPPORTED,
                                          algorithm_key=no_q)


def _calibrate(qz, float_model: bytes, data: dict[str, np.ndarray], plan: dict):
    """Global min/max over every sample, fed in the model's own layout and names.

    ``Quantizer.calibrate`` keeps an exponential moving average of each tensor's min/max
    (weight 0.95 on the past), so samples seen late or rarely are clipped; on FER's
    classifier that cost 0.05 cosine against a true min/max. The recipe says ``minmax``,
    so the calibrator is given AEQ's own running min/max update instead.
    """
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    from mbuild.targets.tflite.io import to_model_layout

    count = len(next(iter(data.values())))
    samples = []
    for i in range(count):
        feed = {}
        for e in plan["inputs"]:
            x = np.asarray(data[e["name"]][i], dtype=np.dtype(e["dtype"]))
            feed[e["key"]] = np.ascontiguousarray(to_model_layout(x, e))
        samples.append(feed)
    recipes = recipe_manager.RecipeManager()
    recipes.load_quantization_recipe(qz.get_quantization_recipe())
    with quiet():
        calib = calibrator.Calibrator(float_model, num_threads=2, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate({plan["signature"] or "serving_default": samples}, recipes)
    return calib.get_model_qsvs()


def describe(ctx, path: Path, facts: dict, io_type: str) -> dict:
    """Variant.quantization: what the quantized flatbuffer really holds, in one sentence plus fields."""
    model = fbm.read_model(path.read_bytes())
    tensors = [t for t in fbm.weight_tensors(model) if t.elements >= 64]
    weight_types = sorted({t.dtype for t in tensors})
    acts = fbm.activation_dtypes(model)
    act = _main_activation(acts)
    gran = fbm.weight_granularity(model)
    q = ctx.recipe.quantize
    tool = f"ai-edge-quantizer {_version('ai-edge-quantizer')}"
    out = {"weights": "/".join(weight_types) or "none", "activations": act, "activation_tensors": acts,
           "granularity": gran or "none", "io": io_type, "tool": tool, "excluded": facts.get("excluded", [])}
    if q is None and ctx.recipe.precision == "fp16":
        out.update(scheme="fp16", summary="fp16 weights (dequantized to float32 at load), float32 compute",
                   calibration_samples=0)
    elif q is None:
        out.update(scheme="none", summary="none (fp32)", calibration_samples=0, tool="none")
    elif q.scheme == "static":
        n = facts["calibration_samples"]
        wtype = next((t for t in weight_types if t.startswith(("int", "uint"))), "float")
        w = "".join(c for c in wtype if c.isdigit()) or "32"
        a = "".join(c for c in act if c.isdigit()) or "?"
        io = "" if io_type == "float32" else f", {io_type} inputs/outputs"
        out.update(scheme="static", calibration_samples=n, calibration_method=q.method,
                   summary=f"{wtype} static {(gran or 'none').replace('_', '-')} W{w}A{a}, "
                           f"calibrated on {n} samples{io}")
    elif q.scheme == "dynamic":
        out.update(scheme="dynamic", calibration_samples=0,
                   summary=f"{'/'.join(weight_types)} dynamic-range {(gran or 'none').replace('_', '-')} weights, "
                           f"activations quantized at run time")
    else:
        out.update(scheme="weight_only", calibration_samples=0,
                   summary=f"{'/'.join(weight_types)} weight-only {(gran or 'none').replace('_', '-')}, "
                           f"float32 compute")
    if out["excluded"]:
        out["summary"] += f", {len(out['excluded'])} op(s)/type(s) kept in float"
    return out


def _main_activation(acts: dict[str, int]) -> str:
    """The activation type of the quantized body (int16 > int8/uint8 > float16 > float32)."""
    for dtype in ("int16", "int8", "uint8", "float16", "float32"):
        if acts.get(dtype):
            return dtype
    return "float32"


def _version(dist: str) -> str:
    from mbuild._io import dist_version

    return dist_version(dist)
