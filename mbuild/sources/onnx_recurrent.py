"""ONNX recurrent ops (LSTM, GRU, RNN) written out as primitive ops, one time step after another.

onnx2tf maps these ops onto Keras RNN layers, which reject shapes they do not expect (Silero
VAD's LSTM with explicit initial states fails with "initial_state ... not compatible with
cell.state_size"). Once input shapes are pinned the sequence length is usually static, and the
same arithmetic unrolled over time as MatMul/Add/Mul/Sigmoid/Tanh/Split/Gather/Concat/Reshape
converts like any feed-forward graph. Nodes that cannot be lowered exactly (variable sequence
lengths, activations with parameters, cell clipping, coupled input and forget gates, weights
computed at run time, unknown or long sequences) stay as they are; every lowering and every
refusal is returned as a sentence for the variant's report.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_STEPS = 512

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
# Activations that are one parameterless ONNX op each; the others (LeakyRelu, HardSigmoid, Affine...) are refused.
_PLAIN_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def lower_recurrent(model, max_steps: int = MAX_STEPS) -> list[str]:
    """Replace LSTM/GRU/RNN nodes of ``model`` (subgraphs included) in place; return the changes and refusals."""
    import onnx

    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - shapes already recorded in the model still serve
        inferred = model
    run = _Run(opset=opset, max_steps=max_steps, taken=_all_names(model.graph), used=_used_names(model.graph))
    _lower_graph(model.graph, inferred.graph, [], run)
    if run.weights:
        _drop_unused_initializers(model.graph, run.weights)
    return run.notes


@dataclass
class _Run:
    """State of one ``lower_recurrent`` call: names taken model-wide, names read somewhere, notes so far."""

    opset: int
    max_steps: int
    taken: set[str]
    used: set[str]
    notes: list[str] = field(default_factory=list)
    weights: set[str] = field(default_factory=set)  # initializers read by lowered nodes (dropped if now unused)

    def fresh(self, base: str) -> str:
        candidate, i = base, 1
        while candidate in self.taken:
            candidate, i = f"{base}_{i}", i + 1
        self.taken.add(candidate)
        return candidate


def _all_names(graph) -> set[str]:
    from mbuild.analyze import iter_graphs

    names: set[str] = set()
    for g in iter_graphs(graph):
        names |= {n.name for n in g.node} | {t for n in g.node for t in list(n.input) + list(n.output)}
        names |= {i.name for i in g.initializer} | {v.name for v in list(g.input) + list(g.output) + list(g.value_info)}
    names.discard("")
    return names


def _used_names(graph) -> set[str]:
    """Tensors some node reads or some graph returns, anywhere in the model (subgraphs read outer names)."""
    from mbuild.analyze import iter_graphs

    used: set[str] = set()
    for g in iter_graphs(graph):
        used |= {t for n in g.node for t in n.input} | {v.name for v in g.output}
    used.discard("")
    return used


def _lower_graph(graph, inferred, scope: list, run: _Run) -> None:
    """Lower this graph's recurrent nodes after those of its subgraphs; ``scope`` holds the enclosing graphs."""
    from onnx import AttributeProto

    own = (_shapes(inferred), {i.name: i for i in graph.initializer})
    scope = scope + [own]
    for node, inf_node in zip(graph.node, inferred.node):
        for attr, inf_attr in zip(node.attribute, inf_node.attribute):
            if attr.type == AttributeProto.GRAPH:
                _lower_graph(attr.g, inf_attr.g, scope, run)
            elif attr.type == AttributeProto.GRAPHS:
                for sub, inf_sub in zip(attr.graphs, inf_attr.graphs):
                    _lower_graph(sub, inf_sub, scope, run)
    nodes, changed = [], False
    for node in graph.node:
        if node.op_type not in _GATES or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        label = f"{node.op_type} node {node.name or node.output[0]!r}"
        result = _lower_node(node, scope, run)
        if isinstance(result, str):
            run.notes.append(f"kept {label} as it is: {result}")
            nodes.append(node)
            continue
        new_nodes, inits, summary = result
        nodes.extend(new_nodes)
        graph.initializer.extend(inits)
        _drop_value_info(graph, [o for o in node.output if o and o not in run.used])
        run.notes.append(f"lowered {label} to {len(new_nodes)} primitive ops ({summary})" if new_nodes
                         else f"removed {label}: {summary}")
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)


