"""Recurrent ops (LSTM, GRU, RNN) unrolled into primitive ops compute what onnxruntime computes for the originals."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mbuild.analyze import iter_graphs
from mbuild.sources.onnx_prepare import prepare_onnx
from mbuild.sources.onnx_recurrent import lower_recurrent
from tests.conftest import make_project, run_doit

RECURRENT = {"LSTM", "GRU", "RNN"}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _run(model, feed: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _ops(model) -> list[str]:
    return [n.op_type for g in iter_graphs(model.graph) for n in g.node]


def _lowered(model, **kwargs):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    notes = lower_recurrent(copy, **kwargs)
    onnx.checker.check_model(copy)
    return copy, notes


def _assert_lowered_same(model, feed: dict, reference=None) -> tuple:
    """Lower a copy; nothing recurrent may remain and every output must match (``reference``: expected outputs)."""
    lowered, notes = _lowered(model)
    assert not RECURRENT & set(_ops(lowered)), notes
    assert notes and all(n.startswith("lowered ") for n in notes), notes
    want = _run(model, feed) if reference is None else reference
    got = _run(lowered, feed)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    return lowered, notes


# ---------------------------------------------------------------- models exported by torch

def _torch_model(kind: str, layers: int, bidirectional: bool, batch_first: bool, with_state: bool,
                 dynamic_batch: bool = False):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    steps, batch, inp, hidden = 5, 2, 3, 4
    rnn = getattr(torch.nn, kind)(inp, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, *state):
            y, s = self.rnn(x, (state if kind == "LSTM" else state[0]) if state else None)
            return (y, *s) if kind == "LSTM" else (y, s)

    dirs = 2 if bidirectional else 1
    x = torch.randn(batch, steps, inp) if batch_first else torch.randn(steps, batch, inp)
    states = [torch.randn(layers * dirs, batch, hidden) for _ in range(2 if kind == "LSTM" else 1)] if with_state else []
    names = ["x", "h0", "c0"][:1 + len(states)]
    dynamic = {"x": {0 if batch_first else 1: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (x, *states), buf, dynamo=False, opset_version=17, input_names=names,
                          dynamic_axes=dynamic)
    feed = {n: t.numpy() for n, t in zip(names, [x, *states])}
    return onnx.load_from_string(buf.getvalue()), feed


@pytest.mark.parametrize("kind,layers,bidirectional,batch_first,with_state", [
    ("LSTM", 1, False, False, False),
    ("LSTM", 2, True, False, True),
    ("LSTM", 2, False, True, True),
    ("LSTM", 1, True, True, False),
    ("GRU", 1, False, False, True),
    ("GRU", 2, True, True, False),
    ("GRU", 1, True, False, True),
    ("RNN", 2, True, True, True),
])
def test_torch_exports_lower_exactly(kind, layers, bidirectional, batch_first, with_state):
    model, feed = _torch_model(kind, layers, bidirectional, batch_first, with_state)
    assert _ops(model).count(kind) == layers
    _, notes = _assert_lowered_same(model, feed)
    assert len(notes) == layers


def test_unknown_batch_size_is_fine_only_the_sequence_length_must_be_static():
    model, feed = _torch_model("LSTM", 1, True, True, False, dynamic_batch=True)
    lowered, _ = _assert_lowered_same(model, feed)
    feed3 = {"x": np.random.default_rng(1).normal(size=(3, 5, 3)).astype(np.float32)}  # another batch size
    for got, want in zip(_run(lowered, feed3), _run(model, feed3)):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_prepare_onnx_lowers_after_pinning_a_symbolic_sequence_length(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.GRU(3, 4, batch_first=True)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.randn(1, 6, 3),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y", "h"], dynamic_axes={"x": {1: "seq"}})
    (tmp_path / "a.onnx").write_bytes(buf.getvalue())
    kept = prepare_onnx(tmp_path / "a.onnx", tmp_path / "kept.onnx", {"x": (1, 6, 3)})
    assert not any("GRU" in n for n in kept) and "GRU" in _ops(onnx.load(str(tmp_path / "kept.onnx")))
    notes = prepare_onnx(tmp_path / "a.onnx", tmp_path / "b.onnx", {"x": (1, 6, 3)}, for_onnx2tf=True)
    assert any(n.startswith("lowered GRU node") and "6 step(s)" in n for n in notes), notes
    prepared = onnx.load(str(tmp_path / "b.onnx"))
    assert "GRU" not in _ops(prepared)
    feed = {"x": np.random.default_rng(0).normal(size=(1, 6, 3)).astype(np.float32)}
    for got, want in zip(_run(prepared, feed), _run(onnx.load(str(tmp_path / "a.onnx")), feed)):
        np.testing.assert_allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------- nodes built by hand (what torch never emits)

def _node_model(op: str, *, layout: int = 0, direction: str = "forward", steps: int | None = 3, batch: int = 2,
                inp: int = 4, hidden: int = 5, bias: bool = True, h0: bool = True, c0: bool = True,
                peep: bool = False, outputs=("y", "y_h", "y_c"), seq_lens: str | None = None, w_input: bool = False,
                opset: int = 17, seed: int = 0, **attrs):
    """One recurrent node with random weights; the feed is drawn in layout-0 shapes and transposed for layout 1."""
    rng = np.random.default_rng(seed)
    dirs, g = (2 if direction == "bidirectional" else 1), GATES[op]
    arrays = {"W": rng.normal(0, 0.5, (dirs, g * hidden, inp)), "R": rng.normal(0, 0.5, (dirs, g * hidden, hidden))}
    if bias:
        arrays["B"] = rng.normal(0, 0.5, (dirs, 2 * g * hidden))
    if peep:
        arrays["P"] = rng.normal(0, 0.5, (dirs, 3 * hidden))
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    t = steps or 3
    feed = {"x": rng.normal(size=(t, batch, inp)).astype(np.float32)}
    if h0:
        feed["h0"] = rng.normal(size=(dirs, batch, hidden)).astype(np.float32)
    if c0 and op == "LSTM":
        feed["c0"] = rng.normal(size=(dirs, batch, hidden)).astype(np.float32)
    if layout:
        feed = {k: v.transpose(1, 0, 2).copy() for k, v in feed.items()}
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items() if not (w_input and k == "W")]
    lens = ""
    if seq_lens in ("full", "short"):
        lens = "lens"
        inits.append(numpy_helper.from_array(np.array([t] * (batch - 1) + [t if seq_lens == "full" else t - 1],
                                                      np.int32), lens))
    elif seq_lens == "input":
        lens = "lens"
    names = ["x", "W", "R", "B" if bias else "", lens, "h0" if h0 else ""]
    if op == "LSTM":
        names += ["c0" if c0 else "", "P" if peep else ""]
    while names[-1] == "":
        names.pop()
    outs = list(outputs[:3 if op == "LSTM" else 2])
    node = helper.make_node(op, names, outs, name="rnn", hidden_size=hidden, direction=direction, **attrs)
    if layout:
        node.attribute.append(helper.make_attribute("layout", 1))

    def info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    x_shape = [batch, steps or "T", inp] if layout else [steps or "T", batch, inp]
    inputs = [info("x", x_shape)] + [info(k, list(v.shape)) for k, v in feed.items() if k != "x"]
    if w_input:
        inputs.append(info("W", list(arrays["W"].shape)))
        feed["W"] = arrays["W"]
    if seq_lens == "input":
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [batch]))
        feed["lens"] = np.full(batch, t, np.int32)
    t_dim = steps or "T"
    out_shapes = [[batch, t_dim, dirs, hidden] if layout else [t_dim, dirs, batch, hidden]]
    out_shapes += [[batch, dirs, hidden] if layout else [dirs, batch, hidden]] * 2
    graph = helper.make_graph([node], "g", inputs, [info(o, sh) for o, sh in zip(outs, out_shapes) if o], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model, feed


@pytest.mark.parametrize("op,direction,options", [
    ("LSTM", "forward", {}),
    ("LSTM", "reverse", dict(bias=False, h0=False, c0=False, outputs=("", "y_h"))),
    ("LSTM", "bidirectional", dict(peep=True)),
    ("LSTM", "forward", dict(h0=False, peep=True, outputs=("y", "", "y_c"))),
    ("LSTM", "reverse", dict(c0=False, activations=["Sigmoid", "Tanh", "Tanh"], input_forget=0)),
    ("LSTM", "bidirectional", dict(steps=1, h0=False, opset=11)),
    ("LSTM", "forward", dict(seq_lens="full")),
    ("GRU", "forward", dict(linear_before_reset=0)),
    ("GRU", "reverse", dict(linear_before_reset=1, h0=False)),
    ("GRU", "bidirectional", dict(linear_before_reset=0, h0=False, opset=11)),
    ("GRU", "bidirectional", dict(linear_before_reset=1, bias=False)),
    ("GRU", "forward", dict(linear_before_reset=1, outputs=("y",))),
    ("RNN", "bidirectional", dict(activations=["Relu", "Tanh"])),
    ("RNN", "reverse", dict(h0=False)),
])
def test_nodes_lower_exactly(op, direction, options):
    model, feed = _node_model(op, direction=direction, **options)
    lowered, notes = _assert_lowered_same(model, feed)
    assert not {"W", "R", "B", "P"} & {i.name for i in lowered.graph.initializer}  # the originals are dropped
    assert f"{direction}, {options.get('steps', 3)} step(s)" in notes[0]


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_layout_1_matches_layout_0(op, direction):
    """onnxruntime has no batch-first kernels: the reference is the same node in layout 0, transposed."""
    options = dict(peep=True) if op == "LSTM" else dict(linear_before_reset=1) if op == "GRU" else {}
    model0, feed0 = _node_model(op, direction=direction, **options)
    model1, feed1 = _node_model(op, layout=1, direction=direction, **options)
    perms = [(2, 0, 1, 3), (1, 0, 2), (1, 0, 2)]
    want = [w.transpose(p) for w, p in zip(_run(model0, feed0), perms)]
    _assert_lowered_same(model1, feed1, reference=want)


def _if_model():
    """An LSTM in each branch of an If, both nodes named 'rnn': one reads the outer X, one a tensor of its branch."""
    def branch(tag: str, seed: int, inner_x: bool):
        rng = np.random.default_rng(seed)
        w = numpy_helper.from_array(rng.normal(0, 0.5, (1, 12, 4)).astype(np.float32), f"{tag}_W")
        r = numpy_helper.from_array(rng.normal(0, 0.5, (1, 12, 3)).astype(np.float32), f"{tag}_R")
        nodes = [helper.make_node("Relu", ["x"], [f"{tag}_x"], name="relu")] if inner_x else []
        nodes.append(helper.make_node("LSTM", [f"{tag}_x" if inner_x else "x", w.name, r.name], ["", f"{tag}_h"],
                                      name="rnn", hidden_size=3))
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"{tag}_h", TensorProto.FLOAT, [1, 2, 3])],
                                 [w, r])

    nodes = [helper.make_node("If", ["flag"], ["h"], then_branch=branch("then", 1, True),
                               else_branch=branch("else", 2, False))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2, 4]),
                                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_recurrent_nodes_in_if_branches_with_unique_names():
    model = _if_model()
    x = np.random.default_rng(0).normal(size=(4, 2, 4)).astype(np.float32)
    lowered, notes = _lowered(model)
    assert len(notes) == 2 and "LSTM" not in _ops(lowered), notes
    outputs = [t for g in iter_graphs(lowered.graph) for n in g.node for t in n.output]
    outputs += [i.name for g in iter_graphs(lowered.graph) for i in g.initializer]
    assert len(outputs) == len(set(outputs))
    node_names = [n.name for g in iter_graphs(lowered.graph) for n in g.node if n.op_type != "If"]
    assert len(node_names) == len(set(node_names))
    for flag in (True, False):
        feed = {"x": x, "flag": np.array(flag)}
        np.testing.assert_allclose(_run(lowered, feed)[0], _run(model, feed)[0], atol=1e-5)


@pytest.mark.parametrize("options,reason", [
    (dict(clip=1.0), "'clip'"),
    (dict(input_forget=1), "input_forget=1"),
    (dict(activations=["HardSigmoid", "Tanh", "Tanh"]), "activations"),
    (dict(seq_lens="short"), "sequence_lens [3, 2] differ from the full length 3"),
    (dict(seq_lens="input"), "sequence_lens input 'lens' is not a constant initializer"),
    (dict(w_input=True), "W input 'W' is not a constant initializer"),
    (dict(steps=None), "sequence length is not static"),
])
def test_refusals_leave_the_node_and_say_why(options, reason):
    model, _ = _node_model("LSTM", **options)
    before = model.SerializeToString()
    notes = lower_recurrent(model)
    assert model.SerializeToString() == before
    assert len(notes) == 1 and notes[0].startswith("kept LSTM node 'rnn' as it is:") and reason in notes[0], notes


def test_a_node_nobody_reads_is_removed():
    model, _ = _node_model("GRU")
    model.graph.node.append(helper.make_node("Identity", ["x"], ["x2"]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [3, 2, 4]))
    lowered, notes = _lowered(model)
    assert _ops(lowered) == ["Identity"] and notes == ["removed GRU node 'rnn': none of its outputs is read"]
    assert not lowered.graph.initializer


def test_too_many_steps_are_refused():
    model, _ = _node_model("GRU", steps=6)
    notes = lower_recurrent(model, max_steps=5)
    assert _ops(model) == ["GRU"] and "6 time steps exceed the unrolling bound of 5" in notes[0]


# ---------------------------------------------------------------- end to end through onnx2tf

LSTM_YAML = """\
mbuild: 1
name: tiny-lstm
version: 0.1.0
source:
  onnx: {model: ../models/lstm.onnx}
