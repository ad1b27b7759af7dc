"""Issue 8's failure modes, each reproduced by a constructed model and caught (and fixed) by a real build."""
from __future__ import annotations

import json

import onnx
import pytest

from tests.conftest import executed_tasks, make_project, run_doit
from tests.recipes import models

MANIFEST = """\
mbuild: 1
name: {name}
version: 1.0.0
source:
  onnx: {{model: ../examples/m/{name}.onnx}}
inputs:
  x: {{shape: {shape}, range: [-1, 1]}}
outputs:
  y: {kind}
data:
  calibration: {{synthetic: {{count: 64, seed: 1}}}}
  validation: {{synthetic: {{count: 64, seed: 2}}}}
recipes:
{recipes}
targets:
{targets}
"""


DETECTION = ("{kind: detection, parts: {boxes: {axis: 1, range: [0, 4], format: cxcywh, units: pixels}, "
             "scores: {axis: 1, range: [4, 24]}}}")


def _project(tmp_path, name, model, recipes, targets, shape=(1, 16), kind="{kind: generic}"):
    text = MANIFEST.format(name=name, shape=list(shape), kind=kind, recipes=recipes, targets=targets)
    project = make_project(tmp_path, {f"{name}.yaml": text}, examples=())
    (project / "examples" / "m").mkdir(parents=True)
    onnx.save(model, str(project / "examples" / "m" / f"{name}.onnx"))
    return project


def _variant(project, name, target):
    return json.loads((project / f"build/{name}/targets/{target}/variant/variant.json").read_text())


def _report(project, name, target):
    return json.loads((project / f"build/{name}/targets/{target}/report.json").read_text())


def test_constant_node_weights_are_moved_and_quantized(tmp_path):
    project = _project(tmp_path, "constw", models.constant_weights_model(),
                       "  int8: {quantize: {scheme: static}}", "  cpu: {runtime: onnxruntime, recipe: int8}")
    run_doit(project, check=True)
    v = _variant(project, "constw", "cpu")
    assert any("Constant node(s) into initializers" in n for n in v["notes"]), v["notes"]
    assert v["audit"]["status"] == "full" and v["audit"]["quantized_tensors"] == 3


