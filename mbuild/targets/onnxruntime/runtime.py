"""Runtime ``onnxruntime``: the CPU fallback (.onnx plus ORT-format .ort for ONNX Runtime Mobile).

Quantization and fp16 come from ONNX Runtime's own tools; every quantized model is
audited afterwards because ``quantize_*`` exits 0 even when it quantized nothing.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mbuild.errors import BuildError
from mbuild.targets.base import BuildContext, Conversion, LintResult, RunResult, Runtime, Variant

if TYPE_CHECKING:  # pragma: no cover - numpy is imported where it is used: dodo.py stays light
    import numpy as np

log = logging.getLogger(__name__)

QDQ_MIN_OPSET = 13
ATTRIBUTION_SAMPLES = 32
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv",
              "QLinearMatMul", "LSTM", "GRU", "RNN", "Attention", "Embedding", "Gather"}


SECOND_CONSUMERS = ("opencv",)  # what ``also_check`` may name (schema: onnxruntime_target.also_check)


@dataclass(frozen=True)
class OnnxRuntimeConfig:
    """An onnxruntime target's options: whether to write model.ort, the opset, second consumers to check."""

    ort_format: bool = True
    opset: int | None = None
    also_check: tuple[str, ...] = ()  # second consumers run on the same .onnx by check: (see opencv.py)


