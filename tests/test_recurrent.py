"""lstm / gru / rnn on every backend against a float64 loop reference written here (one batch row,
one direction, one time step at a time, PyTorch's formulas), and against torch.nn.LSTM / GRU / RNN
where PyTorch is installed.

Tolerance (flash-attention's rule): the result's largest error against the float64 reference must
be at most twice that of the same loop reference run in float32, plus a floor of a few float32 ulps
of 1 (the outputs are bounded by 1 in magnitude, the LSTM cell state by S)."""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops as po
from pygpu_ops import recurrent

G = {"lstm": 4, "gru": 3, "rnn": 1}
FLOOR = 8 * 2.0**-23


def _sig(v):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-v))


def ref_layer(kind, x, w, r, bi, bh, h0, c0, lengths, reverse, lbr=True, peep=None, dtype=np.float64):
    """y (S, B, D, H), h_n (D, B, H), c_n (D, B, H) or None; x (S, B, E); weights stacked (D, ...)
    in PyTorch gate order; reverse: a reverse flag per direction."""
    S, B, _ = x.shape
    D, H = len(reverse), r.shape[2]
    cast = lambda a: np.asarray(a, dtype)
    x, w, r, bi, bh = map(cast, (x, w, r, bi, bh))
    y = np.zeros((S, B, D, H), dtype)
    hn, cn = cast(h0).copy(), cast(c0).copy()
    for d in range(D):
        for b in range(B):
            h, c = cast(h0[d, b]), cast(c0[d, b])
            L = int(lengths[b])
            if L == 0:          # ONNX Runtime: a row of length 0 ends with a zero state
                h, c = np.zeros_like(h), np.zeros_like(c)
            for t in (range(L - 1, -1, -1) if reverse[d] else range(L)):
                gi = w[d] @ x[t, b] + bi[d]
                gh = r[d] @ h + bh[d]
                if kind == "rnn":
                    h = np.tanh(gi + gh)
                elif kind == "gru":
                    rg = _sig(gi[:H] + gh[:H])
                    zg = _sig(gi[H:2 * H] + gh[H:2 * H])
                    if lbr:
                        n = np.tanh(gi[2 * H:] + rg * gh[2 * H:])
                    else:
                        n = np.tanh(gi[2 * H:] + r[d, 2 * H:] @ (rg * h) + bh[d, 2 * H:])
                    h = (1 - zg) * n + zg * h
                else:
                    a = gi + gh
                    i, f, g, o = (a[k * H:(k + 1) * H] for k in range(4))
                    if peep is not None:
                        p = cast(peep[d])
                        i, f = i + p[:H] * c, f + p[H:2 * H] * c
                    c = _sig(f) * c + _sig(i) * np.tanh(g)
                    if peep is not None:
                        o = o + p[2 * H:] * c
                    h = _sig(o) * np.tanh(c)
                y[t, b, d] = h
            hn[d, b], cn[d, b] = h, c
    return y, hn, (cn if kind == "lstm" else None)


def params(kind, S, B, E, H, D, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    f = lambda *s: (scale * rng.standard_normal(s)).astype(np.float32)
    return dict(x=f(S, B, E) / scale, w=f(D, G[kind] * H, E), r=f(D, G[kind] * H, H), bi=f(D, G[kind] * H),
                bh=f(D, G[kind] * H), h0=f(D, B, H), c0=f(D, B, H))


def assert_within(got, ref64, ref32, what):
    got = np.asarray(got, np.float64)
    assert got.shape == ref64.shape, f"{what}: shape {got.shape}, expected {ref64.shape}"
    bound = 2 * float(np.abs(ref32 - ref64).max(initial=0)) + FLOOR
    err = float(np.abs(got - ref64).max(initial=0))
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g} (2x a plain float32 loop + floor)"


