"""Runtime ``ncnn``: Tencent's ncnn (.param + .bin) for Android, on the Vulkan GPU or the CPU, built with pnnx.

pnnx converts a traced PyTorch model, or the canonical ONNX for ONNX and TensorFlow sources; recipes choose fp32 or fp16 weights.
Nothing else: no quantization tool ships here (ncnn's ncnn2table/ncnn2int8 are not in the wheel,
and pnnx cannot read torch-quantized models), so int8 and compression recipes are refused at
``mbuild validate``. The check runs the model with the ``ncnn`` Python package with fp16 storage,
packing and arithmetic switched off, so the comparison measures the weights and the graph, not
this CPU's fp16; a second run with ncnn's device defaults is recorded beside it and judged too.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild._io import dist_version, tree_size
from mbuild.targets.base import BuildContext, LintResult, RunResult, Runtime, Variant, require_api_range

if TYPE_CHECKING:  # pragma: no cover - numpy is imported where it is used: dodo.py stays light
    import numpy as np

ARTIFACT = "model.ncnn"  # a folder: model.param (graph) + model.bin (weights), what an app loads
SIBLING = "sibling_fp32.ncnn"  # fp32 weights next to an fp16 variant, kept (not shipped) to time it
# Lowest Android API level per device:
# - Vulkan 1.0 arrived in Android 7.0 (API 24): https://developer.android.com/ndk/guides/graphics/getting-started
# - ncnn's CPU build for Android targets API 21 (its Android release packages: android-21 CPU, android-24 Vulkan).
API_DEFAULTS = {"vulkan": 24, "cpu": 21}
ACCELERATOR = {"vulkan": "gpu", "cpu": "cpu"}
NO_QUANTIZER = ("no ncnn quantization tool ships here (ncnn2table/ncnn2int8 are not in the ncnn wheel or sdist, "
                "and pnnx cannot read torch-quantized models)")


@dataclass(frozen=True)
class NcnnConfig:
    """Target keys of a ``runtime: ncnn`` target (schema: ``ncnn_target``)."""

    device: str = "vulkan"
    min_api: int | None = None
    max_api: int | None = None

    def api_range(self) -> tuple[int, int | None]:
        return (self.min_api if self.min_api is not None else API_DEFAULTS[self.device], self.max_api)


class NcnnRuntime(Runtime):
    """ncnn via pnnx: fp32 or fp16 weights; Vulkan GPU or CPU on Android."""

    name = "ncnn"
    format = "ncnn"
    suffix = ".ncnn"
    platform = "android"
    sources = frozenset({"pytorch", "onnx", "tensorflow"})  # TensorFlow through the canonical ONNX
    features = frozenset({"fp32", "fp16"})
    packages = ("pnnx", "ncnn", "torch")
    extra = "ncnn"

    def parse_options(self, target) -> NcnnConfig:
        cfg = self.options_as(NcnnConfig, target)
        if cfg.device not in API_DEFAULTS:
            raise ValueError(f"device must be one of {', '.join(API_DEFAULTS)}, not {cfg.device!r}")
        require_api_range(*cfg.api_range())
        return cfg

    def check_target(self, manifest, target, recipe) -> str | None:
        """What pnnx/ncnn cannot build here, refused before any SDK loads (with the reason)."""
        q = recipe.quantize
        if q:
            return (f"ncnn builds fp32 and fp16 weights only; recipe {recipe.name!r} asks for {q.scheme} "
                    f"{q.weights} quantization, and {NO_QUANTIZER}; use a precision: fp16 or fp32 recipe")
        if recipe.palettize or recipe.prune:
            return (f"ncnn builds fp32 and fp16 weights only; recipe {recipe.name!r} compresses weights "
                    f"(palettize/prune), which ncnn cannot store")
        if recipe.precision not in self.features:
            return f"ncnn builds fp32 and fp16 weights only, not {recipe.precision} (recipe {recipe.name!r})"
        for name, spec in manifest.inputs.items():
            if spec.dtype != "float32":
                return f"ncnn takes float32 inputs only; input {name!r} is {spec.dtype}"
            if not spec.shape or spec.shape[0] != 1:
                return (f"ncnn has no batch axis: input {name!r} is declared {list(spec.shape)}; declare a leading "
                        f"batch of 1 for ncnn targets")
            if len(spec.shape) > 5:
                return f"ncnn tensors have at most 4 axes besides the batch; input {name!r} has {len(spec.shape) - 1}"
        return None

    def requirements(self, manifest, target) -> dict:
        cfg = self.parse_options(target)
        low, high = cfg.api_range()
        return {"platform": "android", "min_api": low, "max_api": high, "accelerator": ACCELERATOR[cfg.device]}

    # -- convert -----------------------------------------------------------------------------------
    def convert(self, ctx: BuildContext) -> Variant:
        """pnnx into the work folder; the ncnn pair moves into ``model.ncnn/``, the side files stay behind."""
        from mbuild.recipes.audit import WeightTensor, make_audit
        from mbuild.targets.ncnn import convert as conv
        from mbuild.targets.ncnn.io import layout_changes, plan_io
        from mbuild.targets.ncnn.model import weight_census
        from mbuild.workers import phase

        fp16 = ctx.recipe.precision == "fp16"
        phase(f"converting with pnnx ({ctx.manifest.source.kind} source, {'fp16' if fp16 else 'fp32'} weights)")
        facts = conv.convert(ctx, ctx.work_dir / "pnnx", fp16)
        out = _place(ctx.work_dir / "pnnx", ctx.out_dir / ARTIFACT)
        details = {"converter": facts, "bytes": tree_size(out), "versions": self.versions()}
        if fp16:
            phase("converting the fp32 sibling (for the latency comparison)")
            conv.convert(ctx, ctx.work_dir / "pnnx-fp32", False)
            sibling = _place(ctx.work_dir / "pnnx-fp32", ctx.out_dir / SIBLING)
            details.update({"float_artifact": SIBLING, "float_bytes": tree_size(sibling)})
        shapes = {n: tuple(r.shape[1:]) for n, r in ctx.reference_outputs().items()}
        plan = plan_io(out / "model.param", ctx.manifest, shapes)
        census, why = weight_census(out / "model.param", out / "model.bin")
        audit = None
        if why is None:
            tensors = [WeightTensor(c["layer"], c["op"], c["dtype"], c["elements"], c["bytes"], c["layer"]) for c in census]
            audit = make_audit(None, tensors)
        else:
            details["weight_census"] = f"not measured: {why}"
        weights = "float16" if fp16 else "float32"
        quantization = {"summary": "fp16 weights (pnnx fp16=1); computed as the device's ncnn chooses" if fp16
                        else "none (fp32 weights)", "scheme": "fp16" if fp16 else "none", "weights": weights,
                        "activations": "float32 (fp16 where the device's ncnn enables fp16 storage/arithmetic)",
                        "tool": facts["converter"]}
        io = {"inputs": plan["inputs"], "outputs": plan["outputs"], "layout_changes": layout_changes(plan),
              "state_tensors": [], "blobs": "pnnx names inputs in0.. and outputs out0.. in manifest order"}
        notes = [f"converted with {facts['converter']} from {facts['from']}",
                 "ncnn has no batch axis: inputs are fed and outputs returned without the leading 1"]
        return Variant(artifact=ARTIFACT, format="ncnn", quantization=quantization, audit=audit, io=io,
                       notes=notes, details=details)

    # -- run ---------------------------------------------------------------------------------------
    def run(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray]) -> RunResult:
        """ncnn on the CPU with fp16 storage/packed/arithmetic off, so the comparison measures the model."""
        runner = self._runner(ctx, Path(artifact), fp16=False)
        outputs, latencies = runner.run(inputs)
        return RunResult(outputs=outputs, latency_ms=latencies,
                         runtime=f"ncnn {dist_version('ncnn')} (CPU, 1 thread, fp16 storage/packed/arithmetic off for "
                                 f"the comparison)")

    def also_check(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray],
                   outputs: dict[str, np.ndarray]) -> dict:
        """The same model with ncnn's device defaults (fp16 where this CPU has it), judged on its own."""
        from mbuild.validate.metrics import tensor_metrics
        from mbuild.validate.second_opinion import judge

        runner = self._runner(ctx, Path(artifact), fp16=None)
        produced, _ = runner.run(inputs)
        switches = ", ".join(f"{k.removeprefix('use_')} {'on' if v else 'off'}" for k, v in runner.options.items())
        entry = {"runtime": f"ncnn {dist_version('ncnn')} (CPU, 1 thread, device defaults: {switches})",
                 "options": runner.options, **judge(ctx, produced),
                 "vs_fp32_compute": {n: {"max_abs": float(f"{tensor_metrics(outputs[n], produced[n])['max_abs']:.3g}")}
                                     for n in outputs},
                 "note": "informational: the check's verdict is the fp16-off run; this is what an app gets by default"}
        return {"device_defaults": entry}

    @staticmethod
    def _runner(ctx: BuildContext, artifact: Path, fp16: bool | None):
        from mbuild.targets.ncnn.io import Runner, plan_io

        shapes = {n: tuple(r.shape[1:]) for n, r in ctx.reference_outputs().items()}
        plan = plan_io(artifact / "model.param", ctx.manifest, shapes)
        return Runner(artifact / "model.param", artifact / "model.bin", plan, fp16=fp16)

    # -- lint --------------------------------------------------------------------------------------
    def lint(self, ctx: BuildContext, artifact: Path) -> list[LintResult]:
        from mbuild.targets.ncnn.lint import vulkan_lint

        cfg = ctx.options if isinstance(ctx.options, NcnnConfig) else self.parse_options(ctx.target)
        return [vulkan_lint(Path(artifact) / "model.param")] if cfg.device == "vulkan" else []


def _place(work: Path, folder: Path) -> Path:
    """pnnx's ncnn pair as ``folder/model.param`` + ``folder/model.bin`` (the side files are left in ``work``)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(work / "model.ncnn.param", folder / "model.param")
    shutil.move(work / "model.ncnn.bin", folder / "model.bin")
    return folder
