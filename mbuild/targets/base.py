"""The contract every runtime module implements: convert, run, lint.

A runtime is one module under ``mbuild/targets/`` with one :class:`Runtime`
subclass, registered in ``mbuild.targets.RUNTIMES``. Class data says what it can
do so an impossible manifest is refused before any SDK is imported; the SDK is
imported inside ``convert``/``run``/``lint`` only.

Example::

    class MyRuntime(Runtime):
        name = "myrt"
        format = "myfmt"
        platform = "android"
        sources = frozenset({"pytorch", "onnx"})
        features = frozenset({"fp32", "fp16"})

        def convert(self, ctx): ...   # writes into ctx.out_dir, returns a Variant
        def run(self, ctx, artifact, inputs): ...  # returns a RunResult
        def lint(self, ctx, artifact): ...  # returns a list of LintResult

Optional hooks the check step calls when a runtime has them: ``proxy`` (a stand-in run where the
artifact cannot run here), ``attribute_error`` (which layers a quantization hurt) and ``also_check``
(second runs of the same artifact, e.g. another consumer or other device settings, each judged on
its own and recorded under ``also_checked``, never as the check's verdict).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from mbuild.manifest.model import Manifest, RecipeConfig, TargetConfig


@dataclass(frozen=True)
class BuildContext:
    """Everything a runtime may read while building one variant; it writes only under ``out_dir``."""

    manifest: "Manifest"
    target: "TargetConfig"
    recipe: "RecipeConfig"
    source_dir: Path  # build/<name>/source: model.onnx, reference.npz, data/<set>.npz, source.json
    out_dir: Path  # build/<name>/<target>/ (work files go to out_dir / "work")
    options: Any = None  # the runtime's parsed target config (its ``config_class``)
    build_id: str = ""
    exclude_extra: tuple[str, ...] = ()  # node names kept in float by 'exclude: auto'
    base_dir: Path | None = None  # the shared base conversion's folder (its ``convert:`` task), if built

    def base_conversion(self, runtime: "Runtime") -> Path:
        """The folder of this variant's base conversion: the ``convert:`` task's output, or built here.

        Called directly (tests, tools) without a ``convert:`` task, the runtime converts into the
        variant's work folder, so ``convert`` works either way and gives the same artifact.
        """
        if self.base_dir is not None and (self.base_dir / BASE_RECORD).exists():
            from mbuild._io import read_json
            from mbuild.errors import BuildError

            record = read_json(self.base_dir / BASE_RECORD)
            if record.get("status") == "not built":  # failed, and recorded because only optional targets use it
                raise BuildError(f"its base conversion {self.base_dir.name} failed: {record['reason']}")
            return self.base_dir
        folder = self.work_dir / "base"
        if not (folder / BASE_RECORD).exists():
            from mbuild._io import write_json_atomic

            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / BASE_RECORD, runtime.convert_base(self, folder))
        return folder

    @property
    def canonical_onnx(self) -> Path:
        """The fp32 ONNX model every runtime may start from (checked against the reference)."""
        return self.source_dir / "model.onnx"

    @property
    def work_dir(self) -> Path:
        path = self.out_dir / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def dataset(self, name: str) -> dict[str, "np.ndarray"]:
        """Inputs of a data set as arrays of shape [samples, *declared_shape]."""
        from mbuild.sources.data import read_inputs

        return read_inputs(self.source_dir / "data" / f"{name}.npz")

    def calibration_inputs(self) -> dict[str, "np.ndarray"]:
        q = self.recipe.quantize
        return self.dataset(q.calibration if q and q.calibration else "validation")

    def validation_inputs(self) -> dict[str, "np.ndarray"]:
        return self.dataset("validation")

    def reference_outputs(self) -> dict[str, "np.ndarray"]:
        from mbuild.sources.data import read_outputs

        return read_outputs(self.source_dir / "reference.npz")

    def load_source_model(self):
        """The source framework's model object (torch.nn.Module, onnx path, tf/keras model)."""
        from mbuild.sources import get_source

        return get_source(self.manifest.source.kind).load(self.manifest)


BASE_RECORD = "convert.json"


@dataclass(frozen=True)
class Conversion:
    """A base conversion several variants share: its id in task names and the settings it depends on."""

    path: str  # e.g. 'coreml-iOS16-fp16', 'tflite-float', 'onnxruntime-opset13'
    config: dict  # exactly what the conversion reads from the manifest (its task digest)


@dataclass
class Variant:
    """What ``convert`` produced. Paths are relative to ``ctx.out_dir``."""

    artifact: str  # the model file, or the .mlpackage folder
    format: str  # onnx | tflite | mlpackage
    files: list[str] = field(default_factory=list)  # companions shipped too (e.g. model.ort)
    quantization: dict = field(default_factory=dict)  # what was actually applied; 'summary' is one sentence
    audit: dict | None = None  # weights really quantized vs left float (see mbuild.recipes.audit)
    io: dict = field(default_factory=dict)  # I/O contract: names, shapes, dtypes, layout changes, int I/O params
    notes: list[str] = field(default_factory=list)  # graph preparation steps, fallbacks taken
    details: dict = field(default_factory=dict)  # runtime-specific facts for the report