def _shapes(graph) -> dict[str, tuple | None]:
    """Static dims (None where unknown) of the tensors shape inference recorded in this graph."""
    shapes: dict[str, tuple | None] = {i.name: tuple(i.dims) for i in graph.initializer}
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        t = v.type.tensor_type
        if t.HasField("shape"):
            shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                                   for d in t.shape.dim)
    return shapes


def _lookup(scope: list, name: str, which: int):
    """``name`` in the innermost enclosing graph that knows it: ``which`` 0 for its shape, 1 for its initializer."""
    for level in reversed(scope):
        if name in level[which]:
            return level[which][name]
    return None


def _lower_node(node, scope: list, run: _Run):
    """The replacement (nodes, initializers, summary) for one recurrent node, or why it is kept."""
    from onnx import helper, numpy_helper

    np = _np()
    op = node.op_type
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    text = {k: (v.decode() if isinstance(v, bytes) else [s.decode() if isinstance(s, bytes) else s for s in v])
            for k, v in attrs.items() if k in ("direction", "activations")}
    if run.opset < 7:
        return f"opset {run.opset} predates the recurrent ops' current definition (7)"
    if attrs.get("clip") is not None:
        return "the 'clip' attribute (cell clipping) is set"
    if attrs.get("input_forget", 0):
        return "input_forget=1 (coupled input and forget gates)"
    direction = text.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        return f"unknown direction {direction!r}"
    dirs = 2 if direction == "bidirectional" else 1
    default = _DEFAULT_ACTIVATIONS[op]
    names = text.get("activations") or list(default) * dirs
    if len(names) != len(default) * dirs:
        return f"{len(names)} activations given, {len(default) * dirs} expected"
    if any(a.lower() not in _PLAIN_ACTIVATIONS for a in names):
        return f"activations {names} (only Sigmoid, Tanh and Relu are lowered)"
    acts = [[_PLAIN_ACTIVATIONS[a.lower()] for a in names[d * len(default):(d + 1) * len(default)]]
            for d in range(dirs)]
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        return f"unknown layout {layout}"

    ins = list(node.input) + [""] * (8 - len(node.input))
    x, w_name, r_name, b_name, lens_name, h0_name = ins[:6]
    c0_name, p_name = (ins[6], ins[7]) if op == "LSTM" else ("", "")
    consts = {}
    for role, name in (("W", w_name), ("R", r_name), ("B", b_name), ("P", p_name), ("sequence_lens", lens_name)):
        if not name:
            continue
        init = _lookup(scope, name, 1)
        if init is None:
            return f"its {role} input {name!r} is not a constant initializer"
        consts[role] = numpy_helper.to_array(init)
    if "W" not in consts or "R" not in consts:
        return "W or R is missing"
    gates = _GATES[op]
    w, r = consts["W"], consts["R"]
    if r.ndim != 3 or w.ndim != 3 or r.shape[0] != dirs or w.shape[0] != dirs:
        return f"W {list(w.shape)} / R {list(r.shape)} do not match {dirs} direction(s)"
    hidden = r.shape[2]
    if attrs.get("hidden_size", hidden) != hidden or r.shape[1] != gates * hidden or w.shape[1] != gates * hidden:
        return f"W {list(w.shape)} / R {list(r.shape)} do not match hidden_size {attrs.get('hidden_size')}"
    bias = consts.get("B")
    if bias is not None and bias.shape != (dirs, 2 * gates * hidden):
        return f"B has shape {list(bias.shape)}, expected {[dirs, 2 * gates * hidden]}"
    peep = consts.get("P")
    if peep is not None and peep.shape != (dirs, 3 * hidden):
        return f"P has shape {list(peep.shape)}, expected {[dirs, 3 * hidden]}"
    x_shape = _lookup(scope, x, 0)
    if not x_shape or len(x_shape) != 3:
        return "the shape of its input X is unknown"
    steps = x_shape[1 if layout else 0]
    if steps is None:
        return "the sequence length is not static (pin the input shapes in the manifest)"
    if steps > run.max_steps:
        return f"{steps} time steps exceed the unrolling bound of {run.max_steps}"
    if "sequence_lens" in consts and not np.all(consts["sequence_lens"] == steps):
        return f"sequence_lens {consts['sequence_lens'].tolist()} differ from the full length {steps}"

    outs = [o if o in run.used else "" for o in list(node.output) + [""] * 3][:3 if op == "LSTM" else 2]
    run.weights |= {n for n in (w_name, r_name, b_name, p_name, lens_name) if n}
    if not any(outs):
        return [], [], "none of its outputs is read"
    b = _Builder(run, node.name or f"{op}_{node.output[0]}", w.dtype)
    state_axis = 1 if layout else 0
    seq: list[list[str]] = []
    last_h: list[str] = []
    last_c: list[str] = []
    for d in range(dirs):
        h = b.gather(h0_name, d, state_axis, "h0") if h0_name else None
        c = b.gather(c0_name, d, state_axis, "c0") if c0_name else None
        cell = _Cell(b, op, hidden, acts[d], w[d], r[d], None if bias is None else bias[d],
                     None if peep is None else peep[d], attrs.get("linear_before_reset", 0))
        order = range(steps - 1, -1, -1) if direction == "reverse" or d == 1 else range(steps)
        hs = {}
        for t in order:
            h, c = cell.step(cell.project(b.gather(x, t, 1 if layout else 0, f"x{t}")), h, c)
            hs[t] = h
        seq.append([hs[t] for t in range(steps)])
        last_h.append(h)
        last_c.append(c)
    if outs[0]:
        b.stack_sequence(seq, layout, hidden, outs[0])
    if outs[1]:
        b.stack_state(last_h, layout, hidden, outs[1])
    if len(outs) > 2 and outs[2]:
        b.stack_state(last_c, layout, hidden, outs[2])
    unused = [o for o in node.output if o and o not in run.used]
    summary = f"{direction}, {steps} step(s), hidden size {hidden}"
    if unused:
        summary += f"; unused output(s) {unused} not computed"
    return b.nodes, b.inits, summary


