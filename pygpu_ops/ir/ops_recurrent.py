"""ONNX ``RNN``, ``GRU`` and ``LSTM`` (opset 7+; ``layout`` from opset 14) on `pygpu_ops.recurrent`.

Each node is one layer of `pygpu_ops.recurrent` (one GEMM for every step's input projection, per
step one GEMM and one fused cell kernel; see that module). The handler:

* maps ONNX's gate order to the kernels' (PyTorch's): LSTM i, o, f, c -> i, f, g, o; GRU z, r, h ->
  r, z, n (`recurrent.GATE_ORDER_FROM_ONNX`), permuting the H-row blocks of W, R and both halves
  of B (and LSTM's peepholes P: i, o, f -> i, f, o) once, on the host, when the plan is built;
* supports ``direction`` forward / reverse / bidirectional, ``initial_h`` / ``initial_c``,
  ``sequence_lens`` (a constant or a runtime int32 tensor; rows past their length give 0 in Y and
  keep their state), GRU's ``linear_before_reset`` 0 and 1, LSTM peepholes, ``layout`` 0
  (X (S, B, E), Y (S, D, B, H), states (D, B, H)) and 1 (X (B, S, E), Y (B, S, D, H), states
  (B, D, H)), and any subset of the outputs Y, Y_h (and Y_c).

Refused at session creation (``NotImplementedError``): ``activations`` other than the defaults
(LSTM Sigmoid, Tanh, Tanh; GRU Sigmoid, Tanh; RNN Tanh, per direction), ``clip``,
``input_forget=1``, W / R / B / P that are not constants (initializers), and inputs other than
float32.
"""
from __future__ import annotations

import numpy as np

from .. import recurrent
from .ops import F32, Info, Step, Unsupported, _host_value, register

_DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "RNN": ("tanh",)}
_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}
#: LSTM peepholes P are (D, 3H) in ONNX's order i, o, f; the kernel reads i, f, o.
_PEEP_ORDER = (0, 2, 1)


def _blocks(a: np.ndarray, order, H: int, axis: int) -> np.ndarray:
    """``a`` with its H-wide blocks along ``axis`` in ``order``."""
    return np.concatenate([np.take(a, np.arange(k * H, (k + 1) * H), axis=axis) for k in order], axis=axis)


def _check_attrs(node, op_type: str, D: int) -> None:
    acts = node.attr("activations", None)
    if acts is not None:
        got = tuple(str(a).lower() for a in acts)
        if got != _DEFAULT_ACTIVATIONS[op_type] * D:
            raise Unsupported(f"activations {list(acts)}: only the defaults "
                              f"{list(_DEFAULT_ACTIVATIONS[op_type] * D)} are implemented")
    if node.attr("clip", None) is not None:
        raise Unsupported("clip is not implemented (the cell state and gates are never clipped)")
    if int(node.attr("input_forget", 0)) != 0:
        raise Unsupported("input_forget=1 (coupled input and forget gates) is not implemented")