inputs:
  x: {shape: [1, 4, 6], dtype: float32, range: [-1, 1]}
  h0: {shape: [1, 1, 8], dtype: float32, range: [-1, 1]}
  c0: {shape: [1, 1, 8], dtype: float32, range: [-1, 1]}
outputs:
  scores: {kind: regression}
  h: {kind: generic}
data:
  validation: {synthetic: {count: 8}}
recipes:
  fp32: {precision: fp32}
targets:
  tfl: {runtime: tflite, delegate: xnnpack, recipe: fp32}
"""


def test_onnx_lstm_converts_through_onnx2tf_and_validates(tmp_path):
    """Silero-VAD-like: a batch-first LSTM with explicit states, which onnx2tf's own LSTM mapping rejects."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx2tf")
    pytest.importorskip("ai_edge_litert")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(6, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x, h0, c0):
            y, (h, _) = self.rnn(x, (h0, c0))
            return self.head(y), h

    project = make_project(tmp_path / "p", {"lstm.yaml": LSTM_YAML}, examples=())
    (project / "models").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (torch.randn(1, 4, 6), torch.randn(1, 1, 8), torch.randn(1, 1, 8)),
                          str(project / "models" / "lstm.onnx"), dynamo=False, opset_version=17,
                          input_names=["x", "h0", "c0"], output_names=["scores", "h"])
    proc = run_doit(project, "check:tiny-lstm/tfl", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    target = project / "build" / "tiny-lstm" / "targets" / "tfl"
    report = json.loads((target / "report.json").read_text())
    assert report["validation"]["status"] == "passed", report["validation"]
    assert all(m["cosine"] > 0.9999 for m in report["validation"]["metrics"].values())