def _np():
    import numpy

    return numpy


class _Builder:
    """Emits nodes and initializers with model-wide unique names derived from the lowered node's name."""

    def __init__(self, run: _Run, base: str, dtype):
        self.run, self.base, self.dtype = run, base, dtype
        self.nodes: list = []
        self.inits: list = []
        self._indices: dict[int, str] = {}

    def name(self, hint: str) -> str:
        return self.run.fresh(f"{self.base}_{hint}")

    def const(self, value, hint: str, dtype=None) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(_np().asarray(value, dtype=dtype or self.dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(f"{hint}_{op_type}"), **attrs))
        return out

    def gather(self, x: str, index: int, axis: int, hint: str) -> str:
        """``x`` indexed at ``index`` along ``axis``, the axis removed."""
        if index not in self._indices:
            self._indices[index] = self.const(index, f"i{index}", "int64")
        return self.op("Gather", [x, self._indices[index]], hint, axis=axis)

    def split(self, x: str, sizes: list[int], hint: str) -> list[str]:
        """``x`` [batch, sum(sizes)] cut along its last axis."""
        from onnx import helper

        outs = [self.name(f"{hint}{k}") for k in range(len(sizes))]
        name = self.name(f"{hint}_Split")
        if self.run.opset >= 13:
            sizes_name = self.const(sizes, f"{hint}_sizes", "int64")
            self.nodes.append(helper.make_node("Split", [x, sizes_name], outs, name=name, axis=1))
        else:
            self.nodes.append(helper.make_node("Split", [x], outs, name=name, axis=1, split=list(sizes)))
        return outs

    def reshape(self, x: str, shape: list[int], hint: str, out: str | None = None) -> str:
        return self.op("Reshape", [x, self.const(shape, f"{hint}_shape", "int64")], hint, out)

    def stack_sequence(self, seq: list[list[str]], layout: int, hidden: int, out: str) -> None:
        """Y: [steps, dirs, batch, hidden] (layout 0) or [batch, steps, dirs, hidden] (layout 1)."""
        steps, dirs = len(seq[0]), len(seq)
        parts = []
        for d, hs in enumerate(seq):
            joined = hs[0] if steps == 1 else self.op("Concat", hs, f"y{d}_cat", axis=layout)
            shape = [-1, steps, 1, hidden] if layout else [steps, 1, -1, hidden]
            parts.append(self.reshape(joined, shape, f"y{d}", out if dirs == 1 else None))
        if dirs > 1:
            self.op("Concat", parts, "y", out, axis=2 if layout else 1)

    def stack_state(self, states: list[str], layout: int, hidden: int, out: str) -> None:
        """Y_h / Y_c: [dirs, batch, hidden] (layout 0) or [batch, dirs, hidden] (layout 1)."""
        parts = [self.reshape(s, [-1, 1, hidden] if layout else [1, -1, hidden], f"last{d}",
                              out if len(states) == 1 else None) for d, s in enumerate(states)]
        if len(parts) > 1:
            self.op("Concat", parts, "last", out, axis=layout)


