"""``also_check: [opencv]`` on onnxruntime targets: the same .onnx through the real cv2.dnn, judged on its own."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("cv2")

from mbuild.manifest import load_manifest  # noqa: E402
from mbuild.sources.build import build_source  # noqa: E402
from mbuild.steps import also_checked_line, build_variant, check_variant  # noqa: E402
from mbuild.targets import get_runtime  # noqa: E402
from mbuild.targets.base import BuildContext  # noqa: E402
from tests.conftest import DIGITS_CPU  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TARGETS = """\
targets:
  cpu-fp32: {runtime: onnxruntime, recipe: fp32, ort_format: false, also_check: [opencv]}
  cpu-int8: {runtime: onnxruntime, recipe: int8, ort_format: false, also_check: [opencv]}
  cpu-fp16: {runtime: onnxruntime, recipe: fp16, ort_format: false, also_check: [opencv]}
  cpu-plain: {runtime: onnxruntime, recipe: fp32, ort_format: false}
"""


def _manifest_text() -> str:
    head, _, tail = DIGITS_CPU.partition("targets:\n")
    tail = tail[tail.index("validate:"):]
    return (head + TARGETS + tail).replace("../examples/", f"{REPO}/examples/")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits-opencv")
    (tmp / "digits.yaml").write_text(_manifest_text())
    manifest = load_manifest(tmp / "digits.yaml", root=REPO)
    build_source(manifest, tmp / "source")
    return manifest, tmp / "source", tmp


def _ctx(manifest, source_dir: Path, target: str, out: Path) -> BuildContext:
    t = manifest.targets[target]
    return BuildContext(manifest=manifest, target=t, recipe=manifest.recipes[t.recipe], source_dir=source_dir,
                        out_dir=out, options=get_runtime("onnxruntime").parse_options(t))


def _check(digits, target: str) -> tuple[dict, BuildContext, dict]:
    manifest, source_dir, tmp = digits
    out = tmp / target
    out.mkdir(exist_ok=True)
    ctx = _ctx(manifest, source_dir, target, out)
    record = build_variant(ctx)
    return check_variant(ctx, record), ctx, record


@pytest.fixture(scope="module")
def checked(digits):
    return {t: _check(digits, t) for t in ("cpu-fp32", "cpu-int8", "cpu-fp16")}


def test_fp32_agrees_with_the_reference_on_the_default_engine(checked):
    report, _, _ = checked["cpu-fp32"]
    entry = report["also_checked"]["opencv"]
    assert entry["status"] == "passed" and entry["engine"] == "default" and "engine_note" not in entry
    logits = entry["metrics"]["logits"]
    assert logits["top1_agreement"] == 1.0 and logits["cosine"] > 0.99999 and logits["max_abs"] < 1e-4
    assert entry["runtime"].startswith("opencv 5.0.0") and entry["vs_onnxruntime"]["logits"]["max_abs"] < 1e-4
    assert report["validation"]["status"] == "passed"


def test_qdq_int8_is_read_by_the_classic_engine_and_judged_with_the_int8_tolerance(checked):
    report, _, _ = checked["cpu-int8"]
    entry = report["also_checked"]["opencv"]
    assert entry["engine"] == "classic" and "bufidx >= 0" in entry["engine_note"]
    assert entry["status"] == "passed" and entry["metrics"]["logits"]["cosine"] > 0.99
    assert abs(entry["metrics"]["logits"]["accuracy_drop"]) <= 1.0


def test_a_model_opencv_cannot_read_is_a_finding_not_a_failure(checked):
    report, _, _ = checked["cpu-fp16"]
    entry = report["also_checked"]["opencv"]
    assert entry["status"] == "unreadable" and entry["stage"] == "read" and "metrics" not in entry
    assert entry["reason"].startswith("OpenCV 5.0.0.93 cannot read it: Node [Conv@ai.onnx]")
    assert entry["reason"].endswith("parse error: assertion failed: !inputs.empty()")
    assert "\n" not in entry["reason"] and "/io/opencv" not in entry["reason"]
    assert [a["engine"] for a in entry["attempts"]] == ["default", "classic"]
    assert report["validation"]["status"] == "passed"  # ONNX Runtime's own check stands
    assert also_checked_line(entry).startswith("unreadable (OpenCV 5.0.0.93 cannot read it:")


def test_a_constructed_model_with_an_op_opencv_lacks(checked, tmp_path):
    """ONNX Runtime runs Bernoulli; OpenCV 5.0 has no such layer in either engine: a finding naming the op."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mbuild.targets.onnxruntime.opencv import check_with_opencv

    _, ctx, _ = checked["cpu-fp32"]
    weights = numpy_helper.from_array(np.full((64, 10), 0.01, np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 64], np.int64), "s")
    nodes = [helper.make_node("Reshape", ["image", "s"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["mm"]),
             helper.make_node("Sigmoid", ["mm"], ["p"]), helper.make_node("Bernoulli", ["p"], ["logits"])]
    graph = helper.make_graph(nodes, "sampled", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], [weights, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "sampled.onnx"
    onnx.save(model, str(path))
    inputs = {k: v[:4] for k, v in ctx.validation_inputs().items()}
    ort.InferenceSession(str(path)).run(None, {"image": inputs["image"][0]})  # a valid model ONNX Runtime runs
    entry = check_with_opencv(ctx, path, inputs)
    assert entry["status"] == "unreadable" and entry["stage"] == "read"
    assert 'of type "Bernoulli"' in entry["reason"] and "\n" not in entry["reason"]


def test_external_data_missing_beside_the_model_is_named(digits, checked, tmp_path):
    import onnx

    _, ctx, record = checked["cpu-fp32"]
    model = onnx.load(str(ctx.out_dir / record["artifact"]))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    inputs = {k: v[:8] for k, v in ctx.validation_inputs().items()}
    from mbuild.targets.onnxruntime.opencv import check_with_opencv

    beside = check_with_opencv(ctx, tmp_path / "ext.onnx", inputs)
    assert beside["status"] in ("passed", "failed") and beside["metrics"]["logits"]["max_abs"] is not None
    elsewhere = tmp_path / "moved"
    elsewhere.mkdir()
    shutil.move(tmp_path / "ext.onnx", elsewhere / "ext.onnx")
    entry = check_with_opencv(ctx, elsewhere / "ext.onnx", inputs)
    assert entry == {"status": "unreadable", "runtime": "opencv 5.0.0.93", "stage": "read",
                     "reason": "its external data file ext.onnx.data is not beside ext.onnx"}


def test_no_entry_without_the_option_and_unknown_consumers_are_refused(digits):
    manifest, source_dir, tmp = digits
    report, _, _ = _check(digits, "cpu-plain")
    assert "also_checked" not in report
    from mbuild.manifest.model import TargetConfig

    bad = TargetConfig(name="x", runtime="onnxruntime", recipe="fp32", options={"also_check": ["tvm"]})
    with pytest.raises(ValueError, match="'tvm' is not a consumer mbuild runs; use one of opencv"):
        get_runtime("onnxruntime").parse_options(bad)


def test_the_option_is_in_the_check_digest_not_the_variant_digest(digits):
    from mbuild.tasks import check_task, variant_task

    manifest, _, tmp = digits
    text = (tmp / "digits.yaml").read_text()
    (tmp / "plain.yaml").write_text(text.replace(", also_check: [opencv]", ""))
    plain = load_manifest(tmp / "plain.yaml", root=REPO)

    def digest(task):
        return task["uptodate"][0].config

    assert digest(variant_task(manifest, "cpu-fp32")) == digest(variant_task(plain, "cpu-fp32"))
    assert digest(check_task(manifest, "cpu-fp32")) != digest(check_task(plain, "cpu-fp32"))
    assert digest(check_task(manifest, "cpu-plain")) == digest(check_task(plain, "cpu-plain"))


def test_inspect_shows_the_second_opinion_under_each_output():
    from mbuild.bundle.inspect import output_lines

    doc = {"outputs": [{"name": "logits", "kind": "classification"}],
           "variants": [{"id": "cpu", "validation": {"status": "passed", "metrics": {"logits": {"cosine": 1.0}}},
                         "also_checked": {"opencv": {"status": "unreadable", "reason": "OpenCV cannot read it: X"}}},
                        {"id": "cpu2", "validation": {"status": "passed", "metrics": {"logits": {"cosine": 1.0}}},
                         "also_checked": {"opencv": {"status": "passed", "metrics": {"logits": {"cosine": 0.99999}}}}}]}
    lines = output_lines(doc)
    assert "  cpu (also checked with opencv): unreadable: OpenCV cannot read it: X" in lines
    assert "  cpu2 (also checked with opencv): passed - cosine 0.99999" in lines
