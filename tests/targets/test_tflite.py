"""Runtime ``tflite`` with the real converters: litert-torch, onnx2tf, ai-edge-quantizer, LiteRT interpreter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("ai_edge_quantizer")

from mbuild.manifest import load_manifest  # noqa: E402
from mbuild.sources.build import build_source  # noqa: E402
from mbuild.targets import get_runtime  # noqa: E402
from tests.targets._digits import (  # noqa: E402
    ONNX_SOURCE,
    PYTORCH_SOURCE,
    accuracy,
    build_and_run,
    built_source,
    digits_yaml,
    runtime_context,
)

NO_NETWORK = "http://127.0.0.1:9"  # a closed port: any download attempt fails at once
TARGETS = """cpu-fp32: {runtime: tflite, delegate: xnnpack, recipe: fp32}
  android-gpu: {runtime: tflite, delegate: gpu, recipe: fp16}
  android-nnapi: {runtime: tflite, delegate: nnapi, recipe: int8}
  android-nnapi-io: {runtime: tflite, delegate: nnapi, min_api: 30, io: int8, recipe: int8}"""


def _project(tmp: Path, source: str):
    return built_source(tmp, digits_yaml(TARGETS, source))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return _project(tmp_path_factory.mktemp("digits"), PYTORCH_SOURCE)


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    """fp32, fp16 and static int8 variants of the PyTorch digits model, run on the validation set."""
    manifest, source_dir = digits
    out = tmp_path_factory.mktemp("variants")
    return {t: build_and_run(manifest, source_dir, t, out / t) for t in ("cpu-fp32", "android-gpu", "android-nnapi")}


def test_pytorch_digits_int8_within_one_point_and_under_30_percent(built, digits):
    _, source_dir = digits
    acc = {t: accuracy(b[3].outputs, source_dir) for t, b in built.items()}
    size = {t: b[2].stat().st_size for t, b in built.items()}
    assert acc["cpu-fp32"] > 95
    assert abs(acc["android-nnapi"] - acc["cpu-fp32"]) <= 1.0
    assert abs(acc["android-gpu"] - acc["cpu-fp32"]) <= 1.0
    assert size["android-nnapi"] <= 0.30 * size["cpu-fp32"]
    assert size["android-gpu"] <= 0.55 * size["cpu-fp32"]
    _, _, _, result = built["android-nnapi"]
    assert len(result.latency_ms) == 360 and result.outputs["logits"].shape == (360, 1, 10)
    assert "ai-edge-litert" in result.runtime


def test_quantization_states_what_was_applied(built):
    q = built["android-nnapi"][1].quantization
    assert q["summary"] == "int8 static per-channel W8A8, calibrated on 200 samples"
    assert (q["scheme"], q["granularity"], q["weights"], q["activations"]) == ("static", "per_channel", "int8", "int8")
    assert q["calibration_samples"] == 200 and q["tool"].startswith("ai-edge-quantizer ")
    audit = built["android-nnapi"][1].audit
    assert audit["status"] == "full" and audit["quantized_tensors"] == audit["weight_tensors"] == 6
    fp16 = built["android-gpu"][1]
    assert fp16.quantization["weights"] == "float16" and list(fp16.audit["by_dtype"]) == ["float16"]
    assert built["cpu-fp32"][1].details["float_check"]["logits"]["cosine"] >= 0.999


def test_integer_io_records_scale_and_zero_point(digits, tmp_path):
    manifest, source_dir = digits
    _, variant, artifact, result = build_and_run(manifest, source_dir, "android-nnapi-io", tmp_path / "io")
    (inp,), (out,) = variant.io["inputs"], variant.io["outputs"]
    assert inp["dtype"] == out["dtype"] == "int8"
    assert inp["quantization"]["scale"] == pytest.approx(1 / 255, rel=1e-3)
    assert inp["quantization"]["zero_point"] == -128 and out["quantization"]["scale"] > 0
    assert "int8 inputs/outputs" in variant.quantization["summary"]
    assert accuracy(result.outputs, source_dir) > 97
    lint = get_runtime("tflite").lint(runtime_context(manifest, source_dir, "android-nnapi-io", tmp_path / "io"), artifact)
    assert lint[0].name == "nnapi" and lint[0].verdict == "clean" and lint[0].coverage == 1.0


def test_conversion_is_byte_identical(digits, built, tmp_path):
    manifest, source_dir = digits
    rt = get_runtime("tflite")
    again = rt.convert(runtime_context(manifest, source_dir, "android-nnapi", tmp_path / "again"))
    assert (tmp_path / "again" / again.artifact).read_bytes() == built["android-nnapi"][2].read_bytes()


def test_metadata_holds_name_normalization_but_no_version(built):
    from mbuild.targets.tflite.model import read_metadata

    meta = read_metadata(built["android-nnapi"][2])
    assert meta["name"] == "digits-cnn" and "version" not in meta  # release metadata is bundle.json's
    assert meta["inputs"]["image"]["range"] == [0, 1]
    assert meta["io"]["inputs"][0]["key"] == "args_0" and meta["io"]["outputs"][0]["name"] == "logits"


def test_nnapi_estimate_depends_on_api_level(built):
    from mbuild.targets.tflite.lint import nnapi_lint

    artifact = built["android-nnapi"][2]
    at27, at30 = nnapi_lint(artifact, 27), nnapi_lint(artifact, 30)
    assert at27.kind == "static estimate" and at27.verdict == "unsupported"
    assert any("API 29" in o["reason"] for o in at27.offenders)
    assert at30.verdict == "clean" and at30.coverage == 1.0


def test_gpu_lint_plain_cnn_is_clean(built, digits):
    manifest, source_dir = digits
    ctx, _, artifact, _ = built["android-gpu"]
    (report,) = get_runtime("tflite").lint(ctx, artifact)
    assert (report.name, report.verdict, report.offenders) == ("gpu_delegate", "clean", [])
    assert report.ops_total > 5


def test_gpu_lint_names_the_unsupported_op(tmp_path):
    import litert_torch
    import torch

    from mbuild.targets.tflite.convert import quiet
    from mbuild.targets.tflite.lint import gpu_lint

    class ArgMaxHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return torch.argmax(self.conv(x).mean(dim=(2, 3)), dim=1)

    path = tmp_path / "argmax.tflite"
    with quiet():
        litert_torch.convert(ArgMaxHead().eval(), (torch.zeros(1, 3, 16, 16),)).export(str(path))
    report = gpu_lint(path)
    assert report.verdict == "partial" and report.coverage < 1
    assert [o["op"] for o in report.offenders] == ["ARG_MAX"]
    assert report.details["analyzer"]["tool"]


def test_gpu_analyzer_warnings_are_parsed():
    from mbuild.targets.tflite.lint import parse_gpu_analyzer

    text = ("Subgraph#0 main(T#0) -> [T#2]\n  Op#0 CONV_2D(T#0, T#3, T#4) -> [T#1]\n"
            "  Op#1 ARG_MAX(T#1, T#5) -> [T#2]\nGPU COMPATIBILITY WARNING: Not supported op ARG_MAX\n\n"
            "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 with TFLite "
            "runtime version 2.21.0\n")
    assert parse_gpu_analyzer(text) == [{"op": "ARG_MAX", "name": "Subgraph#0 Op#1",
                                         "reason": "Not supported op ARG_MAX", "source": "analyzer"}]


def test_onnx_digits_through_onnx2tf_without_network(tmp_path, monkeypatch):
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, NO_NETWORK)
    manifest, source_dir = _project(tmp_path, ONNX_SOURCE)
    _, variant, artifact, result = build_and_run(manifest, source_dir, "android-nnapi", tmp_path / "nnapi")
    assert variant.details["converter"]["converter"] == "onnx2tf"
    assert variant.io["layout_changes"] == [{"tensor": "image", "side": "input", "from": "NCHW", "to": "NHWC",
                                             "perm": [0, 2, 3, 1]}]
    assert variant.io["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert accuracy(result.outputs, source_dir) > 97
    assert artifact.stat().st_size <= 0.30 * variant.details["float_bytes"]


def _rgb_onnx(path: Path) -> None:
    """Conv(3->4) + ReLU + global average pool: a 3-channel image model (onnx2tf's download trigger)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["scores"], name="flatten")]
    graph = helper.make_graph(nodes, "rgb", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime of any recent version loads
    onnx.save(model, str(path))


def test_onnx2tf_gets_sample_images_from_our_data(tmp_path, monkeypatch):
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, NO_NETWORK)
    _rgb_onnx(tmp_path / "rgb.onnx")
    (tmp_path / "rgb.yaml").write_text(
        "mbuild: 1\nname: rgb\nversion: 0.1.0\nsource: {onnx: {model: rgb.onnx}}\n"
        "inputs: {image: {shape: [1, 3, 16, 16], dtype: float32, range: [0, 1]}}\noutputs: {scores: {}}\n"
        "data: {validation: {synthetic: {count: 8}}}\nrecipes: {fp32: {precision: fp32}}\n"
        "targets: {gpu: {runtime: tflite, delegate: gpu, recipe: fp32}}\n")
    manifest = load_manifest(tmp_path / "rgb.yaml", root=tmp_path)
    build_source(manifest, tmp_path / "source")
    ctx, variant, artifact, result = build_and_run(manifest, tmp_path / "source", "gpu", tmp_path / "gpu")
    sample = ctx.work_dir / "onnx2tf" / "calibration_image_sample_data_20x128x128x3_float32.npy"
    assert np.load(sample).shape == (8, 16, 16, 3)
    assert variant.io["inputs"][0]["shape"] == [1, 16, 16, 3]
    assert result.outputs["scores"].shape == (8, 1, 4)


def test_requirements_and_refusals():
    from mbuild.manifest.model import QuantizeConfig, RecipeConfig, TargetConfig

    rt = get_runtime("tflite")
    nnapi = TargetConfig(name="a", runtime="tflite", recipe="x", options={"delegate": "nnapi"})
    gpu = TargetConfig(name="g", runtime="tflite", recipe="x", options={"delegate": "gpu", "min_api": 26})
    assert rt.requirements(None, nnapi) == {"platform": "android", "min_api": 27, "max_api": 34, "accelerator": "nnapi"}
    assert rt.requirements(None, gpu)["min_api"] == 26 and rt.requirements(None, gpu)["accelerator"] == "gpu"
    fp16 = RecipeConfig(name="fp16", precision="fp16")
    io8 = TargetConfig(name="n", runtime="tflite", recipe="fp16", options={"delegate": "nnapi", "io": "int8"})
    assert "needs a static int8" in rt.check_target(None, io8, fp16)
    int4 = RecipeConfig(name="w4", quantize=QuantizeConfig.from_dict({"scheme": "weight_only", "weights": "int4"}))
    assert "int8 only" in rt.check_target(None, nnapi, int4)
    with pytest.raises(ValueError, match="above max_api"):
        rt.parse_options(TargetConfig(name="b", runtime="tflite", recipe="x",
                                      options={"delegate": "nnapi", "min_api": 33, "max_api": 30}))


def test_calibration_keeps_the_global_min_max():
    """AEQ's default calibration averages min/max over samples; a rare wide sample must still set the range."""
    import keras
    import tensorflow as tf

    from mbuild.targets.tflite.quant import _aeq, _calibrate

    model = keras.Sequential([keras.Input((16,), batch_size=1, name="x"), keras.layers.Dense(8, activation="relu")])
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    signature, runner = next(iter(tf.lite.Interpreter(model_content=float_model).get_signature_list().items()))
    rng = np.random.default_rng(0)
    calib = rng.uniform(-0.1, 0.1, (32, 1, 16)).astype(np.float32)
    calib[-1] *= 10  # the one wide sample comes last, where a moving average would weigh it 5%
    quantizer, qtyping, _ = _aeq()
    qz = quantizer.Quantizer(float_model)
    qz.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 8, 8)
    plan = {"signature": signature, "inputs": [{"name": "x", "key": runner["inputs"][0], "dtype": "float32",
                                                "perm": None}]}
    qsvs = _calibrate(qz, float_model, {"x": calib}, plan)
    ranges = {name: (float(np.min(q["min"])), float(np.max(q["max"]))) for name, q in qsvs.items() if "min" in q}
    assert (float(calib.min()), float(calib.max())) in [pytest.approx(r, rel=1e-6) for r in ranges.values()], ranges


