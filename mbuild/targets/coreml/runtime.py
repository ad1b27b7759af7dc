"""Runtime ``coreml``: iOS/macOS Core ML ML Programs (``.mlpackage``) for the Neural Engine and the GPU.

PyTorch sources convert through ``torch.export`` (a traced module when export fails) with
coremltools; weight compression comes from ``coremltools.optimize.coreml``. Core ML only
predicts on macOS: elsewhere ``run`` reports ``skipped`` and ``proxy`` gives a labelled estimate.
"""
from __future__ import annotations

import logging
import platform as _platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild.errors import BuildError, MissingDependencyError
from mbuild.targets.base import BuildContext, Conversion, LintResult, RunResult, Runtime, Variant
from mbuild.targets.coreml.compress import WORKING_RECIPES, os_needed
from mbuild.targets.coreml.convert import COMPUTE_UNITS, SPEC_VERSIONS, deployment_target
from mbuild.workers import phase

if TYPE_CHECKING:  # pragma: no cover - numpy is imported where it is used: dodo.py stays light
    import numpy as np

log = logging.getLogger(__name__)

ARTIFACT = "model.mlpackage"
ANE_UNITS = ("cpu_and_ne", "all")
ACCELERATOR = {"cpu_and_ne": "ane", "cpu_and_gpu": "gpu", "cpu_only": "cpu", "all": "any"}
SKIPPED_LINUX = "Core ML prediction needs macOS; this build ran on {system}"


@dataclass(frozen=True)
class CoreMLConfig:
    """Target keys of a coreml target; checked when the manifest is validated."""

    compute_units: str = "all"
    min_os: str = "16.0"
    platform: str = "ios"

    def __post_init__(self):
        if self.compute_units not in COMPUTE_UNITS:
            raise ValueError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, not {self.compute_units!r}")
        if self.platform not in ("ios", "macos"):
            raise ValueError(f"platform must be 'ios' or 'macos', not {self.platform!r}")
        deployment_target(self.min_os, self.platform)  # raises ValueError for an OS without ML Programs

    @property
    def target(self) -> str:
        return deployment_target(self.min_os, self.platform)

    @property
    def ios_major(self) -> int:
        """The iOS release with the same Core ML features (macOS 13 ~ iOS 16)."""
        return {6: 15, 7: 16, 8: 17, 9: 18, 10: 26}[SPEC_VERSIONS[self.target]]