class OnnxRuntime(Runtime):
    """ONNX Runtime on the CPU: fp32, fp16, dynamic int8 and static QDQ int8."""

    name = "onnxruntime"
    format = "onnx"
    suffix = ".onnx"
    platform = "any"
    sources = frozenset({"pytorch", "onnx", "tensorflow"})
    features = frozenset({"fp32", "fp16", "int8-static", "int8-dynamic", "exclude-auto"})
    packages = ("onnxruntime", "onnx", "onnxslim")
    extra = "onnxruntime"
    loadable_suffixes = (".onnx", ".ort")  # check: runs model.ort too: it is what ONNX Runtime Mobile loads
    check_options = ("also_check",)  # read by check: only; editing them re-runs the check, not the variant

    def parse_options(self, target) -> OnnxRuntimeConfig:
        cfg = self.options_as(OnnxRuntimeConfig, target)
        consumers = tuple(cfg.also_check or ())
        unknown = [c for c in consumers if c not in SECOND_CONSUMERS]
        if unknown:
            raise ValueError(f"also_check: {unknown[0]!r} is not a consumer mbuild runs; use one of "
                             f"{', '.join(SECOND_CONSUMERS)}")
        return replace(cfg, also_check=consumers)

    def check_versions(self, target) -> dict[str, str]:
        """Versions of the second consumers the check runs (its task digest)."""
        from mbuild._io import dist_versions
        from mbuild.targets.onnxruntime.opencv import DIST

        consumers = tuple(target.options.get("also_check") or ())
        return dist_versions([DIST]) if "opencv" in consumers else {}

    def check_target(self, manifest, target, recipe):
        q = recipe.quantize
        if q and q.weights != "int8":
            return f"onnxruntime quantizes weights to int8 only; recipe {recipe.name!r} asks for {q.weights}"
        if q and q.activations not in ("int8", "uint8", "float"):
            return f"onnxruntime static quantization supports int8/uint8 activations, not {q.activations}"
        if recipe.precision == "fp16" and q:
            return f"recipe {recipe.name!r} combines fp16 with int8 quantization; pick one for onnxruntime"
        return None

    def requirements(self, manifest, target) -> dict:
        return {"platform": "any", "accelerator": "cpu"}

    # -- convert -----------------------------------------------------------------------------------
    def conversion(self, manifest, target, recipe) -> Conversion:
        """One prepared ONNX per minimum opset (QDQ recipes need opset 13); every recipe starts from it."""
        cfg = self.parse_options(target)
        min_opset = max(cfg.opset or 0, QDQ_MIN_OPSET if recipe.quantize else 0)
        return Conversion(path=f"onnxruntime-opset{min_opset}" if min_opset else "onnxruntime-prepared",
                          config={"min_opset": min_opset})

    def convert_base(self, ctx: BuildContext, out_dir: Path) -> dict:
        """The canonical ONNX prepared for ONNX Runtime and its quantizers (pinned shapes, folded, opset)."""
        from mbuild.sources.onnx_prepare import prepare_onnx

        conv = self.conversion(ctx.manifest, ctx.target, ctx.recipe)
        shapes = {n: s.shape for n, s in ctx.manifest.inputs.items()}
        notes = prepare_onnx(ctx.canonical_onnx, out_dir / "prepared.onnx", shapes, min_opset=conv.config["min_opset"])
        return {"artifact": "prepared.onnx", "notes": notes}

    def convert(self, ctx: BuildContext) -> Variant:
        from mbuild._io import read_json

        cfg: OnnxRuntimeConfig = ctx.options or OnnxRuntimeConfig()
        recipe = ctx.recipe
        q = recipe.quantize
        work = ctx.work_dir
        base = ctx.base_conversion(self)
        facts = read_json(base / "convert.json")
        prepared = work / "prepared.onnx"
        shutil.copyfile(base / facts["artifact"], prepared)  # the quantizers write beside their input
        notes = list(facts["notes"])
        out = ctx.out_dir / "model.onnx"
        details: dict = {"graph_preparation": notes}
        if q is None and recipe.precision == "fp16":
            quant = self._fp16(prepared, out)
        elif q is None:
            shutil.copyfile(prepared, out)
            quant = {"summary": "none (fp32)", "scheme": "none", "weights": "float32", "activations": "float32"}
        elif q.scheme == "dynamic":
            quant = self._dynamic(ctx, prepared, out)
        else:
            quant, excluded = self._static(ctx, prepared, out)
            details["excluded_nodes"] = excluded
        files = []
        if cfg.ort_format:
            files.append(self._to_ort(out, work))
        requested = q.weights if q else None
        from mbuild.recipes.audit import make_audit

        audit = make_audit(requested, onnx_weight_tensors(out), allow_partial=bool(q and q.allow_partial),
                           excluded_nodes=set(quant.get("excluded") or ()))
        return Variant(artifact="model.onnx", format="onnx", files=files, quantization=quant, audit=audit,
                       io=onnx_io_contract(out), notes=notes, details=details)

    def _fp16(self, src: Path, dst: Path) -> dict:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(src))
        try:
            with _quiet():
                converted = convert_float_to_float16(model, keep_io_types=True)
        except Exception as e:
            raise BuildError(f"onnxruntime fp16 conversion failed: {e}") from e
        onnx.save(converted, str(dst))
        return {"summary": "fp16 weights and compute (float32 inputs/outputs kept)", "scheme": "fp16",
                "weights": "float16", "activations": "float16",
                "tool": f"onnxruntime.transformers.float16 {_version('onnxruntime')}"}

    def _dynamic(self, ctx: BuildContext, src: Path, dst: Path) -> dict:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = ctx.recipe.quantize
        per_channel = q.granularity == "per_channel"
        exclude = self._resolve_exclude(ctx, src)
        try:
            with _quiet():
                quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                                 nodes_to_exclude=exclude)
        except Exception as e:
            raise BuildError(f"onnxruntime quantize_dynamic failed: {e}") from e
        gran = "per-channel" if per_channel else "per-tensor"
        return {"summary": f"int8 dynamic: weights int8 {gran} (symmetric), activations quantized to uint8 at run time",
                "scheme": "dynamic", "granularity": gran.replace("-", "_"), "weights": "int8",
                "activations": "uint8 (dynamic)", "calibration_samples": 0, "excluded": exclude,
                "tool": f"onnxruntime.quantization {_version('onnxruntime')}"}

    def _static(self, ctx: BuildContext, src: Path, dst: Path) -> tuple[dict, list[str]]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        q = ctx.recipe.quantize
        pre = ctx.work_dir / "preprocessed.onnx"
        try:
            with _quiet():
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as e:  # noqa: BLE001 - pre-processing is an optimization
            log.warning("quant_pre_process failed (%s); quantizing the prepared graph as is", e)
            shutil.copyfile(src, pre)
        calib = ctx.calibration_inputs()
        samples = len(next(iter(calib.values())))
        reader = _Reader(calib)
        exclude = self._resolve_exclude(ctx, pre)
        act = QuantType.QUInt8 if q.activations == "uint8" else QuantType.QInt8
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[q.method]
        per_channel = q.granularity == "per_channel"
        try:
            with _quiet():
                quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                activation_type=act, weight_type=QuantType.QInt8, calibrate_method=method,
                                nodes_to_exclude=exclude,
                                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        except Exception as e:
            raise BuildError(f"onnxruntime quantize_static failed: {e}") from e
        gran = "per-channel" if per_channel else "per-tensor"
        a = "A8" if q.activations in ("int8", "uint8") else "A?"
        summary = (f"int8 static QDQ {gran} W8{a} (weights int8 symmetric, activations {q.activations} asymmetric), "
                   f"calibrated on {samples} samples ({q.method})")
        if exclude:
            summary += f", {len(exclude)} node(s) kept in float"
        return ({"summary": summary, "scheme": "static", "format": "QDQ", "granularity": gran.replace("-", "_"),
                 "weights": "int8", "activations": q.activations, "calibration_samples": samples,
                 "calibration_method": q.method, "excluded": exclude,
                 "tool": f"onnxruntime.quantization {_version('onnxruntime')}"}, exclude)

    def _resolve_exclude(self, ctx: BuildContext, model_path: Path) -> list[str]:
        """Node names to keep in float: listed names/op types, plus output producers if asked."""
        import onnx

        q = ctx.recipe.quantize
        model = onnx.load(str(model_path))
        wanted = set(q.exclude) if isinstance(q.exclude, tuple) else set()
        wanted |= set(ctx.exclude_extra)
        names = [n.name for n in model.graph.node if n.name in wanted or n.op_type in wanted]
        if q.keep_outputs_float:
            outputs = {o.name for o in model.graph.output}
            names += _producers_of(model.graph, outputs)
        return sorted(set(names))

    def _to_ort(self, onnx_path: Path, work: Path) -> str:
        """ORT-format model for ONNX Runtime Mobile, written next to the .onnx (see ``convert_to_ort``)."""
        from mbuild.targets.onnxruntime.ort_format import convert_to_ort

        convert_to_ort(onnx_path, onnx_path.parent / "model.ort")
        return "model.ort"

    # -- run ---------------------------------------------------------------------------------------
    def run(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray]) -> RunResult:
        from mbuild.sources.onnx import run_session, session

        sess = session(artifact)
        outputs, latencies = run_session(sess, inputs, list(ctx.manifest.outputs), timed=True)
        return RunResult(outputs=outputs, latency_ms=latencies,
                         runtime=f"onnxruntime {_version('onnxruntime')} (CPUExecutionProvider, 1 thread)")

    def also_check(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray],
                   outputs: dict[str, np.ndarray]) -> dict:
        """The target's second consumers on the same .onnx, each judged on its own (never the check's verdict)."""
        from mbuild.targets.onnxruntime.opencv import check_with_opencv

        cfg = ctx.options if isinstance(ctx.options, OnnxRuntimeConfig) else self.parse_options(ctx.target)
        return {name: check_with_opencv(ctx, artifact, inputs, outputs) for name in cfg.also_check}

    # -- lint --------------------------------------------------------------------------------------
    def lint(self, ctx: BuildContext, artifact: Path) -> list[LintResult]:
        """ONNX Runtime's mobile usability checker: how much the NNAPI and Core ML EPs could take."""
        import onnx

        from mbuild.workers.families import import_usability_checker

        uc = import_usability_checker()

        model = onnx.load(str(artifact))
        results = []
        checks = [("ort_nnapi_ep", lambda m: uc.check_nnapi_partitions(m, True)),
                  ("ort_coreml_ep", lambda m: uc.check_coreml_partitions(m, True, "coreml_supported_mlprogram_ops.md"))]
        for name, check in checks:
            try:
                with _quiet():
                    info = check(model)
            except Exception as e:  # noqa: BLE001 - the checker is advisory
                results.append(LintResult(name=name, kind="static estimate", verdict="unknown",
                                          details={"error": str(e)}))
                continue
            coverage = info.num_supported_nodes / info.num_nodes if info.num_nodes else None
            suit = info.suitability().name.lower()
            verdict = {"yes": "clean", "maybe": "partial", "no": "unsupported"}[suit]
            offenders = [{"op": op, "reason": "no kernel in this execution provider"} for op in sorted(info.unsupported_ops)]
            results.append(LintResult(name=name, kind="static estimate", verdict=verdict,
                                      coverage=round(coverage, 4) if coverage is not None else None,
                                      ops_total=info.num_nodes, offenders=offenders,
                                      details={"partitions": info.num_partitions, "suitability": suit,
                                               "tool": "onnxruntime.tools.mobile_helpers.usability_checker"}))
        return results


    # -- error attribution -------------------------------------------------------------------------
    def attribute_error(self, ctx: BuildContext, artifact: Path, inputs: dict[str, np.ndarray]) -> dict:
        """Rank activations by the noise their own quantization adds (ONNX Runtime's QDQ debugging tools).

        Each entry names the node producing the activation and the nodes to keep in float so that
        activation is not quantized (its producer and consumers), which is what ``exclude: auto`` uses.
        """
        import onnx
        from onnxruntime.quantization import qdq_loss_debug as dbg

        work = ctx.out_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        float_model = work / "attr_float.onnx"
        from mbuild.sources.onnx_prepare import prepare_onnx

        prepare_onnx(ctx.canonical_onnx, float_model, {n: s.shape for n, s in ctx.manifest.inputs.items()},
                     min_opset=QDQ_MIN_OPSET)
        q = ctx.recipe.quantize
        if q is not None and q.scheme == "dynamic":
            return {"method": "none", "layers": [],
                    "note": "no activation attribution for dynamic int8: activations are quantized at run time, so "
                            "the model has no quantize/dequantize pairs to compare with the float graph"}
        count = attribution_samples(float_model)
        sample = {k: v[:count] for k, v in inputs.items()}
        acts = {}
        for label, src in (("float", float_model), ("qdq", artifact)):
            aug = work / f"attr_{label}_aug.onnx"
            with _quiet():
                dbg.modify_model_output_intermediate_tensors(str(src), str(aug))
                acts[label] = dbg.collect_activations(str(aug), _Reader(sample))
        with _quiet():
            matched = dbg.create_activation_matching(acts["qdq"], acts["float"])
        # a quantized tensor with no float twin (renamed or fused by the quantizer) cannot be compared;
        # onnxruntime's own error helper raises KeyError('float') on it, so such tensors are set aside and counted
        unmatched = sorted(k for k, v in matched.items() if "float" not in v or "pre_qdq" not in v)
        matched = {k: v for k, v in matched.items() if k not in unmatched}
        with _quiet():
            errors = dbg.compute_activation_error(matched)
        qdq = onnx.load(str(artifact)).graph
        producer = {o: n for n in qdq.node for o in n.output}
        consumers: dict[str, list] = {}
        for n in qdq.node:
            for t in n.input:
                consumers.setdefault(t, []).append(n)
        def downstream(tensor: str) -> list:
            """Nodes that read ``tensor`` after its QuantizeLinear/DequantizeLinear pair (or directly)."""
            out = []
            for c in consumers.get(tensor, []):
                if c.op_type == "QuantizeLinear":
                    out += [n for d in consumers.get(c.output[0], []) for n in consumers.get(d.output[0], [])]
                else:
                    out.append(c)
            return out

        def xmodel(tensor: str) -> float | None:
            import numpy as np

            value = errors.get(tensor, {}).get("xmodel_err")
            return float(value) if value is not None and np.isfinite(value) else None

        layers = []
        for tensor, err in errors.items():
            node = producer.get(tensor)
            before = xmodel(tensor)
            if node is None or node.op_type in ("QuantizeLinear", "DequantizeLinear") or before is None:
                continue
            readers = downstream(tensor)
            after = [x for x in (xmodel(r.output[0]) for r in readers if r.output) if x is not None]
            if not after:
                continue
            layers.append({"tensor": tensor, "node": node.name, "op": node.op_type,
                           "damage_db": round(before - min(after), 3),
                           "sqnr_db": round(float(err.get("qdq_err", float("nan"))), 3),
                           "cross_model_sqnr_db": round(before, 3),
                           "exclude": sorted({node.name, *(r.name for r in readers)})})
        layers.sort(key=lambda x: -x["damage_db"])
        result = {"method": "onnxruntime.quantization.qdq_loss_debug: float-vs-quantized SQNR of every activation; "
                            "damage_db = how much that SQNR drops from an activation to the outputs of the ops "
                            "that read its quantized copy (higher = quantizing it hurts more)",
                  "samples": len(next(iter(sample.values()))), "layers": layers[:10]}
        if unmatched:
            result["unmatched"] = (f"{len(unmatched)} quantized tensor(s) have no float counterpart and were not "
                                   f"ranked (e.g. {', '.join(unmatched[:3])})")
        return result

    def fallback_ranking(self, ctx: BuildContext, artifact: Path) -> list[dict]:
        """Weight ops nearest the outputs first: a plain ranking for when attribution cannot run."""
        import onnx

        graph = onnx.load(str(artifact)).graph
        producer = {o: n for n in graph.node for o in n.output}
        order, frontier, seen = [], [o.name for o in graph.output], set()
        while frontier:
            node = producer.get(frontier.pop(0))
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in WEIGHT_OPS:
                order.append({"tensor": node.output[0], "node": node.name, "op": node.op_type, "damage_db": None,
                              "exclude": [node.name]})
            frontier.extend(node.input)
        return order[:10]


