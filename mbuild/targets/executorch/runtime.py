"""Runtime ``executorch``: ExecuTorch programs (``.pte``) for Android and iOS apps.

PyTorch sources only: ``torch.export`` -> ``to_edge_transform_and_lower`` with one partitioner
(XNNPACK by default; Core ML or Vulkan when asked) -> ``.pte``. Static int8 is PT2E with the
XNNPACK quantizer, calibrated on the manifest's calibration set. Validation runs the ``.pte`` with
ExecuTorch's Python runtime; programs delegating to a backend it does not register (Core ML,
Vulkan) are ``skipped`` with the reason, never passed. The lint is the delegation report.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild._io import read_json, write_bytes_atomic, write_json_atomic
from mbuild.targets.base import BuildContext, Conversion, LintResult, RunResult, Runtime, Variant
from mbuild.workers import phase

if TYPE_CHECKING:  # pragma: no cover - numpy is imported where it is used: dodo.py stays light
    import numpy as np

ARTIFACT = "model.pte"
DELEGATION = "delegation.json"  # the lowering's delegation summary, read by lint (not shipped)
PARTITIONERS = ("xnnpack", "coreml", "vulkan")
# Where each partitioner's program can run, and what it needs of the device:
# - the ExecuTorch Android AAR (XNNPACK, portable kernels) is built with minSdk 23
#   (extension/android/executorch_android/build.gradle in pytorch/executorch);
# - its Swift package declares platforms .iOS(.v17) (docs: using-executorch-ios);
# - Vulkan is available from Android 7.0 (API 24): https://developer.android.com/ndk/guides/graphics
PLATFORMS = {"xnnpack": ("android", "ios"), "coreml": ("ios",), "vulkan": ("android",)}
MIN_API = {"xnnpack": 23, "vulkan": 24}
MIN_OS = "17.0"
ACCELERATOR = {"xnnpack": "cpu", "vulkan": "gpu", "coreml": "cpu"}  # Core ML picks its units; the CPU always holds
WHERE_IT_RUNS = {"CoreMLBackend": "an iOS/macOS app linking ExecuTorch's backend_coreml",
                 "VulkanBackend": "an Android app built with ExecuTorch's Vulkan backend"}


@dataclass(frozen=True)
class ExecuTorchConfig:
    """Target keys of a ``runtime: executorch`` target (schema: ``executorch_target``)."""

    partitioner: str = "xnnpack"
    platform: str | None = None  # android | ios; default: the partitioner's first platform
    min_api: int | None = None
    min_os: str | None = None

    def __post_init__(self):
        if self.partitioner not in PARTITIONERS:
            raise ValueError(f"partitioner must be one of {', '.join(PARTITIONERS)}, not {self.partitioner!r}")
        allowed = PLATFORMS[self.partitioner]
        if self.platform is not None and self.platform not in allowed:
            raise ValueError(f"partitioner {self.partitioner!r} builds for {' or '.join(allowed)}, not "
                             f"platform {self.platform!r}")
        if self.device_platform == "ios" and self.min_api is not None:
            raise ValueError("min_api is an Android API level; an ios target takes min_os")
        if self.device_platform == "android" and self.min_os is not None:
            raise ValueError("min_os is an iOS version; an android target takes min_api")
        floor = MIN_API.get(self.partitioner)
        if self.min_api is not None and floor and self.min_api < floor:
            raise ValueError(f"min_api {self.min_api} is below what ExecuTorch's {self.partitioner} runtime "
                             f"supports on Android (API {floor})")
        if self.min_os is not None and _major(self.min_os) < _major(MIN_OS):
            raise ValueError(f"min_os {self.min_os} is below what ExecuTorch's iOS runtime supports ({MIN_OS})")

    @property
    def device_platform(self) -> str:
        return self.platform or PLATFORMS[self.partitioner][0]


class ExecuTorchRuntime(Runtime):
    """ExecuTorch ``.pte``: fp32 and static int8 (PT2E, XNNPACK quantizer); XNNPACK, Core ML or Vulkan partitions."""

    name = "executorch"
    format = "pte"
    suffix = ".pte"
    platform = "android"
    sources = frozenset({"pytorch"})
    features = frozenset({"fp32", "int8-static"})
    packages = ("executorch", "torch", "torchao")
    extra = "executorch"

    def parse_options(self, target) -> ExecuTorchConfig:
        return self.options_as(ExecuTorchConfig, target)

    def check_target(self, manifest, target, recipe) -> str | None:
        """Recipes this runtime cannot build (fp16, dynamic, weight-only... are refused by ``features``)."""
        try:
            cfg = self.parse_options(target)
        except (TypeError, ValueError):
            return None  # parse_options reports it
        q = recipe.quantize
        if not q:
            return None
        if cfg.partitioner != "xnnpack":
            return (f"recipe {recipe.name!r}: static int8 uses the XNNPACK quantizer, whose program only the XNNPACK "
                    f"partitioner lowers; with partitioner {cfg.partitioner!r} use an fp32 recipe")
        if q.scheme == "static" and (q.weights != "int8" or q.activations != "int8"):
            return (f"recipe {recipe.name!r}: the XNNPACK quantizer is W8A8 (int8 weights and activations), not "
                    f"{q.weights} weights with {q.activations} activations")
        if q.method != "minmax":
            return f"the XNNPACK quantizer calibrates with min/max observers; recipe {recipe.name!r} asks for {q.method!r}"
        if q.granularity not in ("per_channel", "per_tensor"):
            return f"the XNNPACK quantizer is per-channel or per-tensor, not {q.granularity}"
        if q.exclude or q.keep_outputs_float:
            return (f"recipe {recipe.name!r}: 'exclude' and 'keep_outputs_float' are not implemented for executorch "
                    "targets; remove them or use another recipe for this target")
        return None

    def requirements(self, manifest, target) -> dict:
        cfg = self.parse_options(target)
        req = {"platform": cfg.device_platform, "accelerator": ACCELERATOR[cfg.partitioner]}
        if cfg.device_platform == "android":
            req["min_api"] = cfg.min_api if cfg.min_api is not None else MIN_API[cfg.partitioner]
        else:
            req["min_os"] = cfg.min_os or MIN_OS
        return req

    # -- convert -----------------------------------------------------------------------------------
    def conversion(self, manifest, target, recipe) -> Conversion:
        """One fp32 program per partitioner (and Core ML deployment target): fp32 ships it, int8 times against it."""
        cfg = self.parse_options(target)
        config = {"partitioner": cfg.partitioner}
        path = f"executorch-{cfg.partitioner}-fp32"
        if cfg.partitioner == "coreml":
            config["min_os"] = cfg.min_os or MIN_OS
            path += f"-iOS{_major(config['min_os'])}"
        return Conversion(path=path, config=config)

    def convert_base(self, ctx: BuildContext, out_dir: Path) -> dict:
        """The fp32 program: torch.export at the declared shapes, lowered with the target's partitioner."""
        from mbuild.targets.executorch import lower

        lower.require_executorch()
        cfg = self._options(ctx)
        module = ctx.load_source_model().eval()
        example = self._example(ctx)
        phase(f"torch.export of the source model, lowered with the {cfg.partitioner} partitioner")
        program, delegation, data, notes = lower.export_and_lower(module, example, cfg.partitioner, cfg.min_os or MIN_OS)
        write_bytes_atomic(out_dir / "fp32.pte", data)
        weights = [asdict(t) for t in lower.weight_tensors(program)]
        return {"artifact": "fp32.pte", "partitioner": cfg.partitioner, "delegation": delegation, "weights": weights,
                "notes": notes}

    def convert(self, ctx: BuildContext) -> Variant:
        from mbuild.recipes.audit import WeightTensor, make_audit
        from mbuild.targets.executorch import lower

        cfg = self._options(ctx)
        base = ctx.base_conversion(self)
        facts = read_json(base / "convert.json")
        float_path = base / facts["artifact"]
        out = ctx.out_dir / ARTIFACT
        q = ctx.recipe.quantize
        details: dict = {"partitioner": cfg.partitioner, "float_bytes": float_path.stat().st_size,
                         "versions": self.versions()}
        if q is None:
            shutil.copyfile(float_path, out)
            delegation, weights = facts["delegation"], [WeightTensor(**w) for w in facts["weights"]]
            quant = {"summary": "none (fp32)", "scheme": "none", "weights": "float32", "activations": "float32"}
        else:
            lower.require_executorch()
            calibration = self._calibration(ctx)
            per_channel = q.granularity == "per_channel"
            phase(f"PT2E static int8 with the XNNPACK quantizer on {len(calibration)} calibration samples")
            program = lower.quantize_static(ctx.load_source_model().eval(), self._example(ctx), calibration,
                                            per_channel=per_channel)
            phase(f"lowering the quantized program with the {cfg.partitioner} partitioner")
            delegation, data = lower.lower(program, cfg.partitioner)
            write_bytes_atomic(out, data)
            weights = lower.weight_tensors(program)
            shutil.copyfile(float_path, ctx.out_dir / "sibling_fp32.pte")  # kept (not shipped) to time fp32
            details["float_artifact"] = "sibling_fp32.pte"
            quant = _describe_int8(q, len(calibration))
        write_json_atomic(ctx.out_dir / DELEGATION, delegation)
        details.update({"delegation": {k: delegation[k] for k in ("delegated_ops", "portable_ops", "portable_cost_share",
                                                                   "kept_off_delegate") if k in delegation},
                        "bytes": out.stat().st_size})
        audit = make_audit(q.weights if q else None, weights, allow_partial=bool(q and q.allow_partial))
        notes = [f"lowered with the {cfg.partitioner} partitioner: {delegation['delegated_ops']} op(s) delegated, "
                 f"{delegation['portable_ops']} on portable kernels"
                 + (f" ({', '.join(delegation['portable'])})" if delegation["portable"] else "")]
        notes += [f"{k['node']} kept off the delegate: {k['why']}" for k in delegation.get("kept_off_delegate", [])]
        notes += facts.get("notes", [])
        return Variant(artifact=ARTIFACT, format="pte", quantization=quant, audit=audit, io=self._io(ctx),
                       notes=notes, details=details)

    def _options(self, ctx: BuildContext) -> ExecuTorchConfig:
        return ctx.options if isinstance(ctx.options, ExecuTorchConfig) else self.parse_options(ctx.target)

    def _example(self, ctx: BuildContext) -> tuple:
        from mbuild.sources.pytorch import example_args

        return example_args(ctx.manifest)

    def _calibration(self, ctx: BuildContext) -> list[tuple]:
        from mbuild.sources.pytorch import example_args

        arrays = ctx.calibration_inputs()
        count = len(next(iter(arrays.values())))
        return [example_args(ctx.manifest, arrays, i) for i in range(count)]

    def _io(self, ctx: BuildContext) -> dict:
        shapes = {n: list(r.shape[1:]) for n, r in ctx.reference_outputs().items()}
        return {"inputs": [{"name": n, "shape": list(s.shape), "dtype": s.dtype} for n, s in ctx.manifest.inputs.items()],
                "outputs": [{"name": n, "shape": shapes.get(n), "dtype": "float32"} for n in ctx.manifest.outputs],
                "layout_changes": [], "state_tensors": [],
                "static_shapes": "the .pte takes exactly these shapes (batch included); feed one sample at a time"}

    # -- run ---------------------------------------------------------------------------------------
    def run(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray]) -> RunResult:
        """Execute sample by sample with ExecuTorch's Python runtime; skipped when a delegate cannot load here."""
        from mbuild.targets.executorch.delegation import read_pte
        from mbuild.targets.executorch.lower import require_executorch
        from mbuild.targets.executorch.program import registered_backends, run_program

        require_executorch()
        version = _version("executorch")
        needed = sorted(read_pte(Path(artifact))["delegate_calls"])
        registered = registered_backends()
        missing = [b for b in needed if b not in registered]
        if missing:
            where = "; ".join(WHERE_IT_RUNS.get(b, f"a runtime with {b} linked in") for b in missing)
            return RunResult(outputs=None, runtime=f"executorch {version}",
                             skipped_reason=f"the program delegates to {', '.join(missing)}, which ExecuTorch's Python "
                                            f"runtime on this host does not register (it has {', '.join(registered)}); "
                                            f"it runs only in {where}")
        outputs, latencies = run_program(Path(artifact), inputs, list(ctx.manifest.inputs), list(ctx.manifest.outputs))
        backends = ", ".join(needed) or "portable kernels only"
        return RunResult(outputs=outputs, latency_ms=latencies,
                         runtime=f"executorch {version} (Python runtime, {backends})")

    # -- lint --------------------------------------------------------------------------------------
    def lint(self, ctx: BuildContext, artifact: Path) -> list[LintResult]:
        """The delegation report: delegated vs portable ops, flagged (``details.flag``) when most compute is portable."""
        from mbuild.targets.executorch.delegation import delegation_lint
        from mbuild.targets.executorch.lower import require_executorch

        require_executorch()
        cfg = self._options(ctx)
        sidecar = Path(artifact).parent / DELEGATION
        summary = read_json(sidecar) if sidecar.exists() else None
        return [delegation_lint(Path(artifact), summary, cfg.partitioner)]  # a 'flag' becomes a variant flag


def _describe_int8(q, samples: int) -> dict:
    gran = "per-channel" if q.granularity == "per_channel" else "per-tensor"
    return {"summary": f"int8 static {gran} W8A8 (XNNPACK quantizer: weights int8 symmetric, activations int8 "
                       f"asymmetric), calibrated on {samples} samples (minmax)",
            "scheme": "static", "format": "PT2E", "granularity": q.granularity, "weights": "int8",
            "activations": "int8", "calibration_samples": samples, "calibration_method": "minmax",
            "tool": f"torchao.quantization.pt2e {_version('torchao')} + executorch XNNPACKQuantizer "
                    f"{_version('executorch')}"}


def _major(version: str) -> int:
    return int(str(version).split(".")[0])


def _version(dist: str) -> str:
    from mbuild._io import dist_version

    return dist_version(dist, missing="unknown")