class CoreMLRuntime(Runtime):
    """Core ML ML Program packages: fp16/fp32, int8/int4 weights, palettization, pruning."""

    name = "coreml"
    format = "mlpackage"
    suffix = ".mlpackage"
    platform = "ios"
    sources = frozenset({"pytorch"})
    features = frozenset({"fp32", "fp16", "weight-only-int8", "weight-only-uint8", "weight-only-int4", "per-block",
                          "palettize", "prune", "int8-static"})
    packages = ("coremltools",)
    extra = "coreml"

    def parse_options(self, target) -> CoreMLConfig:
        return self.options_as(CoreMLConfig, target)

    # -- validate-time checks (no SDK import) --------------------------------------------------------
    def check_target(self, manifest, target, recipe) -> str | None:
        cfg = self.parse_options(target)
        q = recipe.quantize
        if q and q.scheme == "dynamic":
            return (f"recipe {recipe.name!r}: Core ML has no dynamic int8 (activations quantized at run time); "
                    f"recipes that work for coreml: {'; '.join(WORKING_RECIPES)}")
        if q and q.scheme == "static" and _platform.system() != "Darwin":
            return (f"recipe {recipe.name!r} quantizes activations, which coremltools calibrates by running Core ML "
                    f"predictions - only possible on macOS, and this is {_platform.system()}; build it on a Mac or "
                    f"use weight compression instead ({'; '.join(WORKING_RECIPES[1:])})")
        if q and q.scheme == "static" and (q.weights != "int8" or q.activations != "int8"):
            return f"recipe {recipe.name!r}: Core ML activation quantization is W8A8 (int8 weights and activations)"
        if q and recipe.palettize:
            return f"recipe {recipe.name!r}: choose either 'quantize' or 'palettize' for a coreml target, not both"
        if q and (q.exclude or q.keep_outputs_float):
            return (f"recipe {recipe.name!r}: 'exclude' and 'keep_outputs_float' are not implemented for coreml "
                    "targets yet; remove them or use another recipe for this target")
        if cfg.compute_units == "cpu_and_ne" and cfg.ios_major < 16:
            return ("compute_units 'cpu_and_ne' needs iOS 16 / macOS 13 (MLComputeUnits.cpuAndNeuralEngine); "
                    "raise min_os to \"16.0\" or use compute_units 'all'")
        need = os_needed(recipe)
        if need and cfg.ios_major < need[0]:
            hint = f"\"{need[0]}.0\"" if cfg.platform == "ios" else f"the macOS release matching iOS {need[0]}"
            return (f"recipe {recipe.name!r} needs {need[1]}, available from iOS {need[0]}; target has min_os "
                    f"{cfg.min_os} - raise min_os to {hint} or pick another recipe")
        return None

    def requirements(self, manifest, target) -> dict:
        cfg = self.parse_options(target)
        return {"platform": cfg.platform, "min_os": _os_string(cfg.min_os),
                "accelerator": ACCELERATOR[cfg.compute_units], "compute_units": cfg.compute_units,
                "deployment_target": cfg.target}

    # -- convert -------------------------------------------------------------------------------------
    def conversion(self, manifest, target, recipe) -> Conversion:
        """One ML Program per deployment target and compute precision; compression and units derive from it."""
        cfg = self.parse_options(target)
        return Conversion(path=f"coreml-{cfg.target}-{recipe.precision}",
                          config={"deployment_target": cfg.target, "precision": recipe.precision})

    def convert_base(self, ctx: BuildContext, out_dir: Path) -> dict:
        """Source -> ML Program at the recipe's compute precision, saved reproducibly without target metadata."""
        _require_coremltools()
        from mbuild.targets.coreml.convert import to_mlmodel
        from mbuild.targets.coreml.package import save_package

        cfg: CoreMLConfig = ctx.options or self.parse_options(ctx.target)
        start = time.perf_counter()
        model = ctx.load_source_model()
        phase(f"converting to an ML Program with coremltools ({cfg.target}, {ctx.recipe.precision})")
        mlmodel, notes, frontend = to_mlmodel(model, ctx.manifest, target=cfg.target, precision=ctx.recipe.precision,
                                              units=cfg.compute_units, example=self._example(ctx))
        convert_s = time.perf_counter() - start
        if frontend != "torch.export":
            log.warning("%s: %s", ctx.target.name, "; ".join(notes))
        notes += save_package(mlmodel, out_dir / ARTIFACT, {})
        return {"artifact": ARTIFACT, "frontend": frontend, "notes": notes, "deployment_target": cfg.target,
                "precision": ctx.recipe.precision, "convert_seconds": round(convert_s, 3)}

    def convert(self, ctx: BuildContext) -> Variant:
        """The shared ML Program -> compression -> reproducible package in ``ctx.out_dir``."""
        _require_coremltools()
        import coremltools as ct

        from mbuild._io import atomic_path, read_json, tree_size
        from mbuild.recipes.audit import make_audit
        from mbuild.targets.coreml.compress import compress, describe, requested_weights
        from mbuild.targets.coreml.convert import compute_unit
        from mbuild.targets.coreml.mil import compression_ops, load_spec, program_from_spec, weight_tensors
        from mbuild.targets.coreml.package import save_package

        cfg: CoreMLConfig = ctx.options or self.parse_options(ctx.target)
        recipe = ctx.recipe
        start = time.perf_counter()
        base = ctx.base_conversion(self)
        facts = read_json(base / "convert.json")
        notes = list(facts["notes"])
        mlmodel = ct.models.MLModel(str(base / facts["artifact"]), compute_units=compute_unit(cfg.compute_units),
                                    skip_model_load=True)
        calibration = self._calibration(ctx) if recipe.quantize and recipe.quantize.scheme == "static" else None
        if recipe.quantize or recipe.palettize or recipe.prune:
            phase(f"compressing with coremltools.optimize.coreml (recipe {recipe.name})")
            mlmodel = compress(mlmodel, recipe, calibration)
        out = ctx.out_dir / ARTIFACT
        with atomic_path(out) as tmp:
            notes += save_package(mlmodel, tmp, self._metadata(ctx))
        spec = load_spec(out)  # describe what ships, not the in-memory model
        program = program_from_spec(spec)
        quant = describe(recipe, len(calibration or ()))
        q = recipe.quantize
        audit = make_audit(requested_weights(recipe), weight_tensors(program), allow_partial=bool(q and q.allow_partial))
        details = {"frontend": facts["frontend"], "deployment_target": cfg.target,
                   "specification_version": program.spec_version, "opset": program.opset,
                   "compute_units": cfg.compute_units, "compute_precision": recipe.precision,
                   "compression_ops": compression_ops(program), "size_bytes": tree_size(out),
                   "convert_seconds": facts["convert_seconds"],
                   "total_seconds": round(facts["convert_seconds"] + time.perf_counter() - start, 3)}
        return Variant(artifact=ARTIFACT, format="mlpackage", quantization=quant, audit=audit,
                       io=io_contract(spec, ctx.manifest), notes=notes, details=details)

    def _example(self, ctx: BuildContext):
        """A real validation sample as the example input when shapes are fixed (tracing follows real data)."""
        if any(s.shapes for s in ctx.manifest.inputs.values()):
            return None
        try:
            inputs = ctx.validation_inputs()
        except (OSError, KeyError):
            return None
        import numpy as np
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(inputs[n][0])).contiguous() for n in ctx.manifest.inputs)

    def _calibration(self, ctx: BuildContext) -> list[dict]:
        import numpy as np

        arrays = ctx.calibration_inputs()
        count = len(next(iter(arrays.values())))
        return [{n: np.ascontiguousarray(a[i]) for n, a in arrays.items()} for i in range(count)]

    def _metadata(self, ctx: BuildContext) -> dict:
        from mbuild.targets.coreml.compress import describe

        m = ctx.manifest
        user = {"mbuild.build_id": ctx.build_id, "mbuild.model": m.name, "mbuild.target": ctx.target.name,
                "mbuild.recipe": ctx.recipe.name, "mbuild.quantization": describe(ctx.recipe)["summary"]}
        try:
            import importlib.metadata

            user["mbuild.version"] = importlib.metadata.version("mbuild")
        except Exception:  # noqa: BLE001 - running from a checkout
            user["mbuild.version"] = "unknown"
        # version, author, license and description are release metadata: bundle.json carries them, so that a
        # release (a version bump, a new description) re-packages the bundle without rebuilding any variant
        return {"description": f"{m.name} ({ctx.target.name}, recipe {ctx.recipe.name})", "user_defined": user}

    # -- run -----------------------------------------------------------------------------------------
    def run(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray]) -> RunResult:
        """Predict sample by sample with the target's compute units (macOS only)."""
        if _platform.system() != "Darwin":
            return RunResult(outputs=None, runtime="coreml",
                             skipped_reason=SKIPPED_LINUX.format(system=_platform.system()))
        _require_coremltools()
        import coremltools as ct
        import numpy as np

        from mbuild.targets.coreml.convert import compute_unit

        cfg: CoreMLConfig = ctx.options or self.parse_options(ctx.target)
        try:
            model = ct.models.MLModel(str(artifact), compute_units=compute_unit(cfg.compute_units))
        except Exception as e:
            raise BuildError(f"Core ML load of {Path(artifact).name}: {e}") from e
        names = list(ctx.manifest.outputs)
        count = len(next(iter(inputs.values())))
        collected: dict[str, list] = {n: [] for n in names}
        latencies = []
        for i in range(count):
            feed = {k: _feed(ctx.manifest.inputs[k], v[i]) for k, v in inputs.items()}
            t0 = time.perf_counter()
            try:
                result = model.predict(feed)
            except Exception as e:
                raise BuildError(f"Core ML predict on sample {i}: {e}") from e
            if i > 0:
                latencies.append((time.perf_counter() - t0) * 1000)
            for n in names:
                collected[n].append(np.asarray(result[n], dtype=np.float32))
        runtime = f"coreml {ct.__version__} (macOS {_platform.mac_ver()[0]}, {cfg.compute_units})"
        return RunResult(outputs={n: np.stack(v) for n, v in collected.items()}, runtime=runtime,
                         latency_ms=latencies)

    def proxy(self, ctx: BuildContext, inputs: dict[str, np.ndarray]) -> RunResult | None:
        """A labelled estimate where Core ML cannot run: the canonical ONNX at the recipe's float precision,
        carrying the package's decompressed weights; None (with ``proxy_note``) when it cannot be faithful."""
        from mbuild.targets.coreml.proxy import ProxyUnavailable, proxy_run

        try:
            return proxy_run(ctx, inputs)
        except ProxyUnavailable as e:
            return RunResult(outputs=None, runtime="proxy", skipped_reason=f"no proxy estimate: {e}")

    # -- lint ----------------------------------------------------------------------------------------
    def lint(self, ctx: BuildContext, artifact: Path) -> list[LintResult]:
        """The ANE lint for targets that may use the Neural Engine (plus Core ML's compute plan on macOS)."""
        cfg: CoreMLConfig = ctx.options or self.parse_options(ctx.target)
        if cfg.compute_units not in ANE_UNITS:
            log.info("%s: compute_units %s - no ANE lint", ctx.target.name, cfg.compute_units)
            return []
        _require_coremltools()
        from mbuild.targets.coreml.lint import ane_lint, compute_plan_lint, summarize
        from mbuild.targets.coreml.mil import read_program

        results = [ane_lint(read_program(artifact))]
        if _platform.system() == "Darwin":
            try:
                results.append(compute_plan_lint(artifact, cfg.compute_units))
            except Exception as e:  # noqa: BLE001 - the compute plan is advisory
                log.warning("MLComputePlan failed: %s", e)
        if results[0].offenders and cfg.compute_units == "cpu_and_ne":
            log.warning("%s asks for cpu_and_ne but %s", ctx.target.name, summarize(results[0]))
        return results