def _call(kind, p, D, lengths=None, batch_first=False, backend="numpy", to=lambda a: a, bias=True, h0=True):
    x = p["x"].transpose(1, 0, 2).copy() if batch_first else p["x"]
    w, r = (p["w"], p["r"]) if D == 2 else (p["w"][0], p["r"][0])     # the unstacked form when unidirectional
    bi, bh = (p["bi"], p["bh"]) if D == 2 else (p["bi"][0], p["bh"][0])
    args = [to(x), to(w), to(r), to(bi) if bias else None, to(bh) if bias else None, to(p["h0"]) if h0 else None]
    if kind == "lstm":
        args.append(to(p["c0"]) if h0 else None)
    return getattr(po, kind)(*args, lengths=lengths, bidirectional=D == 2, batch_first=batch_first, backend=backend)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


SHAPES = [(1, 1, 1, 1), (4, 3, 5, 6), (5, 7, 3, 5), (3, 2, 9, 33)]   # S, B, E, H: S=1, odd B, H not a multiple of 4


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("S,B,E,H", SHAPES)
@pytest.mark.parametrize("D", [1, 2], ids=["forward", "bidirectional"])
def test_against_float64_loops(backend, to, kind, S, B, E, H, D):
    p = params(kind, S, B, E, H, D, seed=S * 31 + H)
    out = [_host(o) for o in _call(kind, p, D, backend=backend, to=to)]
    lens = [S] * B
    ref = ref_layer(kind, p["x"], p["w"], p["r"], p["bi"], p["bh"], p["h0"], p["c0"], lens, (False, True)[:D])
    r32 = ref_layer(kind, p["x"], p["w"], p["r"], p["bi"], p["bh"], p["h0"], p["c0"], lens, (False, True)[:D],
                    dtype=np.float32)
    assert_within(out[0], ref[0].reshape(S, B, D * H), r32[0].reshape(S, B, D * H), "y")
    assert_within(out[1], ref[1], r32[1], "h_n")
    if kind == "lstm":
        assert_within(out[2], ref[2], r32[2], "c_n")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("D", [1, 2], ids=["forward", "bidirectional"])
def test_lengths_batch_first_and_defaults(backend, to, kind, D):
    """Mixed lengths with a 0 and a full one; batch-first input; no biases and no initial state."""
    S, B, E, H = 5, 4, 3, 7
    p = params(kind, S, B, E, H, D, seed=3)
    lengths = np.array([5, 0, 2, 1])
    out = [_host(o) for o in _call(kind, p, D, lengths=lengths, batch_first=True, backend=backend, to=to,
                                   bias=False, h0=False)]
    z = {k: np.zeros_like(p[k]) for k in ("bi", "bh", "h0", "c0")}
    ref = ref_layer(kind, p["x"], p["w"], p["r"], z["bi"], z["bh"], z["h0"], z["c0"], lengths, (False, True)[:D])
    r32 = ref_layer(kind, p["x"], p["w"], p["r"], z["bi"], z["bh"], z["h0"], z["c0"], lengths, (False, True)[:D],
                    dtype=np.float32)
    bf = lambda y: y.transpose(1, 0, 2, 3).reshape(B, S, D * H)
    assert_within(out[0], bf(ref[0]), bf(r32[0]), "y")
    assert not out[0][1].any() and not out[0][2, 2:].any(), "Y past a row's length must be 0"
    assert_within(out[1], ref[1], r32[1], "h_n")
    assert not out[1][:, 1].any(), "a row of length 0 ends with a zero state"


