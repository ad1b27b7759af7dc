"""Each metric on a case built to fool it, with hand-computed expectations."""
from __future__ import annotations

import numpy as np
import pytest

from mbuild.manifest.model import OutputSpec, PartSpec
from mbuild.validate import check_tolerance, compare_outputs
from mbuild.validate.defaults import default_tolerance
from mbuild.validate.detection import DetectionConfig, decode_sample, iou_matrix
from mbuild.validate.metrics import channel_snr_min
from mbuild.validate.semantics import DeclarationError, resolve
from mbuild.validate.sequence import edit_distance, sequence_metrics
from mbuild.validate.stream import run_stream


def _detector_output(rng, samples=24, classes=18, anchors=300):
    """[samples, 1, 4 + classes, anchors]: boxes in pixels 0..320 (cxcywh), scores in 0..1 mostly near 0."""
    out = np.zeros((samples, 1, 4 + classes, anchors), dtype=np.float32)
    out[:, 0, 0] = rng.uniform(40, 280, (samples, anchors))
    out[:, 0, 1] = rng.uniform(40, 280, (samples, anchors))
    out[:, 0, 2] = rng.uniform(10, 60, (samples, anchors))
    out[:, 0, 3] = rng.uniform(10, 60, (samples, anchors))
    out[:, 0, 4:] = rng.uniform(0, 0.02, (samples, classes, anchors))
    for s in range(samples):  # three real objects per image
        for a in rng.choice(anchors, 3, replace=False):
            out[s, 0, 4 + rng.integers(classes), a] = rng.uniform(0.3, 0.95)
    return out


DETECTOR = OutputSpec(name="output0", kind="detection", parts={
    "boxes": PartSpec("boxes", axis=1, range=(0, 4), format="cxcywh"),
    "scores": PartSpec("scores", axis=1, range=(4, 22))})


def test_a_concatenated_output_whose_small_range_part_is_destroyed_fails():
    rng = np.random.default_rng(0)
    ref = _detector_output(rng)
    broken = ref.copy()
    broken[:, 0, :4] += rng.normal(0, 0.3, broken[:, 0, :4].shape)
    broken[:, 0, 4:] = np.where(ref[:, 0, 4:] >= 0.63, 1.26, 0.0)  # int8 step 1.26: every score becomes 0 or 1.26
    metrics = compare_outputs({"output0": ref}, {"output0": broken}, {"output0": DETECTOR})
    m = metrics["output0"]
    assert m["cosine"] > 0.999  # the whole-tensor number looks fine ...
    assert m["parts"]["scores"]["cosine"] < 0.99  # ... the scores, on their own scale, do not
    failures, _ = check_tolerance(metrics, {"output0": default_tolerance("int8-static", "detection")})
    assert m["recall"] < 0.9 and any(f["metric"] == "recall" and f["task_metric"] for f in failures)
    assert all("output0" in f["message"] for f in failures)
    # a part gates where the tolerance names it, on its own scale
    strict = {"output0": {**default_tolerance("int8-static", "detection"), "parts": {"scores": {"cosine_min": 0.98}}}}
    part_failures = [f for f in check_tolerance(metrics, strict)[0] if f["part"]]
    assert [(f["part"], f["metric"]) for f in part_failures] == [("scores", "cosine")]
    assert part_failures[0]["message"].startswith("output0.scores: cosine = ")

    repaired = ref.copy()
    repaired[:, 0, :4] += rng.normal(0, 0.3, repaired[:, 0, :4].shape)
    repaired[:, 0, 4:] += rng.normal(0, 0.002, repaired[:, 0, 4:].shape)
    good = compare_outputs({"output0": ref}, {"output0": repaired}, {"output0": DETECTOR})
    assert good["output0"]["recall"] == 1.0 and good["output0"]["box_iou"] > 0.95
    assert check_tolerance(good, {"output0": default_tolerance("int8-static", "detection")})[0] == []


def test_detection_recall_and_iou_by_hand():
    cfg = DetectionConfig(score_threshold=0.5, iou_threshold=0.5, match_iou=0.5)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [1, 1, 11, 11]], dtype=float)
    scores = np.array([[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]])
    kept_boxes, classes, _ = decode_sample(boxes, scores, cfg)
    assert classes.tolist() == [0, 1]  # the third box is suppressed by the first (IoU 81/119 > 0.5)
    assert iou_matrix(np.array([[0, 0, 10, 10.]]), np.array([[5, 0, 15, 10.]]))[0, 0] == pytest.approx(50 / 150)
    ref = np.zeros((1, 6, 2))
    ref[0, :4, 0], ref[0, 4, 0] = [5, 5, 10, 10], 0.9  # cxcywh: box (0,0)-(10,10), class 0
    ref[0, :4, 1], ref[0, 5, 1] = [25, 25, 10, 10], 0.9  # box (20,20)-(30,30), class 1
    out = ref.copy()
    out[0, 0, 0] = 7.0  # shifted 2 px: IoU 80/120
    out[0, 5, 1] = 0.1  # the second detection is lost
    spec = OutputSpec(name="y", kind="detection", score_threshold=0.5, parts={
        "boxes": PartSpec("boxes", axis=1, range=(0, 4), format="cxcywh"), "scores": PartSpec("scores", axis=1, range=(4, 6))})
    m = compare_outputs({"y": ref[:, None][:, 0][None]}, {"y": out[None]}, {"y": spec})["y"]
    assert m["recall"] == 0.5 and m["precision"] == 1.0
    assert m["box_iou"] == pytest.approx(80 / 120, abs=1e-5)
    assert m["score_error_max"] == pytest.approx(0.8, abs=1e-5) and m["worst_class"] == 1