def io_contract(spec, manifest) -> dict:
    """Inputs/outputs as the app sees them: names, shapes (enumerated too), types, image preprocessing."""
    out: dict = {"inputs": [], "outputs": [], "layout_changes": []}
    for desc in spec.description.input:
        entry = _describe_feature(desc)
        image = manifest.inputs[desc.name].image if desc.name in manifest.inputs else None
        if image is not None:
            entry["preprocessing"] = {"model_sees": "pixel * scale + bias", "scale": image.get("scale", 1.0),
                                      "bias": image.get("bias", 0.0), "color": image.get("color", "RGB")}
            out["layout_changes"].append(f"{desc.name}: fed as an image (CVPixelBuffer), not a tensor")
        out["inputs"].append(entry)
    out["outputs"] = [_describe_feature(d) for d in spec.description.output]
    return out


def _describe_feature(desc) -> dict:
    kind = desc.type.WhichOneof("Type")
    if kind == "imageType":
        t = desc.type.imageType
        from coremltools.proto import FeatureTypes_pb2

        return {"name": desc.name, "type": "image", "width": t.width, "height": t.height,
                "color": FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(t.colorSpace)}
    if kind == "multiArrayType":
        t = desc.type.multiArrayType
        from coremltools.proto import FeatureTypes_pb2

        entry = {"name": desc.name, "type": "tensor", "shape": list(t.shape),
                 "dtype": FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(t.dataType).lower()}
        if t.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
            entry["shapes"] = [list(s.shape) for s in t.enumeratedShapes.shapes]
        return entry
    return {"name": desc.name, "type": kind}