def _recurrent(op_type: str):
    kind = op_type.lower()
    G = recurrent.GATES[kind]

    def handler(node, ins, ctx):
        ins = list(ins) + [None] * (8 - len(ins))
        x, w, r, b, lens, h0 = ins[:6]
        c0, p = (ins[6], ins[7]) if kind == "lstm" else (None, None)
        direction = node.attr("direction", "forward")
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be forward, reverse or bidirectional; got {direction!r}")
        reverse = _DIRECTIONS[direction]
        D = len(reverse)
        _check_attrs(node, op_type, D)
        layout = int(node.attr("layout", 0))
        if layout not in (0, 1):
            raise ValueError(f"layout must be 0 or 1; got {layout}")
        lbr = bool(int(node.attr("linear_before_reset", 0))) if kind == "gru" else True
        for info, name in ((x, "X"), (h0, "initial_h"), (c0, "initial_c"), (w, "W"), (r, "R"), (b, "B"), (p, "P")):
            if info is not None and info.dtype != F32:
                raise Unsupported(f"input {name} has dtype {info.dtype}; the recurrent kernels are float32 only")
        if lens is not None and lens.dtype.kind not in "iu":
            raise ValueError(f"sequence_lens must be an integer tensor; got {lens.dtype}")
        if x.rank != 3:
            raise ValueError(f"X must be 3-D; got shape {x.shape}")
        wv, rv = _host_value(w, "W"), _host_value(r, "R")
        bv = _host_value(b, "B", required=False)
        pv = _host_value(p, "P", required=False)
        if r.rank != 3 or not isinstance(r.shape[2], int):
            raise ValueError(f"R must be 3-D with a known hidden size; got shape {r.shape}")
        H = int(r.shape[2])
        hs = node.attr("hidden_size", None)
        if hs is not None and int(hs) != H:
            raise ValueError(f"hidden_size={hs} but R has shape {r.shape} (hidden size {H})")
        if tuple(r.shape) != (D, G * H, H):
            raise ValueError(f"R has shape {r.shape}; expected ({D}, {G * H}, {H}) for direction={direction}")
        S, B = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
        y_shape = (B, S, D, H) if layout else (S, D, B, H)
        st_shape = (B, D, H) if layout else (D, B, H)
        outs = [Info(y_shape, F32), Info(st_shape, F32)] + ([Info(st_shape, F32)] if kind == "lstm" else [])
        label = ctx.label(kind, recurrent.variant_label(kind, lbr))
        if wv is None or rv is None:
            raise Unsupported("W and R must be constants (initializers)")
        order = recurrent.GATE_ORDER_FROM_ONNX[kind]
        params = {"w": _blocks(np.asarray(wv), order, H, 1), "r": _blocks(np.asarray(rv), order, H, 1)}
        if bv is not None:
            bv = np.asarray(bv)
            params["b_ih"] = _blocks(bv[:, :G * H], order, H, 1)
            params["b_hh"] = _blocks(bv[:, G * H:], order, H, 1)
        if pv is not None:
            params["peep"] = _blocks(np.asarray(pv), _PEEP_ORDER, H, 1)
        on_device = {}

        def run(a):
            a = list(a) + [None] * (8 - len(a))      # trailing optional inputs left out of the node
            if not on_device:
                on_device.update(_to_backend(ctx.backend, params))
            swap = (lambda v: v) if not layout else (lambda v: None if v is None else _swap01(ctx.backend, v))
            L = recurrent.Layer(kind, a[0], on_device["w"], on_device["r"], on_device.get("b_ih"),
                                on_device.get("b_hh"), swap(a[5]), swap(a[6]) if kind == "lstm" else None,
                                on_device.get("peep"), lengths=a[4], reverse=reverse, batch_first=bool(layout),
                                linear_before_reset=lbr, y_order="BSDH" if layout else "SDBH")
            y, h, c = recurrent.run_layer(kind, ctx.backend, recurrent.check_layer(kind, L))
            return [y, swap(h)] + ([swap(c)] if kind == "lstm" else [])
        return Step(outs, label, run)
    return handler


def _to_backend(backend: str, params: dict) -> dict:
    """The permuted constants as arrays of the session's backend, made once per plan."""
    if backend != "cuda":
        return params
    from .._runtime.device import get_device

    dev = get_device("cuda")
    return {k: dev.upload(v) for k, v in params.items()}


def _swap01(backend: str, v):
    """(A, B, H) -> (B, A, H), C-contiguous, in the array's own module (layout 1's states)."""
    if backend == "cuda":
        from .._runtime.device import get_device

        return get_device("cuda").xp.ascontiguousarray(v.transpose(1, 0, 2))
    return np.ascontiguousarray(np.asarray(v).transpose(1, 0, 2))


for _op in ("RNN", "GRU", "LSTM"):
    register(_op, 7)(_recurrent(_op))
