"""Runtime ``tfjs``: TensorFlow.js graph models (``model.tfjs/``: model.json + weight shards) for the web.

Converted by tensorflowjs 4.22 from a SavedModel: a TensorFlow/Keras source's own (with the manifest's
names), or onnx2tf's of the canonical ONNX for PyTorch and ONNX sources (channels-last, transposed by
``run`` and apps as model.json records). Recipes: fp32, fp16 weights and uint8/uint16 weight-only
quantization (per-tensor affine, dequantized to float32 when the model loads: files shrink, inference
is not faster). The check runs the model in Node with @tensorflow/tfjs 4.22
on the wasm backend (what a browser app uses on the CPU); the bundle records that backend.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild._io import tree_size
from mbuild.targets.base import BuildContext, LintResult, RunResult, Runtime, Variant

if TYPE_CHECKING:  # pragma: no cover - numpy is imported where it is used: dodo.py stays light
    import numpy as np

ARTIFACT = "model.tfjs"  # a folder: model.json (graph + weight manifest) + group1-shard*of*.bin, what an app loads
SIBLING = "sibling_fp32.tfjs"  # fp32 weights next to a quantized variant, kept (not shipped) to compare
DEFAULT_SHARD_BYTES = 4 * 1024 * 1024  # tensorflowjs's default: browsers cache 4 MB files well
CHECK_BACKEND = "wasm"
WEIGHT_BYTES = {"float32": 4, "int32": 4, "float16": 2, "uint16": 2, "uint8": 1}
INPUT_DTYPES = ("float32", "int32")


@dataclass(frozen=True)
class TfjsConfig:
    """Target keys of a ``runtime: tfjs`` target (schema: ``tfjs_target``)."""

    shard_size_bytes: int = DEFAULT_SHARD_BYTES


class TfjsRuntime(Runtime):
    """TensorFlow.js graph model: fp32, fp16 or uint8/uint16 weights; checked in Node on wasm."""

    name = "tfjs"
    format = "tfjs"
    suffix = ".tfjs"
    platform = "web"
    sources = frozenset({"tensorflow", "pytorch", "onnx"})  # PyTorch/ONNX through onnx2tf's SavedModel
    features = frozenset({"fp32", "fp16", "weight-only-uint8", "weight-only-uint16"})
    packages = ("tensorflowjs", "tensorflow", "tf-keras", "onnx2tf")
    extra = "tfjs"

    def parse_options(self, target) -> TfjsConfig:
        cfg = self.options_as(TfjsConfig, target)
        if not isinstance(cfg.shard_size_bytes, int) or cfg.shard_size_bytes < 1024:
            raise ValueError(f"shard_size_bytes must be an integer of at least 1024, not {cfg.shard_size_bytes!r}")
        return cfg

    def check_target(self, manifest, target, recipe) -> str | None:
        """What tensorflowjs cannot build, refused before any SDK loads (with the reason)."""
        q = recipe.quantize
        if q and q.scheme != "weight_only":
            return (f"tfjs quantizes weights only (stored as uint8/uint16, dequantized to float32 at load); recipe "
                    f"{recipe.name!r} asks for {q.scheme} quantization, which TensorFlow.js cannot run; use "
                    f"'scheme: weight_only' with 'weights: uint8' or 'uint16'")
        if q and q.weights not in ("uint8", "uint16"):
            return (f"tfjs stores quantized weights as uint8 or uint16 (affine, per tensor); recipe {recipe.name!r} "
                    f"asks for {q.weights}")
        if q and recipe.precision == "fp16":
            return f"recipe {recipe.name!r} combines fp16 with weight quantization; pick one for tfjs"
        if q and q.exclude:
            return f"tfjs quantizes every float weight; recipe {recipe.name!r} excludes nodes, which is not offered"
        if q and q.granularity == "per_block":
            return f"tfjs quantizes per tensor; recipe {recipe.name!r} asks for per_block"
        if recipe.palettize or recipe.prune:
            return f"tfjs has no palettized or pruned weights; recipe {recipe.name!r} asks for them"
        for name, spec in manifest.inputs.items():
            if spec.dtype not in INPUT_DTYPES:
                return f"mbuild's tfjs check feeds float32 or int32 inputs; input {name!r} is {spec.dtype}"
        return None

    def versions(self) -> dict[str, str]:
        """The converters' versions and the npm packages the check runs (read from their package.json, no Node)."""
        from mbuild.targets.tfjs import node

        return {**super().versions(), **{p: node.package_version(p) for p in node.PACKAGES}}

    def requirements(self, manifest, target) -> dict:
        return {"platform": "web", "accelerator": "cpu"}  # validated on wasm; WebGL/WebGPU are not tested here

    # -- convert -----------------------------------------------------------------------------------
    def convert(self, ctx: BuildContext) -> Variant:
        """SavedModel -> tensorflowjs graph model in ``model.tfjs/``; a quantized recipe also writes the fp32 sibling."""
        from mbuild.recipes.audit import make_audit
        from mbuild.targets.tfjs import convert as conv
        from mbuild.targets.tfjs.io import layout_changes, plan_io
        from mbuild.workers import phase

        cfg = ctx.options if isinstance(ctx.options, TfjsConfig) else self.parse_options(ctx.target)
        weights = _weights(ctx.recipe)
        phase(f"making the SavedModel ({ctx.manifest.source.kind} source)")
        folder, signature, made = conv.saved_model(ctx)
        out, sibling = ctx.out_dir / ARTIFACT, ctx.out_dir / SIBLING
        jobs = [(out, weights)] + ([(sibling, None)] if weights else [])  # the sibling: for the size/latency comparison
        for path, _ in jobs:
            shutil.rmtree(path, ignore_errors=True)
        phase(f"converting with tensorflowjs ({weights or 'float32'} weights{', and the fp32 sibling' if weights else ''})")
        facts = {**conv.convert(folder, signature, jobs, cfg.shard_size_bytes), **made}
        shapes = {n: tuple(r.shape[1:]) for n, r in ctx.reference_outputs().items()}
        plans = {}
        for path, _ in jobs:  # the I/O plan goes into each model.json, where run() and apps read it
            model_json = json.loads((path / "model.json").read_text())
            plans[path] = plan_io(ctx.manifest, model_json.get("signature", {}), shapes)
            model_json["userDefinedMetadata"] = {"mbuild": {"format": 1, "name": ctx.manifest.name,
                                                            "recipe": ctx.recipe.name, "io": plans[path]}}
            # sorted keys: tensorflowjs writes each node's attr map in an order that changes from run to run
            (path / "model.json").write_text(json.dumps(model_json, sort_keys=True))
        model_json = json.loads((out / "model.json").read_text())
        requested = {"fp16": "fp16", "uint8": "uint8", "uint16": "uint16"}.get(weights or "")
        audit = make_audit(requested, weight_census(model_json))
        details = {"converter": facts, "bytes": tree_size(out), "shards": len(_shards(model_json)),
                   "shard_size_bytes": cfg.shard_size_bytes, "check_backend": CHECK_BACKEND,
                   "versions": self.versions()}
        if weights:
            details.update({"float_artifact": SIBLING, "float_bytes": tree_size(sibling)})
        plan = plans[out]
        io = {"inputs": plan["inputs"], "outputs": plan["outputs"], "layout_changes": layout_changes(plan),
              "state_tensors": []}
        notes = [f"converted with {facts['converter']} from {facts['from']}",
                 f"weights in {details['shards']} shard(s) of at most {cfg.shard_size_bytes} bytes",
                 "the I/O plan (signature keys, layout changes) is in model.json's userDefinedMetadata.mbuild"]
        for change in io["layout_changes"]:
            notes.append(f"onnx2tf changed {change['side']} {change['tensor']!r} from {change['from']} to "
                         f"{change['to']}; run() and apps transpose with perm {change['perm']}")
        return Variant(artifact=ARTIFACT, format="tfjs", quantization=_quantization(weights, facts), audit=audit,
                       io=io, notes=notes, details=details)

    # -- run ---------------------------------------------------------------------------------------
    def run(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray]) -> RunResult:
        """Node + @tensorflow/tfjs on the wasm backend, one sample at a time; skipped with the reason if absent."""
        from mbuild.targets.tfjs import node
        from mbuild.targets.tfjs.io import from_model, plan_io, to_model

        why = node.missing()
        if why:
            return RunResult(outputs=None, runtime="@tensorflow/tfjs in Node (not run)", skipped_reason=why)
        model_json = json.loads((Path(artifact) / "model.json").read_text())
        plan = (model_json.get("userDefinedMetadata") or {}).get("mbuild", {}).get("io")
        if plan is None:  # a graph model we did not write: derive the plan from the reference shapes
            shapes = {n: tuple(r.shape[1:]) for n, r in ctx.reference_outputs().items()}
            plan = plan_io(ctx.manifest, model_json.get("signature", {}), shapes)
        keys = [e["key"] for e in plan["outputs"]]
        produced, latencies, facts = node.run(Path(artifact), to_model(plan, inputs), keys, CHECK_BACKEND)
        return RunResult(outputs=from_model(plan, produced), latency_ms=latencies,
                         runtime=f"@tensorflow/tfjs {facts['tfjs']} in Node ({facts['backend']} backend, CPU)")

    # -- lint --------------------------------------------------------------------------------------
    def lint(self, ctx: BuildContext, artifact: Path) -> list[LintResult]:
        return []  # no accelerator to lint for: the check runs the wasm (CPU) backend itself