def _feed(spec, sample: np.ndarray):
    """A tensor sample, or a PIL image for image inputs (data sets hold what the model sees: pixel*scale+bias)."""
    import numpy as np

    if spec.image is None:
        return np.ascontiguousarray(sample)
    from PIL import Image

    gray = spec.image.get("color", "RGB") == "GRAYSCALE"
    bias = np.asarray(spec.image.get("bias", 0.0), dtype=np.float32)
    x = np.asarray(sample, dtype=np.float32)
    x = x.reshape(x.shape[-2:]) if gray else np.transpose(x.reshape(x.shape[-3:]), (1, 2, 0))
    pixels = (x - (bias if gray or bias.ndim == 0 else bias.reshape(1, 1, -1))) / float(spec.image.get("scale", 1.0))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _os_string(min_os: str) -> str:
    return min_os if "." in str(min_os) else f"{min_os}.0"


def _require_coremltools() -> None:
    """Import coremltools once, without its import-time noise (missing macOS-only bindings, untested versions)."""
    import sys

    if "coremltools" in sys.modules:
        return
    from mbuild.workers.families import lean_coremltools

    try:
        with lean_coremltools():  # without the TensorFlow / scikit-learn frontends a PyTorch source never uses
            import coremltools  # noqa: F401
    except ImportError:
        raise MissingDependencyError("coremltools", "coreml", "The coreml runtime") from None