def test_a_time_axis_is_not_taken_for_channels():
    """[1, 40, vocab] CTC output: one near-tie at one time step flips, the decoded text does not change."""
    rng = np.random.default_rng(1)
    steps, vocab, samples = 40, 300, 16
    logits = rng.normal(0, 1, (samples, 1, steps, vocab)).astype(np.float32)
    text = rng.integers(1, vocab, (samples, steps))
    for s in range(samples):
        for t in range(steps):
            logits[s, 0, t, 0 if t % 3 == 0 else text[s, t]] += 12.0  # blank every third step
    # a near-tie between a character and the blank right after the same character: argmax flips, text is equal
    char = text[0, 2]
    logits[0, 0, 2, :] = -5
    logits[0, 0, 2, char] = 12.0
    logits[0, 0, 3, 0], logits[0, 0, 3, char] = 12.0, 11.999
    out = logits + rng.normal(0, 1e-4, logits.shape).astype(np.float32)
    out[0, 0, 3, 0], out[0, 0, 3, char] = 11.999, 12.0
    spec = OutputSpec(name="seq", kind="sequence", decode="ctc", blank=0, axis=2)
    res = resolve(spec, {"seq": (1, steps, vocab)})
    assert (res.axis, res.time_axis) == (2, 1)
    m = compare_outputs({"seq": logits}, {"seq": out}, {"seq": spec})["seq"]
    assert m["exact_match"] == 1.0 and m["cer"] == 0.0
    assert m["channel_snr_db_min"] is None  # no per-time-step SNR that one near-tie would ruin
    assert check_tolerance({"seq": m}, {"seq": default_tolerance("fp16", "sequence")})[0] == []
    # a generic output without a declared axis gets no per-channel SNR at all: n/a, never a perfect-looking number
    g = compare_outputs({"g": logits}, {"g": out}, {"g": OutputSpec(name="g")})["g"]
    assert g["channel_snr_db_min"] is None


def test_sequence_error_rate_by_hand():
    assert edit_distance([1, 2, 3], [1, 2, 4]) == 1 and edit_distance([1, 2, 3], [1, 3]) == 1
    onehot = np.eye(5)[None, None]  # not used directly: build [2 samples, 1, T=4, V=5]
    ref = np.zeros((2, 1, 4, 5))
    out = np.zeros((2, 1, 4, 5))
    for s, (r, o) in enumerate([([1, 2, 3, 0], [1, 2, 4, 0]), ([2, 0, 2, 3], [2, 0, 2, 3])]):
        ref[s, 0, np.arange(4), r] = 1
        out[s, 0, np.arange(4), o] = 1
    m = sequence_metrics(ref, out, 2, 1, "ctc", 0)
    assert onehot.shape == (1, 1, 5, 5)
    assert m["exact_match"] == 0.5 and m["cer"] == pytest.approx(1 / 6)  # "123" vs "124"; "223" == "223"


def test_an_embedding_with_one_collapsed_sample_fails():
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, (100, 1, 128)).astype(np.float32)
    out = ref + rng.normal(0, 0.01, ref.shape).astype(np.float32)
    out[7] = rng.normal(0, 1, (1, 128))  # one face mapped anywhere
    spec = OutputSpec(name="emb", kind="embedding")
    m = compare_outputs({"emb": ref}, {"emb": out}, {"emb": spec})["emb"]
    assert m["embedding_cosine"] > 0.98 and m["embedding_cosine_worst"] < 0.5 and m["worst_sample"] == 7
    failures, _ = check_tolerance({"emb": m}, {"emb": default_tolerance("int8-static", "embedding")})
    assert [f["metric"] for f in failures if f["task_metric"]] == ["embedding_cosine_worst"]


def test_nearest_neighbour_agreement_by_hand():
    ref = np.array([[[1, 0]], [[0.9, 0.1]], [[0, 1]], [[0.1, 0.9]]], dtype=float)
    out = np.array([[[1, 0]], [[0.2, 0.98]], [[0, 1]], [[0.1, 0.9]]], dtype=float)  # sample 1 moved next to 3
    m = compare_outputs({"e": ref}, {"e": out}, {"e": OutputSpec(name="e", kind="embedding")})["e"]
    assert m["nn_agreement"] == 0.5  # 1 now neighbours 3, and 3 neighbours 1; 0 and 2 keep theirs