def _weights(recipe) -> str | None:
    """The tensorflowjs weight flag the recipe asks for: 'fp16', 'uint8', 'uint16' or None (float32)."""
    if recipe.quantize:
        return recipe.quantize.weights
    return "fp16" if recipe.precision == "fp16" else None


def _quantization(weights: str | None, facts: dict) -> dict:
    if weights is None:
        return {"summary": "none (fp32 weights)", "scheme": "none", "weights": "float32", "activations": "float32",
                "tool": facts["converter"]}
    stored = "float16" if weights == "fp16" else weights
    how = "as float16" if weights == "fp16" else f"as {weights}, affine per tensor (scale and min in model.json)"
    return {"summary": f"weights only: stored {how} and dequantized to float32 when the model loads; "
                       f"smaller files, no faster inference",
            "scheme": "fp16" if weights == "fp16" else "weight_only", "weights": stored, "activations": "float32",
            "granularity": None if weights == "fp16" else "per_tensor", "weights_only": True,
            "tool": f"{facts['converter']} (--quantize_{'float16' if weights == 'fp16' else weights})"}


def weight_census(model_json: dict) -> list:
    """Every float weight in the weights manifest with the type it is stored as (float32, float16, uint8, uint16)."""
    from mbuild.recipes.audit import WeightTensor

    out = []
    for group in model_json.get("weightsManifest", []):
        for w in group["weights"]:
            if w.get("dtype") != "float32":
                continue  # int32/bool constants are shapes and indices, not weights
            stored = (w.get("quantization") or {}).get("dtype", "float32")
            elements = 1
            for d in w.get("shape", []):
                elements *= int(d)
            node = w["name"].rsplit("/", 1)[0]
            out.append(WeightTensor(w["name"], "const", stored, elements, elements * WEIGHT_BYTES.get(stored, 4), node))
    return out


def _shards(model_json: dict) -> list[str]:
    return [p for group in model_json.get("weightsManifest", []) for p in group["paths"]]
