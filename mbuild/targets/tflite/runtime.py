"""Runtime ``tflite``: LiteRT .tflite variants for Android's NNAPI, GPU and XNNPACK (CPU) delegates.

Float conversion by source: litert-torch (PyTorch), onnx2tf (ONNX), TFLiteConverter (TensorFlow).
The float model must reproduce the source's reference outputs before anything is quantized;
recipes come from ai-edge-quantizer. The I/O contract (names, NCHW->NHWC changes, integer
I/O scale/zero point) and the model's name and input normalization are embedded
in the .tflite as an ``mbuild`` metadata entry, which ``run`` reads back.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild._io import write_bytes_atomic
from mbuild.errors import BuildError
from mbuild.targets.base import BuildContext, Conversion, LintResult, RunResult, Runtime, Variant, require_api_range
from mbuild.workers import phase

if TYPE_CHECKING:  # pragma: no cover - numpy is imported where it is used: dodo.py stays light
    import numpy as np

log = logging.getLogger(__name__)

FLOAT_COSINE_MIN = 0.999  # the float .tflite must match the reference this well before quantizing
FLOAT_CHECK_SAMPLES = 256
# Default Android API ranges per delegate:
# - NNAPI arrived in Android 8.1 (API 27) and is deprecated from Android 15 (API 35):
#   https://developer.android.com/ndk/guides/neuralnetworks
# - GPU delegate needs OpenGL ES 3.1 (Android 5.0, API 21) or OpenCL:
#   https://ai.google.dev/edge/litert/performance/gpu , https://developer.android.com/develop/ui/views/graphics/opengl/about-opengl
# - XNNPACK (CPU) ships in the LiteRT runtime, whose Android packages support API 21+.
API_DEFAULTS = {"nnapi": (27, 34), "gpu": (21, None), "xnnpack": (21, None)}
ACCELERATOR = {"nnapi": "nnapi", "gpu": "gpu", "xnnpack": "cpu"}


@dataclass(frozen=True)
class TFLiteConfig:
    """Target keys of a ``runtime: tflite`` target (schema: ``tflite_target``)."""

    delegate: str = "xnnpack"
    min_api: int | None = None
    max_api: int | None = None
    io: str = "float32"

    def api_range(self) -> tuple[int, int | None]:
        low, high = API_DEFAULTS[self.delegate]
        return (self.min_api if self.min_api is not None else low, self.max_api if self.max_api is not None else high)


class TFLiteRuntime(Runtime):
    """LiteRT (.tflite): fp32, fp16, int8 dynamic / weight-only / static W8A8, int16x8."""

    name = "tflite"
    format = "tflite"
    suffix = ".tflite"
    platform = "android"
    sources = frozenset({"pytorch", "onnx", "tensorflow"})
    features = frozenset({"fp32", "fp16", "int8-static", "int8-dynamic", "weight-only-int8", "int16x8", "exclude-auto"})
    packages = ("litert-torch", "onnx2tf", "tensorflow", "ai-edge-quantizer", "ai-edge-litert")
    extra = "tflite"

    def parse_options(self, target) -> TFLiteConfig:
        cfg = self.options_as(TFLiteConfig, target)
        if cfg.delegate not in API_DEFAULTS:
            raise ValueError(f"delegate must be one of {', '.join(API_DEFAULTS)}, not {cfg.delegate!r}")
        require_api_range(*cfg.api_range())
        return cfg

    def check_target(self, manifest, target, recipe) -> str | None:
        """Combinations ai-edge-quantizer or LiteRT cannot produce, refused before any SDK loads."""
        try:
            cfg = self.parse_options(target)
        except (TypeError, ValueError):
            return None  # parse_options reports it
        q = recipe.quantize
        if q and recipe.precision == "fp16":
            return f"recipe {recipe.name!r} combines fp16 with integer quantization; pick one for tflite"
        if q and q.weights != "int8":
            return f"tflite recipes quantize weights to int8 only; recipe {recipe.name!r} asks for {q.weights}"
        if q and q.method != "minmax":
            return f"ai-edge-quantizer calibrates with min/max only; recipe {recipe.name!r} asks for {q.method!r}"
        if q and q.scheme == "static" and q.activations not in ("int8", "int16"):
            return (f"tflite static quantization uses int8 or int16 activations, not {q.activations}; "
                    f"for uint8 inputs/outputs set 'io: uint8' on the target")
        if cfg.io != "float32" and not (q and q.scheme == "static" and q.activations == "int8"):
            return (f"'io: {cfg.io}' needs a static int8 (W8A8) recipe; recipe {recipe.name!r} is "
                    f"{recipe.family}; use 'io: float32' or an int8 static recipe")
        return None

    def requirements(self, manifest, target) -> dict:
        cfg = self.parse_options(target)
        low, high = cfg.api_range()
        return {"platform": "android", "min_api": low, "max_api": high, "accelerator": ACCELERATOR[cfg.delegate]}

    # -- convert -----------------------------------------------------------------------------------
    def conversion(self, manifest, target, recipe) -> Conversion:
        """One float flatbuffer per model, checked against the reference; every recipe quantizes a copy of it."""
        return Conversion(path="tflite-float", config={"source": manifest.source.kind})

    def convert_base(self, ctx: BuildContext, out_dir: Path) -> dict:
        """The float .tflite (litert-torch, onnx2tf or TFLiteConverter), with a signature, matching the reference."""
        from mbuild.targets.tflite import convert as conv
        from mbuild.targets.tflite import model as fbm
        from mbuild.targets.tflite.io import interpreter, plan_io

        kind = ctx.manifest.source.kind
        float_path = out_dir / "float.tflite"
        phase(f"converting the float model ({kind} source)")
        converted = {"pytorch": conv.convert_pytorch, "onnx": conv.convert_onnx,
                     "tensorflow": conv.convert_tensorflow}[kind](ctx, float_path)
        if fbm.ensure_signature(float_path):
            converted.setdefault("graph_preparation", []).append(
                "the converter wrote no signature; added 'serving_default' over the model's inputs and outputs")
        reference = ctx.reference_outputs()
        shapes = {n: tuple(r.shape[1:]) for n, r in reference.items()}
        float_plan = plan_io(interpreter(float_path), ctx.manifest, shapes)
        phase("checking the float model against the reference")
        float_check = self._check_float(ctx, float_path, float_plan, converted["converter"], reference)
        return {"artifact": "float.tflite", "converted": converted, "float_check": float_check}

    def convert(self, ctx: BuildContext) -> Variant:
        """Quantize (or not) a copy of the shared float model and embed the I/O contract."""
        from mbuild._io import read_json
        from mbuild.recipes.audit import make_audit
        from mbuild.targets.tflite import model as fbm
        from mbuild.targets.tflite import quant as quant
        from mbuild.targets.tflite.io import interpreter, layout_changes, plan_io

        cfg = ctx.options if isinstance(ctx.options, TFLiteConfig) else self.parse_options(ctx.target)
        base = ctx.base_conversion(self)
        base_facts = read_json(base / "convert.json")
        converted, float_check = base_facts["converted"], base_facts["float_check"]
        float_path = base / base_facts["artifact"]
        reference = ctx.reference_outputs()
        shapes = {n: tuple(r.shape[1:]) for n, r in reference.items()}
        float_plan = plan_io(interpreter(float_path), ctx.manifest, shapes)

        recipe = ctx.recipe
        model_path, facts = float_path, {"calibration_samples": 0}
        if recipe.quantize or recipe.precision == "fp16":
            model_path = ctx.work_dir / "quantized.tflite"
            phase(f"quantizing with ai-edge-quantizer (recipe {recipe.name})")
            facts = quant.quantize(ctx, float_path, model_path, float_plan, cfg.io)
        plan = plan_io(interpreter(model_path), ctx.manifest, shapes)
        quantization = quant.describe(ctx, model_path, facts, cfg.io)

        payload = self._metadata(ctx, plan, quantization)
        data = fbm.embed_metadata(model_path.read_bytes(), payload, ctx.manifest.name)
        out = ctx.out_dir / "model.tflite"
        write_bytes_atomic(out, data)
        interpreter(out)  # the metadata entry must not break loading

        q = recipe.quantize
        requested = q.weights if q else (recipe.precision if recipe.precision != "fp32" else None)
        weights = fbm.weight_tensors(fbm.read_model(data))
        excluded = set(quantization.get("excluded") or ())
        kept_float = {t.node for t in weights if excluded & set(t.node.split("\n"))}
        audit = make_audit(requested, weights, allow_partial=bool(q and q.allow_partial), excluded_nodes=kept_float)
        io = {"signature": plan["signature"], "inputs": plan["inputs"], "outputs": plan["outputs"],
              "layout_changes": layout_changes(plan), "state_tensors": []}
        notes = list(converted.get("graph_preparation", []))
        for change in io["layout_changes"]:
            how = ("the bytes are the same; run() and apps reshape" if change.get("reshape")
                   else f"run() and apps transpose with perm {change['perm']}")
            notes.append(f"{converted['converter']} changed {change['side']} {change['tensor']!r} from "
                         f"{change['from']} to {change['to']}; {how}")
        if converted.get("sample_images_file"):
            notes.append(f"wrote onnx2tf's {converted['sample_images_file']} from our data (no download)")
        if model_path != float_path:  # kept (not shipped) so the check can time the fp32 sibling
            shutil.copyfile(float_path, ctx.out_dir / "sibling_fp32.tflite")
        details = {"converter": converted, "float_check": float_check, "delegate": cfg.delegate,
                   "float_bytes": float_path.stat().st_size, "bytes": out.stat().st_size,
                   "versions": self.versions()}
        if model_path != float_path:
            details["float_artifact"] = "sibling_fp32.tflite"
        return Variant(artifact="model.tflite", format="tflite", quantization=quantization, audit=audit, io=io,
                       notes=notes, details=details)

    def _check_float(self, ctx, path: Path, plan: dict, converter: str, reference: dict) -> dict:
        """The float .tflite must reproduce the reference: converters exit 0 with wrong numbers."""
        from mbuild.targets.tflite.io import Runner
        from mbuild.validate.metrics import tensor_metrics

        inputs = {k: v[:FLOAT_CHECK_SAMPLES] for k, v in ctx.validation_inputs().items()}
        outputs, _ = Runner(path, plan).run(inputs, warmup=False)
        result = {}
        for name, ref in reference.items():
            m = tensor_metrics(ref[:FLOAT_CHECK_SAMPLES], outputs[name])
            result[name] = {"cosine": round(m["cosine"], 8), "max_abs": float(f"{m['max_abs']:.3g}"),
                            "samples": len(outputs[name])}
            if not m["cosine"] >= FLOAT_COSINE_MIN:
                raise BuildError(
                    f"{converter}: the float .tflite does not reproduce the reference: output {name!r} cosine "
                    f"{m['cosine']:.6f} < {FLOAT_COSINE_MIN} (max_abs {m['max_abs']:.3g}) on "
                    f"{len(outputs[name])} validation samples; the model is kept at {path}")
        return result

    @staticmethod
    def _metadata(ctx, plan: dict, quantization: dict) -> dict:
        """What an app needs to feed the model: name, normalization, the I/O plan (deterministic).

        No version: release metadata lives in bundle.json, so a version bump rebuilds no variant.
        """
        inputs = {}
        for name, spec in ctx.manifest.inputs.items():
            inputs[name] = {"shape": list(spec.shape), "dtype": spec.dtype,
                            "range": list(spec.range) if spec.range else None, "image": spec.image}
        return {"format": 1, "name": ctx.manifest.name, "inputs": inputs,
                "outputs": {n: {"kind": s.kind} for n, s in ctx.manifest.outputs.items()},
                "recipe": ctx.recipe.name, "quantization": quantization["summary"], "io": plan}

    # -- run ---------------------------------------------------------------------------------------
    def run(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray]) -> RunResult:
        from mbuild.targets.tflite.io import Runner, interpreter, plan_io
        from mbuild.targets.tflite.model import read_metadata

        meta = read_metadata(artifact)
        if meta and "io" in meta:
            plan = meta["io"]
        else:  # a .tflite we did not write: derive the plan from the reference shapes
            shapes = {n: tuple(r.shape[1:]) for n, r in ctx.reference_outputs().items()}
            plan = plan_io(interpreter(artifact), ctx.manifest, shapes)
        outputs, latencies = Runner(artifact, plan, threads=1).run(inputs)
        return RunResult(outputs=outputs, latency_ms=latencies,
                         runtime=f"ai-edge-litert {_version('ai-edge-litert')} (interpreter, XNNPACK CPU, 1 thread)")

    def attribute_error(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray]) -> dict:
        """Rank tensors by the damage their quantization does (see tflite.debug)."""
        from mbuild.targets.tflite.debug import attribute
        from mbuild.targets.tflite.io import interpreter, plan_io
        from mbuild.targets.tflite.model import read_metadata

        float_path = Path(artifact).parent / "sibling_fp32.tflite"
        shapes = {n: tuple(r.shape[1:]) for n, r in ctx.reference_outputs().items()}
        float_plan = plan_io(interpreter(float_path), ctx.manifest, shapes)
        meta = read_metadata(Path(artifact))
        plan = meta["io"] if meta and "io" in meta else plan_io(interpreter(artifact), ctx.manifest, shapes)
        return attribute(float_path, float_plan, Path(artifact), plan, inputs)

    # -- lint --------------------------------------------------------------------------------------
    def lint(self, ctx: BuildContext, artifact: Path) -> list[LintResult]:
        from mbuild.targets.tflite.lint import gpu_lint, nnapi_lint

        cfg = ctx.options if isinstance(ctx.options, TFLiteConfig) else self.parse_options(ctx.target)
        if cfg.delegate == "gpu":
            return [gpu_lint(Path(artifact))]
        if cfg.delegate == "nnapi":
            return [nnapi_lint(Path(artifact), cfg.api_range()[0])]
        return []


def _version(dist: str) -> str:
    from mbuild._io import dist_version

    return dist_version(dist)