class _Cell:
    """One direction of one recurrent node: constant weights laid out for MatMul, and the step equations.

    A missing initial state is zero, so the first step simply leaves out the terms it would multiply:
    no zero tensor is built, and the batch size need not be known.
    """

    def __init__(self, b: _Builder, op: str, hidden: int, acts: list[str], w, r, bias, peep, linear_before_reset):
        np = _np()
        self.b, self.op_type, self.hidden, self.acts = b, op, hidden, acts
        self.lbr = bool(linear_before_reset)
        n = _GATES[op] * hidden
        wb = np.zeros(n, w.dtype) if bias is None else bias[:n]
        rb = np.zeros(n, w.dtype) if bias is None else bias[n:]
        self.w_t = b.const(w.T, "W")
        self.has_bias = bias is not None
        if op == "GRU":
            # Rb of the h gate is multiplied by r when linear_before_reset=1: it stays in the recurrent term.
            x_bias = np.concatenate([wb[:2 * hidden] + rb[:2 * hidden],
                                     wb[2 * hidden:] + (0 if self.lbr else rb[2 * hidden:])])
            self.rbh = rb[2 * hidden:]
        else:
            x_bias = wb + rb
        self.x_bias = b.const(x_bias, "Wb") if self.has_bias else None
        if op == "GRU" and not self.lbr:
            self.r_zr = b.const(r[:2 * hidden].T, "Rzr")
            self.r_h = b.const(r[2 * hidden:].T, "Rh")
        else:
            self.r_all = b.const(r.T, "R")
            if op == "GRU" and self.has_bias:
                self.r_bias = b.const(np.concatenate([np.zeros(2 * hidden, w.dtype), self.rbh]), "Rb")
        self.peep = None if peep is None else [b.const(peep[k * hidden:(k + 1) * hidden], f"P{k}") for k in range(3)]

    def project(self, x_t: str) -> str:
        """One step's input [batch, input] times W, plus the biases that add to it: [batch, gates*hidden].

        Per step and rank 2 on purpose: onnx2tf guesses channel layouts for rank-3 MatMuls and fails.
        """
        if self.x_bias is None:
            return self.b.op("MatMul", [x_t, self.w_t], "xw")
        return self.b.op("Gemm", [x_t, self.w_t, self.x_bias], "xw")

    def act(self, k: int, x: str, hint: str) -> str:
        return self.b.op(self.acts[k], [x], hint)

    def step(self, x_t: str, h: str | None, c: str | None) -> tuple[str, str | None]:
        if self.op_type == "LSTM":
            return self._lstm(x_t, h, c)
        if self.op_type == "GRU":
            return self._gru(x_t, h), None
        pre = x_t if h is None else self.b.op("Add", [x_t, self.b.op("MatMul", [h, self.r_all], "hr")], "pre")
        return self.act(0, pre, "h"), None

    def _lstm(self, x_t: str, h: str | None, c: str | None) -> tuple[str, str]:
        """ONNX gate order i, o, f, c; peepholes P in order i, o, f."""
        b, H = self.b, self.hidden
        g = x_t if h is None else b.op("Add", [x_t, b.op("MatMul", [h, self.r_all], "hr")], "gates")
        gi, go, gf, gc = b.split(g, [H] * 4, "g")
        if self.peep is not None and c is not None:
            gi = b.op("Add", [gi, b.op("Mul", [c, self.peep[0]], "pi")], "gi")
            gf = b.op("Add", [gf, b.op("Mul", [c, self.peep[2]], "pf")], "gf")
        c_new = b.op("Mul", [self.act(0, gi, "i"), self.act(1, gc, "cand")], "ig")
        if c is not None:
            c_new = b.op("Add", [b.op("Mul", [self.act(0, gf, "f"), c], "fc"), c_new], "c")
        if self.peep is not None:
            go = b.op("Add", [go, b.op("Mul", [c_new, self.peep[1]], "po")], "go")
        h_new = b.op("Mul", [self.act(0, go, "o"), self.act(2, c_new, "hc")], "h")
        return h_new, c_new

    def _gru(self, x_t: str, h: str | None) -> str:
        """ONNX gate order z, r, h; ``linear_before_reset`` decides where r multiplies."""
        b, H = self.b, self.hidden
        xz, xr, xh = b.split(x_t, [H] * 3, "x")
        if h is None:
            z, r = self.act(0, xz, "z"), self.act(0, xr, "r")
            if self.lbr and self.has_bias:
                xh = b.op("Add", [xh, b.op("Mul", [r, b.const(self.rbh, "Rbh")], "rh")], "nh")
            n = self.act(1, xh, "n")
            return b.op("Sub", [n, b.op("Mul", [z, n], "zn")], "h")
        if self.lbr:
            hr = b.op("MatMul", [h, self.r_all], "hr")
            if self.has_bias:
                hr = b.op("Add", [hr, self.r_bias], "hrb")
            hz, hr_, hh = b.split(hr, [H] * 3, "hg")
        else:
            hz, hr_ = b.split(b.op("MatMul", [h, self.r_zr], "hr"), [H] * 2, "hg")
        z = self.act(0, b.op("Add", [xz, hz], "gz"), "z")
        r = self.act(0, b.op("Add", [xr, hr_], "gr"), "r")
        if self.lbr:
            rh = b.op("Mul", [r, hh], "rh")
        else:
            rh = b.op("MatMul", [b.op("Mul", [r, h], "rh_in"), self.r_h], "rh")
        n = self.act(1, b.op("Add", [xh, rh], "nh"), "n")
        # h' = (1 - z) * n + z * h = n + z * (h - n)
        return b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h, n], "hn")], "zhn")], "h")


def _drop_value_info(graph, names: list[str]) -> None:
    if not names:
        return
    keep = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(keep)


def _drop_unused_initializers(graph, candidates: set[str]) -> None:
    """Remove the lowered nodes' weight initializers nothing reads any more (the lowered copies replace them)."""
    from mbuild.analyze import iter_graphs

    used = _used_names(graph)
    for g in iter_graphs(graph):
        inputs = {v.name for v in g.input}  # an initializer that is also an input only sets a default: keep it
        keep = [i for i in g.initializer if i.name not in candidates or i.name in used or i.name in inputs]
        if len(keep) != len(g.initializer):
            del g.initializer[:]
            g.initializer.extend(keep)