def test_io_plan_accepts_shapes_that_differ_only_by_unit_dims():
    """onnx2tf turns a scalar into [1] and [2, 1, 128] into [1, 2, 128]: same bytes, so a reshape, not an error."""
    from mbuild.errors import BuildError
    from mbuild.targets.tflite.io import _entry, from_model_layout, layout_changes, to_model_layout

    scalar = _entry("sr", "sr", {"name": "sr", "shape": [1], "dtype": np.float32}, ())
    state = _entry("stateN", "out", {"name": "out", "shape": [1, 2, 3], "dtype": np.float32}, (2, 1, 3))
    image = _entry("image", "in", {"name": "in", "shape": [1, 8, 8, 3], "dtype": np.float32}, (1, 3, 8, 8))
    assert scalar["reshape"] and state["reshape"] and "reshape" not in image and image["perm"] == [0, 2, 3, 1]
    assert to_model_layout(np.float32(16000), scalar).shape == (1,)
    y = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    np.testing.assert_array_equal(from_model_layout(y, state), y.reshape(2, 1, 3))
    changes = layout_changes({"inputs": [scalar, image], "outputs": [state]})
    assert [(c["tensor"], c.get("reshape", False)) for c in changes] == [("sr", True), ("image", False),
                                                                         ("stateN", True)]
    with pytest.raises(BuildError, match="neither the declared shape"):
        _entry("x", "x", {"name": "x", "shape": [3, 2], "dtype": np.float32}, (2, 3))
