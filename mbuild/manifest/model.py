"""Typed, frozen views of a validated manifest; the rest of mbuild reads these, not raw YAML."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbuild.manifest._yaml import Positions

DEFAULT_CAPACITY = {
    "efficiency": {"cpu": 0.5, "gpu": 0.4, "ane": 0.25, "nnapi": 0.1},  # tuned on mbuild/devices/calibration.yaml
    "derating": 0.7,
    "fps": 30.0,
}


@dataclass(frozen=True)
class InputSpec:
    """A model input: its name, shape, dtype and what values it takes (``inputs:`` of the manifest)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    range: tuple[float, float] | None = None
    layout: str = "any"
    shapes: tuple[tuple[int, ...], ...] = ()
    image: dict | None = None


@dataclass(frozen=True)
class PartSpec:
    """Where one part of a detection output lies: a slice along ``axis`` or another output."""

    name: str  # 'boxes' | 'scores'
    axis: int = -1
    range: tuple[int, int] | None = None
    output: str | None = None
    format: str = "xyxy"
    units: str = "pixels"
    activation: str = "none"


@dataclass(frozen=True)
class OutputSpec:
    """What an output means (``kind``) and the settings its task metrics need; see docs/manifest.md."""

    name: str
    kind: str = "generic"
    labels: Path | None = None
    tensor: str | None = None  # the model's tensor name when the key is an alias
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    axis: int | None = None  # class / vocabulary / feature / channel axis, batch axis included
    margin: float | None = None
    parts: dict[str, PartSpec] = field(default_factory=dict)
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    match_iou: float = 0.5
    max_detections: int = 300
    score_margin: float = 0.05
    threshold: float = 0.5
    activation: str = "none"
    decode: str | None = None
    blank: int | None = None
    range: tuple[float, float] | None = None
    units: str = ""
    state_input: str | None = None
    snr_floor: float = 1e-3

    @property
    def tensor_name(self) -> str:
        return self.tensor or self.name

    @property
    def safe_name(self) -> str:
        """A name that is a valid identifier and file name everywhere (kept next to the original)."""
        import re

        safe = re.sub(r"[^A-Za-z0-9_]", "_", self.name)
        return safe if safe and not safe[0].isdigit() else f"t_{safe}"

    @classmethod
    def from_dict(cls, name: str, spec: dict, labels: Path | None = None) -> "OutputSpec":
        parts = {}
        for part_name, p in (spec.get("parts") or {}).items():
            parts[part_name] = PartSpec(name=part_name, axis=p.get("axis", -1),
                                        range=tuple(p["range"]) if "range" in p else None, output=p.get("output"),
                                        format=p.get("format", "xyxy"), units=p.get("units", "pixels"),
                                        activation=p.get("activation", "none"))
        rng = spec.get("range")
        return cls(name=name, kind=spec.get("kind", "generic"), labels=labels, tensor=spec.get("tensor"),
                   shape=tuple(spec["shape"]) if "shape" in spec else None, dtype=spec.get("dtype"),
                   axis=spec.get("axis"), margin=spec.get("margin"), parts=parts,
                   score_threshold=float(spec.get("score_threshold", 0.25)),
                   iou_threshold=float(spec.get("iou_threshold", 0.45)), match_iou=float(spec.get("match_iou", 0.5)),
                   max_detections=int(spec.get("max_detections", 300)),
                   score_margin=float(spec.get("score_margin", 0.05)), threshold=float(spec.get("threshold", 0.5)),
                   activation=spec.get("activation", "none"), decode=spec.get("decode"), blank=spec.get("blank"),
                   range=tuple(rng) if rng else None, units=spec.get("units", ""),
                   state_input=(spec.get("state") or {}).get("input"), snr_floor=float(spec.get("snr_floor", 1e-3)))


@dataclass(frozen=True)
class DataSpec:
    """A data set (``data.<name>``): an .npz or the manifest's generator, and which array feeds each input."""

    name: str
    npz: Path | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    labels: str | None = None
    limit: int | None = None
    synthetic: dict | None = None

    @property
    def is_synthetic(self) -> bool:
        return self.npz is None