ATTRIBUTION_BYTES = 1 << 30  # the debugging tools keep every activation of every sample, three times


def attribution_samples(model_path: Path) -> int:
    """As many samples (up to ATTRIBUTION_SAMPLES) as fit ATTRIBUTION_BYTES of collected activations."""
    import math

    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
        elements = 0
        for v in inferred.graph.value_info:
            dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
            if dims and all(d > 0 for d in dims):
                elements += math.prod(dims)
    except Exception:  # noqa: BLE001 - unknown sizes: the smallest useful sample
        return 4
    per_sample = max(1, elements) * 4 * 3
    return int(max(1, min(ATTRIBUTION_SAMPLES, ATTRIBUTION_BYTES // per_sample)))


class _Reader:
    """CalibrationDataReader over [samples, *shape] arrays."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.count = len(next(iter(arrays.values())))
        self.index = 0

    def get_next(self):
        if self.index >= self.count:
            return None
        import numpy as np

        feed = {k: np.ascontiguousarray(v[self.index]) for k, v in self.arrays.items()}
        self.index += 1
        return feed

    def rewind(self):
        self.index = 0

    def __iter__(self):
        self.rewind()
        return iter(self.get_next, None)


def _producers_of(graph, tensors: set[str]) -> list[str]:
    """Nodes producing ``tensors``, looking through trailing reshapes, concats and activations."""
    passthrough = {"Reshape", "Flatten", "Transpose", "Concat", "Squeeze", "Unsqueeze", "Identity", "Softmax",
                   "Sigmoid", "Relu", "Clip"}
    by_output = {o: n for n in graph.node for o in n.output}
    names, frontier, seen = [], list(tensors), set()
    while frontier:
        t = frontier.pop()
        node = by_output.get(t)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        names.append(node.name)
        if node.op_type in passthrough:
            frontier.extend(node.input)
    return names


def onnx_weight_tensors(path: Path):
    """Weight initializers (subgraphs included) with storage type and consuming op (through DequantizeLinear).

    Weights held in subgraphs or in ``Constant`` nodes are counted too: quantizers skip them while
    reporting success, and the audit is where that shows.
    """
    import onnx
    from onnx import helper, numpy_helper

    from mbuild.analyze import iter_graphs
    from mbuild.recipes.audit import WeightTensor

    model = onnx.load(str(path))
    graphs = list(iter_graphs(model.graph))
    consumers: dict[str, list] = {}
    for g in graphs:
        for node in g.node:
            for t in node.input:
                consumers.setdefault(t, []).append(node)
    qparams = {t for g in graphs for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for t in n.input[1:]}

    def consumer(name: str, depth: int = 0) -> tuple[str, str]:
        for node in consumers.get(name, []):
            if node.op_type in ("DequantizeLinear", "Cast", "Transpose", "Reshape") and depth < 3:
                return consumer(node.output[0], depth + 1)
            return node.op_type, node.name
        return "const", ""

    candidates = []
    for g in graphs:
        candidates += [(init, init.name, init.dims, init.data_type) for init in g.initializer]
        for node in g.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        candidates.append((attr.t, node.output[0], attr.t.dims, attr.t.data_type))
    tensors = []
    for proto, name, dims, dtype_code in candidates:
        if name in qparams or len(dims) < 2:
            continue  # scales, zero points and biases are not weights
        elements = int(math.prod(dims))
        dtype = helper.tensor_dtype_to_np_dtype(dtype_code).name if dtype_code else "unknown"
        nbytes = len(proto.raw_data) if proto.raw_data else numpy_helper.to_array(proto).nbytes
        op, node = consumer(name)
        if op in WEIGHT_OPS:
            tensors.append(WeightTensor(name, op, dtype, elements, nbytes, node))
    return tensors


def onnx_io_contract(path: Path) -> dict:
    import onnx
    from onnx import helper

    model = onnx.load(str(path))

    def describe(values):
        out = []
        for v in values:
            tt = v.type.tensor_type
            out.append({"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
                        "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]})
        return out

    inits = {i.name for i in model.graph.initializer}
    return {"inputs": describe([i for i in model.graph.input if i.name not in inits]),
            "outputs": describe(model.graph.output), "layout_changes": [], "state_tensors": []}


@contextlib.contextmanager
def _quiet():
    """Silence the converters' own prints and warnings; our reporter says what happened."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _version(dist: str) -> str:
    from mbuild._io import dist_version

    return dist_version(dist, missing="unknown")