@dataclass
class RunResult:
    """Outputs of one artifact on a data set, or why it could not run here."""

    outputs: dict[str, "np.ndarray"] | None  # name -> [samples, *shape]
    runtime: str  # e.g. 'onnxruntime 1.31.1 (CPUExecutionProvider)'
    latency_ms: list[float] = field(default_factory=list)  # per-sample wall time, first run excluded
    skipped_reason: str | None = None


@dataclass
class LintResult:
    """A compatibility report; ``kind`` says whether it was measured or is a static estimate."""

    name: str  # e.g. 'gpu_delegate', 'nnapi', 'ane', 'ort_mobile'
    kind: str  # 'static estimate' | 'analyzer' | 'measured'
    verdict: str  # 'clean' | 'partial' | 'unsupported'
    coverage: float | None = None  # share of ops expected to run on the accelerator
    ops_total: int = 0
    offenders: list[dict] = field(default_factory=list)  # {'op': type, 'name': node, 'reason': why}
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "verdict": self.verdict, "coverage": self.coverage,
                "ops_total": self.ops_total, "offenders": self.offenders, "details": self.details}


def require_api_range(low: int, high: int | None) -> None:
    """Refuse an Android API range no device can be in (``min_api`` above ``max_api``)."""
    if high is not None and low > high:
        raise ValueError(f"min_api {low} is above max_api {high}")


class Runtime(ABC):
    """Base of every runtime; subclasses fill the class data and the three methods."""

    name: ClassVar[str]
    format: ClassVar[str]
    suffix: ClassVar[str]
    platform: ClassVar[str]  # 'ios' | 'android' | 'any'
    sources: ClassVar[frozenset[str]]
    features: ClassVar[frozenset[str]]  # recipe features it implements (see mbuild.recipes.features)
    packages: ClassVar[tuple[str, ...]] = ()  # distributions whose versions are task dependencies
    extra: ClassVar[str] = ""  # pip extra that installs them
    loadable_suffixes: ClassVar[tuple[str, ...]] = ()  # companion files an app may load instead; check: runs them
    check_options: ClassVar[tuple[str, ...]] = ()  # target keys only check: reads (out of the variant's digest)

    def parse_options(self, target: "TargetConfig") -> Any:
        """Typed config from the target's runtime-specific keys (schema-checked already)."""
        return dict(target.options)

    def options_as(self, config_cls: type, target: "TargetConfig") -> Any:
        """``config_cls`` (a dataclass) from the target's keys; an unknown key is named, with the nearest known one."""
        from dataclasses import fields

        from mbuild.manifest._schema import suggest

        names = [f.name for f in fields(config_cls)]
        for key in target.options:
            if key not in names:
                raise ValueError(f"unknown {self.name} target key {key!r}{suggest(key, names)}")
        return config_cls(**target.options)

    def check_target(self, manifest: "Manifest", target: "TargetConfig", recipe: "RecipeConfig") -> str | None:
        """A reason this combination cannot be built here, or None. Must not import an SDK."""
        return None

    def requirements(self, manifest: "Manifest", target: "TargetConfig") -> dict:
        """Device requirements of the variant (platform, OS/API range, accelerator)."""
        return {"platform": self.platform}

    def versions(self) -> dict[str, str]:
        """Installed versions of the converters this runtime calls (for task digests and bundle.json)."""
        from mbuild._io import dist_versions

        return dist_versions(self.packages)

    def check_versions(self, target: "TargetConfig") -> dict[str, str]:
        """Versions of what only check: runs for this target (e.g. a second consumer); its task digest."""
        return {}

    def conversion(self, manifest: "Manifest", target: "TargetConfig", recipe: "RecipeConfig") -> Conversion | None:
        """The base conversion this target and recipe derive from, or None. Must not import an SDK."""
        return None

    def convert_base(self, ctx: BuildContext, out_dir: Path) -> dict:
        """Write the base conversion into ``out_dir``; returns its facts (stored as convert.json)."""
        raise NotImplementedError(f"runtime {self.name!r} has no base conversion")

    @abstractmethod
    def convert(self, ctx: BuildContext) -> Variant:
        """Derive the variant into ``ctx.out_dir`` (from ``ctx.base_conversion(self)`` when it has one)."""

    @abstractmethod
    def run(self, ctx: BuildContext, artifact: Path, inputs: dict[str, "np.ndarray"]) -> RunResult:
        """Run the artifact on every sample of ``inputs`` ([samples, *shape] arrays)."""

    @abstractmethod
    def lint(self, ctx: BuildContext, artifact: Path) -> list[LintResult]:
        """Static and analyzer compatibility reports for the artifact's accelerator."""