def test_a_state_error_that_only_shows_after_several_steps():
    """h' = a h + x: a variant whose 'a' is 2% off looks exact per step with the reference state fed in."""
    rng = np.random.default_rng(3)
    xs = rng.normal(0, 1, (40, 1, 8)).astype(np.float32)
    h0 = np.zeros((40, 1, 8), dtype=np.float32)

    def model(a):
        def step(feed):
            h = a * feed["h"] + feed["x"]
            return {"y": np.tanh(h), "hn": h}
        return step

    inputs = {"x": xs, "h": h0}
    ref = run_stream(model(0.97), inputs, {"hn": "h"})
    var = run_stream(model(0.99), inputs, {"hn": "h"})
    single = model(0.99)({"x": xs[:1], "h": h0[:1]})
    assert np.allclose(single["hn"], ref["hn"][:1])  # the first step is exact ...
    specs = {"y": OutputSpec(name="y", kind="regression"), "hn": OutputSpec(name="hn", kind="state", state_input="h")}
    per_step = {k: v[:, None] for k, v in ref.items()}
    m = compare_outputs(per_step, per_step, specs, streams=(ref, var))
    assert m["hn"]["cosine"] == 1.0  # ... per-sample comparison cannot see the drift ...
    assert m["hn"]["stream_cosine"] < 0.99 and m["hn"]["stream_worst_step"] > 5  # ... the stream does
    failures, _ = check_tolerance(m, {"hn": default_tolerance("fp16", "state"), "y": {}})
    assert [f["metric"] for f in failures] == ["stream_cosine"]


def test_classification_never_guesses_the_class_axis():
    spec = OutputSpec(name="prob", kind="classification")
    with pytest.raises(DeclarationError, match="several axes longer than 1"):
        resolve(spec, {"prob": (1, 2, 55, 75)})
    assert resolve(OutputSpec(name="prob", kind="classification", axis=1), {"prob": (1, 2, 55, 75)}).axis == 1
    assert resolve(OutputSpec(name="l", kind="classification"), {"l": (1, 10)}).axis == 1


def test_segmentation_iou_by_hand():
    ref = np.zeros((1, 1, 2, 2, 2))
    out = np.zeros((1, 1, 2, 2, 2))
    ref[0, 0, 1, 0, :] = 1  # class 1 on the top row
    ref[0, 0, 0, 1, :] = 1
    out[0, 0, 1, 0, 0] = 1  # the variant keeps one of the two class-1 pixels
    out[0, 0, 0, 0, 1] = out[0, 0, 0, 1, 0] = out[0, 0, 0, 1, 1] = 1
    spec = OutputSpec(name="m", kind="segmentation", axis=1)
    m = compare_outputs({"m": ref}, {"m": out}, {"m": spec})["m"]
    assert m["pixel_agreement"] == 0.75 and m["mask_iou_worst"] == pytest.approx(0.5)


def test_confident_agreement_ignores_near_ties():
    ref = np.array([[[0.244, 0.235, 0.1]], [[0.9, 0.05, 0.05]], [[0.1, 0.8, 0.1]]])
    out = np.array([[[0.235, 0.244, 0.1]], [[0.9, 0.05, 0.05]], [[0.1, 0.8, 0.1]]])
    m = compare_outputs({"p": ref}, {"p": out}, {"p": OutputSpec(name="p", kind="classification")})["p"]
    assert m["top1_agreement"] == pytest.approx(2 / 3) and m["top1_agreement_confident"] == 1.0
    assert m["confident_samples"] == 2


def test_near_silent_channels_are_measured_not_dropped():
    ref = np.zeros((50, 1, 3))
    ref[:, 0, 0] = np.linspace(0, 300, 50)  # a loud channel
    ref[:, 0, 1] = 0.001  # a near-silent one
    out = ref.copy()
    out[:, 0, 1] = 0.2  # destroyed
    snr = channel_snr_min(ref, out, 2)
    assert snr["worst_channel"] == 1 and snr["channel_snr_db_min"] < -30


def test_regression_error_in_its_own_units():
    ref = np.linspace(0, 320, 40).reshape(40, 1, 1)
    out = ref + 62.7 * (np.arange(40) == 3).reshape(40, 1, 1)
    spec = OutputSpec(name="box", kind="regression", range=(0, 320))
    m = compare_outputs({"box": ref}, {"box": out}, {"box": spec})["box"]
    assert m["range_error"] == pytest.approx(62.7 / 320, abs=1e-5)
    failures, _ = check_tolerance({"box": m}, {"box": default_tolerance("int8-static", "regression")})
    assert failures and failures[0]["metric"] == "range_error" and "box" in failures[0]["message"]
