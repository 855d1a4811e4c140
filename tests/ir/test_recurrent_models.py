"""ONNX RNN / GRU / LSTM nodes (onnx.helper) on numpy and emulator against ONNX Runtime CPU.

ONNX Runtime's CPU kernels refuse layout=1 ("Batchwise recurrent operations are not supported"),
so a layout-1 model is compared with ONNX Runtime's run of the same weights in layout 0, its inputs
and outputs transposed."""
from __future__ import annotations

import numpy as np
import pytest

from .helpers import helper, numpy_helper, ort_run

import pygpu_ops as po

G = {"LSTM": 4, "GRU": 3, "RNN": 1}
BACKENDS = ["numpy", pytest.param("emulator", marks=pytest.mark.emulator)]


def build(op, S=4, B=3, E=5, H=6, direction="forward", layout=0, lens=None, lbr=0, peep=False, opset=14,
          outputs=("Y", "Y_h", "Y_c"), attrs=None, seed=0, runtime_w=False, bias=True, initial=True):
    """(model, feeds). sequence_lens is a runtime int32 input when ``lens`` is given."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    f = lambda *s: (0.6 * rng.standard_normal(s)).astype(np.float32)
    inits = {"W": f(D, G[op] * H, E), "R": f(D, G[op] * H, H)}
    if bias:
        inits["B"] = f(D, 2 * G[op] * H)
    x = f(*((B, S, E) if layout else (S, B, E))) / 0.6
    st = (B, D, H) if layout else (D, B, H)
    feeds = {"X": x}
    names = ["X", "W", "R", "B" if bias else ""]
    names.append("sl" if lens is not None else "")
    if lens is not None:
        feeds["sl"] = np.asarray(lens, np.int32)
    names.append("h0" if initial else "")
    if initial:
        feeds["h0"] = f(*st)
    if op == "LSTM":
        names.append("c0" if initial else "")
        if initial:
            feeds["c0"] = f(*st)
        if peep:
            names.append("P")
            inits["P"] = f(D, 3 * H)
    if runtime_w:
        feeds["W"] = inits.pop("W")
    while names and not names[-1]:
        names.pop()
    a = dict(direction=direction, hidden_size=H, **(attrs or {}))
    if opset >= 14:
        a["layout"] = layout
    if op == "GRU":
        a["linear_before_reset"] = lbr
    outs = list(outputs[:3 if op == "LSTM" else 2])
    node = helper.make_node(op, names, outs, **a)
    elem = {np.dtype(np.float32): 1, np.dtype(np.int32): 6}
    vi = [helper.make_tensor_value_info(n, elem[v.dtype], list(v.shape)) for n, v in feeds.items()]
    ovi = [helper.make_tensor_value_info(o, 1, [None] * (4 if o == "Y" else 3)) for o in outs if o]
    g = helper.make_graph([node], "rnn", vi, ovi, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m, feeds


def to_layout0(m, feeds):
    """The same node in layout 0 (ONNX Runtime runs only that) and its feeds transposed."""
    m0 = type(m)()
    m0.CopyFrom(m)
    for a in m0.graph.node[0].attribute:
        if a.name == "layout":
            a.i = 0
    f0 = dict(feeds)
    f0["X"] = feeds["X"].transpose(1, 0, 2).copy()
    for k in ("h0", "c0"):
        if k in feeds:
            f0[k] = feeds[k].transpose(1, 0, 2).copy()
    for vi in m0.graph.input:
        if vi.name in ("X", "h0", "c0"):
            d = vi.type.tensor_type.shape.dim
            d[0].dim_value, d[1].dim_value = d[1].dim_value, d[0].dim_value
    return m0, f0


def compare(m, feeds, backend, layout=0, tol=2e-6):
    got = po.InferenceSession(m.SerializeToString(), backend=backend).run(None, feeds)
    if layout:
        m0, f0 = to_layout0(m, feeds)
        want = ort_run(m0, f0)
        names = [o.name for o in m.graph.output]
        want = [w.transpose(2, 0, 1, 3) if n == "Y" else w.transpose(1, 0, 2) for n, w in zip(names, want)]
    else:
        want = ort_run(m, feeds)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g)
        assert g.shape == w.shape and g.dtype == w.dtype, f"output {i}: {g.shape} {g.dtype} vs {w.shape} {w.dtype}"
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=tol, err_msg=f"output {i} vs ONNX Runtime")
    return got


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_directions_and_layouts(backend, op, direction, layout):
    m, feeds = build(op, direction=direction, layout=layout, seed=len(direction) + layout)
    compare(m, feeds, backend, layout)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lens", [[4, 1, 3], [2, 4, 4]])
def test_sequence_lens(backend, op, direction, lens):
    m, feeds = build(op, direction=direction, lens=lens, seed=sum(lens))
    compare(m, feeds, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_zero_sequence_length(backend, op, direction):
    """A row of length 0: Y all 0 and, as ONNX Runtime gives, Y_h (and Y_c) 0, not initial_h."""
    m, feeds = build(op, direction=direction, lens=[3, 0, 4], seed=7)
    got = compare(m, feeds, backend)
    assert not got[0][:, :, 1].any() and not got[1][:, 1].any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_gru_linear_before_reset(backend, lbr, direction):
    m, feeds = build("GRU", direction=direction, lbr=lbr, lens=[4, 2, 3], seed=lbr)
    compare(m, feeds, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_peepholes(backend, direction):
    m, feeds = build("LSTM", direction=direction, peep=True, lens=[3, 4, 1])
    compare(m, feeds, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_defaults_opset7_odd_shapes(backend, op):
    """No B, no initial state, no sequence_lens, opset 7 (no layout attribute); S=1, B=1, H=1 and an
    odd larger shape."""
    for S, B, E, H in ((1, 1, 1, 1), (5, 7, 3, 9)):
        m, feeds = build(op, S, B, E, H, opset=7, bias=False, initial=False, seed=H)
        compare(m, feeds, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("outputs", [("Y",), ("", "Y_h"), ("", "", "Y_c"), ("Y", "", "Y_c")])
def test_output_subsets(backend, outputs):
    m, feeds = build("LSTM", direction="bidirectional", outputs=outputs, lens=[2, 4, 3])
    compare(m, feeds, backend)


def test_plan_names_the_kernels():
    m, _ = build("GRU", direction="bidirectional", lbr=0)
    sess = po.InferenceSession(m.SerializeToString(), backend="emulator")
    assert sess.graph.nodes[0].kernel == "gru:sgemm+gru_reset_lbr0+gru_update_lbr0"
    m, _ = build("LSTM")
    assert po.InferenceSession(m.SerializeToString(), backend="emulator").graph.nodes[0].kernel == "lstm:sgemm+lstm_cell"


@pytest.mark.parametrize("op,kw,match", [
    ("LSTM", {"attrs": {"activations": ["Sigmoid", "Relu", "Tanh"]}}, "activations"),
    ("GRU", {"attrs": {"activations": ["Sigmoid", "Tanh", "Sigmoid", "HardSigmoid"]}, "direction": "bidirectional"},
     "activations"),
    ("RNN", {"attrs": {"activations": ["Relu"]}}, "activations"),
    ("LSTM", {"attrs": {"clip": 3.0}}, "clip"),
    ("GRU", {"attrs": {"clip": 10.0}}, "clip"),
    ("LSTM", {"attrs": {"input_forget": 1}}, "input_forget"),
    ("LSTM", {"runtime_w": True}, "input W must be a constant"),
    ("RNN", {"runtime_w": True}, "input W must be a constant"),
])
def test_refusals_at_creation(op, kw, match):
    m, _ = build(op, **kw)
    with pytest.raises(NotImplementedError, match=match):
        po.InferenceSession(m.SerializeToString(), backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_activations_spelled_out_run(backend):
    m, feeds = build("LSTM", direction="bidirectional",
                     attrs={"activations": ["Sigmoid", "Tanh", "Tanh"] * 2})
    compare(m, feeds, backend)


def test_float64_refused():
    m, _ = build("RNN")
    m.graph.input[0].type.tensor_type.elem_type = 11
    with pytest.raises(NotImplementedError, match="float32 only"):
        po.InferenceSession(m.SerializeToString(), backend="numpy")


def test_sequence_lens_out_of_range_is_value_error():
    m, feeds = build("GRU", lens=[4, 5, 1])
    sess = po.InferenceSession(m.SerializeToString(), backend="numpy")
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        sess.run(None, feeds)