def test_constant_node_weights_without_preparation_are_caught_by_the_audit(tmp_path):
    """Quantizing the raw graph exits 0 but leaves every weight float; the audit says 'none'."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mbuild.recipes.audit import audit_problem, make_audit
    from mbuild.targets.onnxruntime.runtime import onnx_weight_tensors

    raw, out = tmp_path / "raw.onnx", tmp_path / "q.onnx"
    onnx.save(models.constant_weights_model(), str(raw))
    quantize_dynamic(str(raw), str(out), weight_type=QuantType.QInt8)
    audit = make_audit("int8", onnx_weight_tensors(out))
    assert audit["status"] == "none" and audit["weight_tensors"] == 3
    assert "no weight is stored as int8" in audit_problem(audit)


def test_subgraph_weights_fail_the_build_unless_allowed(tmp_path):
    recipes = "  int8: {quantize: {scheme: dynamic}}\n  int8-partial: {quantize: {scheme: dynamic, allow_partial: true}}"
    targets = "  strict: {runtime: onnxruntime, recipe: int8}\n  lenient: {runtime: onnxruntime, recipe: int8-partial}"
    project = _project(tmp_path, "subg", models.subgraph_weights_model(), recipes, targets)
    proc = run_doit(project)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "quantization audit:" in out and "Traceback" not in out, out
    assert "variant:subg/lenient" in executed_tasks(proc.stdout)
    audit = _variant(project, "subg", "lenient")["audit"]
    assert audit["status"] in ("partial", "none") and audit["weight_tensors"] == 2
    assert {t["name"] for t in audit["float_left"]} >= {"then_w", "else_w"} - {
        n for n in ("then_w", "else_w") if audit["status"] == "partial"}


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_concatenated_ranges_are_detected_and_fixed_by_keep_outputs_float(tmp_path, runtime):
    recipes = ("  int8: {quantize: {scheme: static, granularity: per_tensor}}\n"
               "  int8-float-head: {quantize: {scheme: static, granularity: per_tensor, keep_outputs_float: true}}")
    targets = (f"  plain: {{runtime: {runtime}, recipe: int8}}\n"
               f"  fixed: {{runtime: {runtime}, recipe: int8-float-head}}")
    if runtime == "onnxruntime":  # recipe: auto must never pick the collapsed (smaller) int8
        targets += "\n  auto: {runtime: onnxruntime, recipe: auto, candidates: [int8, int8-float-head]}"
    project = _project(tmp_path, "det", models.boxes_and_scores_model(), recipes, targets, kind=DETECTION)
    proc = run_doit(project)
    plain = _report(project, "det", "plain")["validation"]
    assert plain["status"] == "failed"
    assert plain["metrics"]["y"]["cosine"] > 0.995  # the overall cosine hides the damage ...
    failed = {(f["part"], f["metric"]) for f in plain["failures"]}
    assert ("scores", "cosine") in failed or any(f["task_metric"] for f in plain["failures"]), failed  # ... the parts do not
    assert plain["metrics"]["y"]["recall"] < 0.9 and "recall" in {f["metric"] for f in plain["failures"]}
    assert "y: recall" in proc.stdout + proc.stderr
    fixed = _report(project, "det", "fixed")["validation"]
    assert fixed["status"] == "passed", fixed
    assert fixed["metrics"]["y"]["recall"] >= 0.9 and fixed["metrics"]["y"]["parts"]["scores"]["cosine"] > 0.99
    variant = _variant(project, "det", "fixed")
    assert variant["audit"]["status"] == "full" and variant["audit"]["kept_float"]
    if runtime == "onnxruntime":
        assert {"head_concat", "score_sigmoid"} <= set(variant["quantization"]["excluded"])
        search = _variant(project, "det", "auto")["search"]
        assert search["chosen"] == "int8-float-head", search
        (tried,) = [a for a in search["attempts"] if a["recipe"] == "int8"]
        assert tried["status"] == "failed" and any("recall" in f for f in tried["task_failures"])


def test_exclude_auto_finds_the_two_damaging_layers(tmp_path):
    recipes = ("  int8: {quantize: {scheme: static, granularity: per_tensor}}\n"
               "  int8-auto: {quantize: {scheme: static, granularity: per_tensor, exclude: auto, exclude_max: 4}}")
    targets = "  plain: {runtime: onnxruntime, recipe: int8}\n  auto: {runtime: onnxruntime, recipe: int8-auto}"
    project = _project(tmp_path, "outl", models.two_outlier_layers_model(), recipes, targets, shape=(1, 32))
    run_doit(project)
    plain = _report(project, "outl", "plain")["validation"]
    assert plain["status"] == "failed"
    ranked = [layer["node"] for layer in plain["attribution"]["layers"][:2]]
    assert set(ranked) == {"fc1", "fc3"}, plain["attribution"]
    v = _variant(project, "outl", "auto")
    assert {"fc1", "fc3"} <= set(v["quantization"]["excluded"])
    attempts = v["search"]["attempts"]
    assert attempts[0]["status"] == "failed" and attempts[-1]["status"] == "passed" and len(attempts) <= 5
    # fc1 alone does not help while fc3 still ruins the output: it is dropped, then kept once fc3 is float
    assert {a["tried"] for a in attempts if a.get("kept")} == {"fc1", "fc3"}
    # layers whose quantization costs nothing (negative damage) are never kept in float
    assert not {a.get("tried") for a in attempts} & {"fc0", "fc2"}
    assert any("dB" in n for n in attempts[0]["not_candidates"])
    assert _report(project, "outl", "auto")["validation"]["status"] == "passed"


def test_exclude_auto_on_tflite_meets_the_tolerance(tmp_path):
    recipes = ("  int8: {quantize: {scheme: static, granularity: per_tensor}}\n"
               "  int8-auto: {quantize: {scheme: static, granularity: per_tensor, exclude: auto, exclude_max: 6}}")
    targets = "  plain: {runtime: tflite, recipe: int8}\n  auto: {runtime: tflite, recipe: int8-auto}"
    project = _project(tmp_path, "outl", models.two_outlier_layers_model(), recipes, targets, shape=(1, 32))
    run_doit(project)
    plain = _report(project, "outl", "plain")["validation"]
    assert plain["status"] == "failed" and plain["attribution"]["layers"], plain.get("attribution")
    assert plain["attribution"]["method"].startswith("LiteRT interpreter intermediate tensors")
    v = _variant(project, "outl", "auto")
    attempts = v["search"]["attempts"]
    assert attempts[0]["status"] == "failed" and attempts[-1]["status"] == "passed"
    assert 1 <= len(v["quantization"]["excluded"]) and len(attempts) <= 7
    assert _report(project, "outl", "auto")["validation"]["status"] == "passed"