@dataclass(frozen=True)
class QuantizeConfig:
    """How a recipe quantizes (``recipes.<name>.quantize``): scheme, bit widths, calibration, exclusions."""

    scheme: str
    weights: str = "int8"
    activations: str = "float"
    granularity: str = "per_channel"
    block_size: int | None = None
    calibration: str | None = None
    method: str = "minmax"
    exclude: tuple[str, ...] | str = ()
    exclude_max: int = 8
    keep_outputs_float: bool = False
    allow_partial: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "QuantizeConfig":
        scheme = d["scheme"]
        default_act = {"static": "int8", "dynamic": "int8"}.get(scheme, "float")
        exclude = d.get("exclude", ())
        return cls(
            scheme=scheme,
            weights=d.get("weights", "int8"),
            activations=d.get("activations", default_act),
            granularity=d.get("granularity", "per_channel"),
            block_size=d.get("block_size"),
            calibration=d.get("calibration"),
            method=d.get("method", "minmax"),
            exclude=exclude if exclude == "auto" else tuple(exclude),
            exclude_max=d.get("exclude_max", 8),
            keep_outputs_float=d.get("keep_outputs_float", False),
            allow_partial=d.get("allow_partial", False),
        )


@dataclass(frozen=True)
class RecipeConfig:
    """One optimization recipe (``recipes.<name>``): precision, quantization, palettization or pruning."""

    name: str
    precision: str = "fp32"
    quantize: QuantizeConfig | None = None
    palettize: dict | None = None
    prune: dict | None = None
    description: str = ""

    @property
    def family(self) -> str:
        """Tolerance family: fp32, fp16, int8-static, int8-dynamic, weight-only, compressed."""
        if self.quantize:
            q = self.quantize
            if q.scheme == "static":
                return "int16x8" if q.activations == "int16" else "int8-static"
            if q.scheme == "dynamic":
                return "int8-dynamic"
            return "weight-only"
        if self.palettize or self.prune:
            return "compressed"
        return self.precision


@dataclass(frozen=True)
class TargetConfig:
    """One entry of the target matrix (``targets.<name>``): runtime, recipe and the runtime's options."""

    name: str
    runtime: str
    recipe: str
    candidates: tuple[str, ...] = ()
    required: bool = True
    validate: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class SourceConfig:
    """The trained model (``source:``): its framework and where it is."""

    kind: str  # pytorch | onnx | tensorflow
    model: str  # as written: 'file.py:Callable', 'pkg.mod:Callable' or a path
    model_path: Path | None = None  # resolved file (onnx/tensorflow file, or the .py of a pytorch callable)
    callable_name: str | None = None
    weights: Path | None = None
    weights_key: str | None = None  # where the state dict sits in the checkpoint ('model_state', 'model.ema')
    weights_strict: bool = True
    kwargs: dict = field(default_factory=dict)
    signature: str = "serving_default"


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated manifest: every part typed, with the raw data and YAML positions for messages."""

    path: Path
    root: Path
    name: str
    version: str
    source: SourceConfig
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    data: dict[str, DataSpec]
    recipes: dict[str, RecipeConfig]
    targets: dict[str, TargetConfig]
    validate: dict[str, dict]
    select_order: tuple[str, ...]
    fallback: str | None
    capacity: dict
    description: str = ""
    author: str = ""
    license: str = ""
    raw: dict = field(default_factory=dict, repr=False)
    positions: Positions = field(default_factory=Positions, repr=False, compare=False)
    input_files: tuple[Path, ...] = ()
    snapshot: str = ""  # digest of the manifest's bytes and its extends bases, as read

    @property
    def bundle_id(self) -> str:
        return f"{self.name}-{self.version}"

    def rel(self, path: Path) -> str:
        """Path relative to the project root, as stored in digests and reports."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def part(self, *keys: str) -> dict[str, Any]:
        """The slice of the manifest a task depends on (for doit's config_changed)."""
        return {k: self.raw.get(k) for k in keys}