@pytest.mark.parametrize("reverse", [(False,), (True,), (False, True)], ids=["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("y_order", recurrent.Y_ORDERS)
@pytest.mark.parametrize("case", ["lstm_peep", "gru_lbr0", "gru_lbr1", "rnn"])
def test_layer_options(backend, to, reverse, y_order, case):
    """What only the ONNX importer reaches: a lone reverse direction, GRU linear_before_reset=0,
    LSTM peepholes, every Y layout, with lengths."""
    kind = case.split("_")[0]
    S, B, E, H = 4, 3, 2, 5
    D = len(reverse)
    p = params(kind, S, B, E, H, D, seed=11)
    peep = (0.5 * np.random.default_rng(5).standard_normal((D, 3 * H))).astype(np.float32) if case == "lstm_peep" else None
    lbr = case != "gru_lbr0"
    lengths = np.array([4, 0, 3])
    L = recurrent.Layer(kind, to(p["x"]), to(p["w"]), to(p["r"]), to(p["bi"]), to(p["bh"]), to(p["h0"]),
                        to(p["c0"]) if kind == "lstm" else None, None if peep is None else to(peep), lengths=lengths,
                        reverse=reverse, linear_before_reset=lbr, y_order=y_order)
    y, h, c = recurrent.run_layer(kind, backend, recurrent.check_layer(kind, L))
    args = (kind, p["x"], p["w"], p["r"], p["bi"], p["bh"], p["h0"], p["c0"], lengths, reverse)
    ref, r32 = ref_layer(*args, lbr=lbr, peep=peep), ref_layer(*args, lbr=lbr, peep=peep, dtype=np.float32)
    perm = tuple("SBDH".index(k) for k in y_order)
    assert_within(_host(y), ref[0].transpose(perm), r32[0].transpose(perm), "y")
    assert_within(_host(h), ref[1], r32[1], "h_n")
    if kind == "lstm":
        assert_within(_host(c), ref[2], r32[2], "c_n")


def test_saturating_gates_stay_finite(backend, to):
    """Pre-activations of +-1e4: sigmoid / tanh must give exact 0 / 1 / -1, never NaN (an
    exp(-v) that overflows must not become inf / inf)."""
    S, B, E, H = 3, 2, 4, 3
    p = params("lstm", S, B, E, H, 1, seed=2, scale=1.0)
    p["x"] *= 1e4
    y, h, c = (_host(o) for o in _call("lstm", p, 1, backend=backend, to=to))
    ref = ref_layer("lstm", p["x"], p["w"], p["r"], p["bi"], p["bh"], p["h0"], p["c0"], [S] * B, (False,))
    assert np.isfinite(y).all() and np.isfinite(c).all()
    np.testing.assert_allclose(y.reshape(S, B, 1, H), ref[0], atol=1e-5)


def test_empty_sequence_and_batch(backend, to):
    p = params("gru", 0, 3, 2, 4, 1)
    y, h = _call("gru", p, 1, backend=backend, to=to)
    assert _host(y).shape == (0, 3, 4)
    np.testing.assert_array_equal(_host(h), p["h0"])
    p = params("lstm", 2, 0, 2, 4, 2)
    y, h, c = _call("lstm", p, 2, backend=backend, to=to)
    assert _host(y).shape == (2, 0, 8) and _host(h).shape == (2, 0, 4)


@pytest.mark.parametrize("call,exc,match", [
    (lambda a: po.lstm(a["x"].astype(np.float64), a["w"], a["r"]), TypeError, "x has dtype float64"),
    (lambda a: po.lstm(a["x"][0], a["w"], a["r"]), ValueError, "x must be 3-D"),
    (lambda a: po.lstm(a["x"], a["w"][:5], a["r"]), ValueError, "w_ih has 5 rows; expected 4"),
    (lambda a: po.lstm(a["x"], a["w"], a["r"][:, :1]), ValueError, "w_hh has shape"),
    (lambda a: po.lstm(a["x"], a["w"], a["r"], a["b"][:3]), ValueError, "b_ih has shape"),
    (lambda a: po.lstm(a["x"], a["w"], a["r"], h0=a["h0"][:, :1]), ValueError, "h0 has shape"),
    (lambda a: po.lstm(a["x"], a["w"], a["r"], lengths=[3, 1]), ValueError, "lengths must be 3 integers"),
    (lambda a: po.lstm(a["x"], a["w"], a["r"], lengths=[3, 5, 1]), ValueError, r"lengths must lie in \[0, 4\]"),
    (lambda a: po.lstm(a["x"], a["w"], a["r"], lengths=[3.0, 1.0, 1.0]), ValueError, "lengths must be 3 integers"),
    (lambda a: po.lstm(a["x"], a["w"], a["r"], bidirectional=True), ValueError, r"w_ih has shape \(8, 2\)"),
    (lambda a: po.lstm(a["x"], a["w"], a["r"], bidirectional=1), TypeError, "bidirectional must be a bool"),
    (lambda a: po.gru(a["x"], a["w"][:6].astype(np.float64), a["r"][:6]), TypeError, "w_ih has dtype float64"),
])
def test_bad_arguments(host_backend, call, exc, match):
    S, B, E, H = 4, 3, 2, 2
    rng = np.random.default_rng(0)
    a = {"x": rng.standard_normal((S, B, E)).astype(np.float32), "w": np.ones((4 * H, E), np.float32),
         "r": np.ones((4 * H, H), np.float32), "b": np.ones(4 * H, np.float32), "h0": np.ones((1, B, H), np.float32)}
    with po.use_backend(host_backend), pytest.raises(exc, match=match):
        call(a)


# ---------------------------------------------------------------------------------------------
# PyTorch: gate order and semantics of torch.nn.LSTM / GRU / RNN
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_against_torch(host_backend, kind, bidirectional, batch_first):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    S, B, E, H = 5, 3, 4, 6
    D = 2 if bidirectional else 1
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](
        E, H, bidirectional=bidirectional, batch_first=batch_first)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, S, E) if batch_first else (S, B, E)).astype(np.float32)
    h0 = rng.standard_normal((D, B, H)).astype(np.float32)
    c0 = rng.standard_normal((D, B, H)).astype(np.float32)
    sfx = ["", "_reverse"][:D]
    stack = lambda n: np.stack([getattr(mod, n + s).detach().numpy() for s in sfx])
    state = (torch.from_numpy(h0), torch.from_numpy(c0)) if kind == "lstm" else torch.from_numpy(h0)
    with torch.no_grad():
        ty, ts = mod(torch.from_numpy(x), state)
    want = [ty.numpy()] + ([t.numpy() for t in ts] if kind == "lstm" else [ts.numpy()])
    args = [x, stack("weight_ih_l0"), stack("weight_hh_l0"), stack("bias_ih_l0"), stack("bias_hh_l0"), h0]
    got = getattr(po, kind)(*args, *([c0] if kind == "lstm" else []), bidirectional=bidirectional,
                            batch_first=batch_first, backend=host_backend)
    for g, w, name in zip(got, want, ["y", "h_n", "c_n"]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_lengths_against_torch_packed_sequence(host_backend, kind):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(1)
    S, B, E, H = 6, 4, 3, 5
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](E, H, bidirectional=True)
    x = np.random.default_rng(2).standard_normal((S, B, E)).astype(np.float32)
    lengths = np.array([3, 6, 1, 4])
    with torch.no_grad():
        packed = pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths), enforce_sorted=False)
        ty, ts = mod(packed)
        ty, _ = pad_packed_sequence(ty, total_length=S)
    stack = lambda n: np.stack([getattr(mod, n + s).detach().numpy() for s in ("", "_reverse")])
    got = getattr(po, kind)(x, stack("weight_ih_l0"), stack("weight_hh_l0"), stack("bias_ih_l0"),
                            stack("bias_hh_l0"), lengths=lengths, bidirectional=True, backend=host_backend)
    want = [ty.numpy()] + ([t.numpy() for t in ts] if kind == "lstm" else [ts.numpy()])
    for g, w, name in zip(got, want, ["y", "h_n", "c_n"]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6, err_msg=name)
