"""Recurrent layers: ``lstm``, ``gru`` and ``rnn`` (tanh), one layer, forward / bidirectional.

How a layer runs (the structure cuDNN and other GPU libraries use):

1. One GEMM for the input projections of every time step and every direction at once:
   ``xw = X (S*B, E) @ [W_0; W_1]^T (E, D*G*H) + (b_ih + b_hh)``, G the number of gates (4 LSTM,
   3 GRU, 1 RNN). Rows stay in X's order (time-major or batch-major), so ``batch_first`` costs no
   transpose: the cell kernels read xw through a time stride and a batch stride.
2. Per time step: one batched GEMM ``hr = h (D, B, H) @ R^T (D, H, G*H)`` (batch = direction,
   the package's SGEMM kernel), then one fused cell kernel (``cuda_src/rnn/``) that applies the
   gates, the nonlinearities and the state update for every batch row and both directions
   (``gridDim.y`` = direction) and writes Y. GRU with ``linear_before_reset=0`` (ONNX's default, not
   PyTorch's) multiplies ``r * h`` by R_n, so its step is two GEMMs and two kernels (see
   ``cuda_src/rnn/gru_cell.cu``).

The NumPy backend follows the same structure in float32 (one matmul over all steps, then per step
a batched matmul and the gate arithmetic vectorized over batch rows and directions).

Gate order. The public ops take PyTorch's layout and gate order, which is also the kernels':

============  =====================  ==================  ===========================
layer         PyTorch / these ops    ONNX                 ONNX rows -> kernel rows
============  =====================  ==================  ===========================
LSTM          i, f, g, o             i, o, f, c           kernel = onnx[[0, 2, 3, 1]]
GRU           r, z, n                z, r, h              kernel = onnx[[1, 0, 2]]
RNN           (one gate)             (one gate)           identity
============  =====================  ==================  ===========================

(each letter a block of H rows of W / R / b). ONNX's importer (`pygpu_ops.ir.ops_recurrent`)
permutes the blocks with `GATE_ORDER_FROM_ONNX`.

Arguments (PyTorch's ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` with one layer):

* ``x``: (S, B, E), or (B, S, E) with ``batch_first=True``; float32.
* ``w_ih``: (G*H, E); ``w_hh``: (G*H, H); ``b_ih``, ``b_hh``: (G*H,) or None (zeros). With
  ``bidirectional=True`` each is stacked per direction, forward first: (2, G*H, E), (2, G*H, H),
  (2, G*H), i.e. ``torch.stack([weight_ih_l0, weight_ih_l0_reverse])``. A unidirectional layer
  accepts the stacked form with a leading 1 as well.
* ``h0``, ``c0``: (D, B, H) or None (zeros), D = 2 if bidirectional else 1.
* ``lengths``: None (every row has S steps) or B ints in [0, S]: row b has ``lengths[b]`` valid
  steps (what ``torch.nn.utils.rnn.pack_padded_sequence`` describes; ONNX's ``sequence_lens``).
  The reverse direction starts at the row's last valid step. Y is 0 past a row's length and the
  final state is the one after its last valid step; a row of length 0 gets zeros for h_n and c_n
  (what ONNX Runtime's RNN, GRU and LSTM give; PyTorch refuses a length of 0).

Results: ``y`` (S, B, D*H) (or (B, S, D*H) with ``batch_first``; the forward direction in the first
H features), ``h_n`` (D, B, H) and, for ``lstm``, ``c_n`` (D, B, H), as PyTorch returns them.

Numerics: float32 throughout, GEMMs accumulate in float32; sigmoid and tanh are expf / tanhf
based (within a few ulp, no fast-math intrinsics). Limits: float32 only; B*H below 2**31 - 256
(the cell kernels index a row with int); G*H and E at most ``linalg.GEMM_DIM_MAX``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import linalg
from ._runtime import backends, native, npfast, validate
from ._runtime.device import Launch, device_scope, get_device
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range

F32 = np.dtype(np.float32)

#: Gates per cell kind.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
#: ONNX gate blocks in kernel (PyTorch) order: kernel block k is ONNX block ORDER[k].
GATE_ORDER_FROM_ONNX = {"lstm": (0, 2, 3, 1), "gru": (1, 0, 2), "rnn": (0,)}

LSTM_CELL = register(Kernel("rnn/lstm_cell.cu", "lstm_cell", no_spill=True))
GRU_CELL = register(Kernel("rnn/gru_cell.cu", "gru_cell", no_spill=True))
GRU_RESET_LBR0 = register(Kernel("rnn/gru_cell.cu", "gru_reset_lbr0", no_spill=True))
GRU_UPDATE_LBR0 = register(Kernel("rnn/gru_cell.cu", "gru_update_lbr0", no_spill=True))
RNN_TANH_CELL = register(Kernel("rnn/rnn_cell.cu", "rnn_tanh_cell", no_spill=True))

_BLOCK = 256
#: The cell kernels index rows by int ``i < B*H`` and add up to a block past it.
MAX_ROWS_TIMES_HIDDEN = validate.INT32_MAX - _BLOCK

#: Orders of Y's dimensions the layer writes directly (strides in the cell kernels): PyTorch's
#: time-major (S, B, D, H) and batch-first (B, S, D, H) (= ONNX layout 1), ONNX layout 0 (S, D, B, H).
Y_ORDERS = ("SBDH", "BSDH", "SDBH")


def cell_launch(B: int, H: int, D: int) -> Launch:
    """The one place the cell kernels' launch is configured: a thread per (row, feature), one
    grid row per direction."""
    return Launch(grid=(ceil_div(B * H, _BLOCK), D), block=(_BLOCK,))


def variant_label(kind: str, linear_before_reset: bool = True) -> str:
    """The kernel label of a layer (NVTX ranges, the IR's ``kernel``)."""
    if kind == "gru" and not linear_before_reset:
        return "sgemm+gru_reset_lbr0+gru_update_lbr0"
    return f"sgemm+{ {'lstm': 'lstm_cell', 'gru': 'gru_cell', 'rnn': 'rnn_tanh_cell'}[kind]}"


@dataclass
class Layer:
    """A validated layer call in the kernels' layout (weights (D, G*H, E) / (D, G*H, H) in kernel
    gate order, biases (D, G*H) or None). Shared by the public ops and the ONNX importer."""

    kind: str
    x: object
    w: object
    r: object
    b_ih: object = None
    b_hh: object = None
    h0: object = None
    c0: object = None
    peep: object = None            # LSTM peepholes (D, 3H) in the order i, f, o
    lengths: Optional[np.ndarray] = None
    reverse: Tuple[bool, ...] = (False,)
    batch_first: bool = False
    linear_before_reset: bool = True
    y_order: str = "SBDH"

    @property
    def dims(self) -> Tuple[int, int, int, int, int]:
        """(S, B, E, H, D)."""
        S, B, E = self.x.shape if not self.batch_first else (self.x.shape[1], self.x.shape[0], self.x.shape[2])
        return int(S), int(B), int(E), int(self.r.shape[2]), len(self.reverse)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _stacked(op: str, name: str, a, D: int, tail: Tuple[int, ...]):
    """``a`` of shape ``tail`` (D == 1 only) or (D,) + tail, as (D,) + tail; None stays None."""
    if a is None:
        return None
    validate.check_same_dtype(op, "x", F32, **{name: a})
    shape = tuple(int(n) for n in a.shape)
    if shape == (D,) + tail:
        return a
    if D == 1 and shape == tail:
        return a.reshape((1,) + tail)
    want = f"({D}, {', '.join(map(str, tail))})" + (f" or {tail}" if D == 1 else "")
    raise ValueError(f"{op}: {name} has shape {shape}; expected {want}")


def check_layer(op: str, L: Layer) -> Layer:
    """Validate ``L`` (shapes, dtypes, lengths); returns it with its arrays in stacked form.
    Every backend runs the same checks, before any copy."""
    validate.check_dtype(op, "x", L.x, (np.float32,))
    validate.check_ndim(op, "x", L.x, 3, "(B, S, E)" if L.batch_first else "(S, B, E)")
    D = len(L.reverse)
    G = GATES[L.kind]
    wshape = tuple(int(n) for n in L.w.shape)
    if len(wshape) not in (2, 3):
        raise ValueError(f"{op}: w_ih must be 2-D (G*H, E) or 3-D (D, G*H, E); got shape {wshape}")
    GH = wshape[-2]
    if GH % G:
        raise ValueError(f"{op}: w_ih has {GH} rows; expected {G} * hidden_size ({G} gates)")
    H = GH // G
    S, B, E = (L.x.shape[1], L.x.shape[0], L.x.shape[2]) if L.batch_first else tuple(L.x.shape)
    S, B, E = int(S), int(B), int(E)
    L.w = _stacked(op, "w_ih", L.w, D, (GH, E))
    L.r = _stacked(op, "w_hh", L.r, D, (GH, H))
    L.b_ih = _stacked(op, "b_ih", L.b_ih, D, (GH,))
    L.b_hh = _stacked(op, "b_hh", L.b_hh, D, (GH,))
    L.h0 = _stacked(op, "h0", L.h0, D, (B, H))
    L.c0 = _stacked(op, "c0", L.c0, D, (B, H))
    L.peep = _stacked(op, "peepholes", L.peep, D, (3 * H,))
    linalg.check_gemm_dims(op, {"G*H (rows of w_ih)": D * GH, "E (input size)": E, "H (hidden size)": H})
    if B * H > MAX_ROWS_TIMES_HIDDEN:
        raise ValueError(f"{op}: batch * hidden_size is {B * H}; the cell kernels take at most {MAX_ROWS_TIMES_HIDDEN}")
    if L.lengths is not None:
        lens = L.lengths
        if hasattr(lens, "__cuda_array_interface__") and hasattr(lens, "get"):
            lens = lens.get()          # a CuPy array: B ints, read once
        lens = np.asarray(lens)
        if lens.dtype.kind not in "iu" or lens.shape != (B,):
            raise ValueError(f"{op}: lengths must be {B} integers (one per batch row); got "
                             f"{lens.dtype} array of shape {lens.shape}")
        if B and (lens.min() < 0 or lens.max() > S):
            raise ValueError(f"{op}: lengths must lie in [0, {S}] (the sequence length); got values "
                             f"from {lens.min()} to {lens.max()}")
        L.lengths = lens.astype(np.int32)
    return L


def _public(kind: str, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, bidirectional, batch_first, backend):
    op = kind
    arrays = {"x": x, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh, "h0": h0, "c0": c0}
    name = backends.resolve(op, backend, arrays)
    bidirectional = validate.check_bool(op, "bidirectional", bidirectional)
    batch_first = validate.check_bool(op, "batch_first", batch_first)
    L = check_layer(op, Layer(kind, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths=lengths,
                              reverse=(False, True) if bidirectional else (False,), batch_first=batch_first,
                              y_order="BSDH" if batch_first else "SBDH"))
    y, h, c = run_layer(op, name, L)
    S, B, _, H, D = L.dims
    y = y.reshape(y.shape[:2] + (D * H,))
    return (y, h, c) if kind == "lstm" else (y, h)


def run_layer(op: str, name: str, L: Layer):
    """(y in ``L.y_order``, h_n (D, B, H), c_n (D, B, H) or None) of a validated layer on backend ``name``."""
    arrays = {"x": L.x, "w_ih": L.w, "w_hh": L.r, "b_ih": L.b_ih, "b_hh": L.b_hh, "h0": L.h0, "c0": L.c0}
    with op_range(op, "numpy" if name == "numpy" else variant_label(L.kind, L.linear_before_reset)), \
            device_scope(op, name, arrays):
        if name == "numpy":
            return _numpy_layer(L)
        return _device_layer(get_device(name), L)


# ---------------------------------------------------------------------------------------------
# Pieces both paths share
# ---------------------------------------------------------------------------------------------
def _bias_parts(L: Layer, empty, view, D: int, GH: int, H: int):
    """(bias of the input projection (D, G*H), b_hn (D, H) or None), float32, made with the
    backend's ``empty`` and in-place array methods only (no array-module functions: the arrays
    may be CuPy's).

    The projection carries b_ih + b_hh, except GRU's b_hn under linear_before_reset = 1, which is
    multiplied by r and goes to the cell kernel instead."""
    bias = empty((D, GH), F32)
    if L.b_ih is None:
        bias.fill(0)
    else:
        bias[...] = view(L.b_ih)
    split = L.kind == "gru" and L.linear_before_reset
    bhn = empty((D, H), F32) if split else None
    if L.b_hh is None:
        if split:
            bhn.fill(0)
    else:
        bh = view(L.b_hh)
        if split:
            bias[:, :2 * H] += bh[:, :2 * H]
            bhn[...] = bh[:, 2 * H:]
        else:
            bias += bh
    return bias, bhn


def _zero_empty_rows(L: Layer, h, c) -> None:
    """Rows of length 0 end with a zero state, as in ONNX Runtime: their initial state is zeroed
    before the steps, which never touch them (one slice assignment per such row)."""
    if L.lengths is None:
        return
    for b in np.nonzero(L.lengths == 0)[0]:
        for state in (h, c):
            if state is not None:
                state[:, int(b)] = 0


def _y_strides(order: str, S: int, B: int, D: int, H: int) -> Tuple[Tuple[int, ...], Tuple[int, int, int]]:
    """(shape of Y in ``order``, its (time, direction, batch) strides in elements)."""
    ext = {"S": S, "B": B, "D": D, "H": H}
    shape = tuple(ext[c] for c in order)
    step, strides = 1, {}
    for c in reversed(order):
        strides[c] = step
        step *= ext[c]
    return shape, (strides["S"], strides["D"], strides["B"])


# ---------------------------------------------------------------------------------------------
# NumPy path
# ---------------------------------------------------------------------------------------------
def _sigmoid(v):
    # exp of a non-positive number only: no overflow, accurate in the far negative tail
    # (npfast.sigmoid: the native loop where it is built, else the same formula in NumPy)
    return npfast.sigmoid(np.asarray(v, F32))


def _mm(a, b, bias=None):
    """``a @ b (+ bias)`` in float32 for 2-D a and b: `linalg.native_sgemm` (float32 FMA chains,
    the bias added in its epilogue) where the native loops are built, else numpy.matmul."""
    from .linalg import native_sgemm

    got = native_sgemm(a, b, bias)
    if got is None:
        got = np.matmul(a, b)
        if bias is not None:
            got += bias
    return got


def _mm_dirs(r, hT):
    """(D, N, H) @ (D, H, B) per direction, by `_mm`."""
    return np.stack([_mm(r[d], hT[d]) for d in range(r.shape[0])]) if r.shape[0] > 1 else _mm(r[0], hT[0])[None]


def _numpy_layer(L: Layer):
    """The steps with the state transposed, (D, H, B), so each step's GEMM is R (G*H, H) @ h^T
    (H, B): R read in place as the long operand and only the small h^T packed, where h (B, H) @
    R^T would repack all of R (G*H x H) every step (measured for LSTM H = 512, B = 32: 0.18 vs
    0.53 ms a step), and the gates are row blocks of the (D, G*H, B) pre-activations. An LSTM
    without peepholes runs the rest of its step (bias, sum, gates, state, output row) as one
    native loop per direction (cpu_src/rnn.cpp) where it is built."""
    S, B, E, H, D = L.dims
    G = GATES[L.kind]
    GH = G * H
    x = np.asarray(L.x)
    w, r = np.asarray(L.w), np.ascontiguousarray(L.r, dtype=F32)
    bias, bhn = _bias_parts(L, np.empty, np.asarray, D, GH, H)
    every_step = L.lengths is None and B > 0
    h = np.zeros((D, B, H), F32) if L.h0 is None else np.array(L.h0, dtype=F32)
    c = None
    if L.kind == "lstm":
        c = np.zeros((D, B, H), F32) if L.c0 is None else np.array(L.c0, dtype=F32)
    lens = np.full(B, S, np.int32) if L.lengths is None else L.lengths
    _zero_empty_rows(L, h, c)
    hT = np.ascontiguousarray(h.transpose(0, 2, 1))                        # (D, H, B)
    cT = None if c is None else np.ascontiguousarray(c.transpose(0, 2, 1))
    y = np.zeros((S, D, B, H), F32)
    rev = np.array(L.reverse)[:, None]
    lib = native.lib()
    cell = lib.lstm_cell_f32 if lib is not None and L.kind == "lstm" and L.peep is None and B else None
    for s in range(S):
        valid = np.broadcast_to(s < lens[None, :], (D, B))
        t = np.where(rev, lens[None, :] - 1 - s, s).clip(0, max(S - 1, 0))   # (D, B)
        cols = _step_inputs(L, x, w, t)         # per direction (GH, B): x W^T, no bias yet
        if cell is not None:    # LSTM without peepholes: one fused native step per direction
            hr = _mm_dirs(r, hT)
            h_new, c_new = np.empty_like(hT), np.empty_like(cT)
            nt = native.threads_for(hr.nbytes)
            for d in range(D):
                col, ptr = cols[d], native.ptr       # rows of unit-stride floats (_step_inputs)
                # every_step: the cell also writes the step's (B, H) slice of y
                yp = ptr(y[t[d, 0], d]) if every_step else None
                cell(ptr(col), col.strides[0] // 4, ptr(bias[d]), ptr(hr[d]), ptr(cT[d]), ptr(h_new[d]),
                     ptr(c_new[d]), yp, H, B, nt)
            cT = c_new if every_step else np.where(valid[:, None, :], c_new, cT)
            hT = h_new if every_step else np.where(valid[:, None, :], h_new, hT)
            if not every_step:
                y[t[valid], np.nonzero(valid)[0], np.nonzero(valid)[1]] = hT.transpose(0, 2, 1)[valid]
            continue
        xs = np.stack(cols) + bias[:, :, None]                                  # (D, GH, B)
        if L.kind == "gru" and not L.linear_before_reset:
            hr = _mm_dirs(r[:, :2 * H], hT)
            rg = _sigmoid(xs[:, :H] + hr[:, :H])
            zg = _sigmoid(xs[:, H:2 * H] + hr[:, H:])
            ng = np.tanh(xs[:, 2 * H:] + _mm_dirs(r[:, 2 * H:], rg * hT))
            h_new = (1 - zg) * ng + zg * hT
        else:
            hr = _mm_dirs(r, hT)
            h_new, c_new = _numpy_cell(L, xs + (hr if L.kind != "gru" else 0), hr, hT, cT, bhn, H)
            if cT is not None:
                cT = c_new if every_step else np.where(valid[:, None, :], c_new, cT)
        hT = h_new.astype(F32, copy=False) if every_step else np.where(valid[:, None, :], h_new, hT).astype(F32)
        if every_step:    # no lengths: every row of a direction is at the same time step
            for d in range(D):
                y[t[d, 0], d] = hT[d].T
        else:
            y[t[valid], np.nonzero(valid)[0], np.nonzero(valid)[1]] = hT.transpose(0, 2, 1)[valid]
    yt = y.transpose(tuple("SDBH".index(k) for k in L.y_order))
    h = np.ascontiguousarray(hT.transpose(0, 2, 1))
    c = None if cT is None else np.ascontiguousarray(cT.transpose(0, 2, 1))
    return np.ascontiguousarray(yt), h, c


def _step_inputs(L: Layer, x, w, t):
    """A step's input projections, transposed as the state is: per direction ``W (G*H, E) @ x_t^T
    (E, B)``, (G*H, B) and contiguous, without the bias (the step adds it in cache); t (D, B) is
    the time each (direction, row) is at. Computed per step, like the recurrent product beside
    it, rather than as one (G*H, S * B) product up front: a step's columns of that were G*H rows
    S * B floats apart (16 KiB in the bench's LSTM), so the cell read 2048 rows on as many pages
    every step (121 us a step there, against 52 us from contiguous rows), and the S products of
    the step's shape measured 23.5 ms against 28 ms for the single one (W streams from L3 either
    way; the small B panel packs faster). ``x_t`` is a view of x (its rows E floats apart, which
    the GEMM packs) where every row of a direction is at the same time, else a gathered copy."""
    S, B, E, H, D = L.dims
    out = []
    for d in range(D):
        if B and (t[d] == t[d, 0]).all():
            xs = x[:, t[d, 0]] if L.batch_first else x[t[d, 0]]                  # (B, E) view
        else:
            rows = np.arange(B)
            xs = x[rows, t[d]] if L.batch_first else x[t[d], rows]              # (B, E) gathered
        out.append(_mm(w[d], xs.T))
    return out


def _numpy_cell(L: Layer, z, hr, h, c, bhn, H):
    """(h', c') of one step, transposed: the pre-activations ``z`` (D, G*H, B) (for GRU: xw only),
    h and c (D, H, B)."""
    if L.kind == "rnn":
        return np.tanh(z), None
    if L.kind == "gru":
        rg = _sigmoid(z[:, :H] + hr[:, :H])
        zg = _sigmoid(z[:, H:2 * H] + hr[:, H:2 * H])
        ng = np.tanh(z[:, 2 * H:] + rg * (hr[:, 2 * H:] + bhn[:, :, None]))
        return (1 - zg) * ng + zg * h, None
    zi, zf, zg, zo = (z[:, k * H:(k + 1) * H] for k in range(4))
    if L.peep is not None:
        p = np.asarray(L.peep, dtype=F32)[:, :, None]
        zi = zi + p[:, :H] * c
        zf = zf + p[:, H:2 * H] * c
    c_new = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zg)
    if L.peep is not None:
        zo = zo + p[:, 2 * H:] * c_new
    return _sigmoid(zo) * np.tanh(c_new), c_new


# ---------------------------------------------------------------------------------------------
# Device path (CUDA and emulator)
# ---------------------------------------------------------------------------------------------
def _gemm_into(dev, a3, b3, out3, c3=None):
    """out3 (batch, M, N) = a3 @ b3 (+ c3): the package's SGEMM through linalg's device path."""
    v = linalg.SGEMM_LADDER[-1]
    linalg._run_device(dev.name, v, a3, b3, c3, out3, tuple(out3.shape), F32, 1.0, 0.0 if c3 is None else 1.0)


def _device_layer(dev, L: Layer):
    S, B, E, H, D = L.dims
    G = GATES[L.kind]
    GH = G * H
    xp = dev.xp
    small = dev.view
    bias, bhn = _bias_parts(L, dev.empty, small, D, GH, H)
    rows = S * B
    y_shape, (y_st, y_sd, y_sb) = _y_strides(L.y_order, S, B, D, H)
    y = dev.empty(y_shape, F32)
    h = dev.empty((D, B, H), F32)
    h[...] = 0 if L.h0 is None else small(L.h0)
    c = None
    if L.kind == "lstm":
        c = dev.empty((D, B, H), F32)
        c[...] = 0 if L.c0 is None else small(L.c0)
    _zero_empty_rows(L, h, c)
    if y.size == 0:
        return dev.result(y), dev.result(h), None if c is None else dev.result(c)
    # 1. Input projections of all steps and directions: xw (rows, D*GH), rows in x's order.
    x2 = dev.contiguous(L.x).reshape(rows, E)
    wt = linalg._kernel_operand(dev, dev.asarray(L.w).reshape(D * GH, E).T)    # (E, D*GH), packed once
    xw = dev.empty((1, rows, D * GH), F32)
    _gemm_into(dev, x2[None], wt[None], xw, xp.broadcast_to(bias.reshape(1, 1, D * GH), (1, rows, D * GH)))
    xw_st, xw_sb = (D * GH, S * D * GH) if L.batch_first else (B * D * GH, D * GH)
    # constant, not upload: cached per content, so a repeated call copies nothing from the host
    # and can be captured into a CUDA graph (the cell kernels only read the lengths)
    lens = dev.constant(np.full(B, S, np.int32) if L.lengths is None else L.lengths)
    bits = np.int32(sum(1 << d for d, rv in enumerate(L.reverse) if rv))
    cfg = cell_launch(B, H, D)
    rt = dev.contiguous(dev.asarray(L.r).transpose(0, 2, 1))                    # (D, H, GH)
    geo = (xw, np.int64(xw_st), np.int64(xw_sb))
    tail = (lens, np.int32(B), np.int32(H))
    ys = (y, np.int64(y_st), np.int64(y_sd), np.int64(y_sb))
    if L.kind == "gru" and not L.linear_before_reset:
        rt_zr = dev.contiguous(rt[:, :, :2 * H])
        rt_n = dev.contiguous(rt[:, :, 2 * H:])
        hr = dev.empty((D, B, 2 * H), F32)
        rh = dev.empty((D, B, H), F32)
        hn = dev.empty((D, B, H), F32)
        for s in range(S):
            _gemm_into(dev, h, rt_zr, hr)
            dev.launch(GRU_RESET_LBR0, cfg, geo + (hr, h, rh) + tail + (np.int32(s), bits))
            _gemm_into(dev, rh, rt_n, hn)
            dev.launch(GRU_UPDATE_LBR0, cfg, geo + (hr, hn, h) + ys + tail + (np.int32(s), bits))
    else:
        hr = dev.empty((D, B, GH), F32)
        if L.kind == "lstm":
            has_peep = L.peep is not None
            # A pointer is always passed; the kernel reads it only when has_peep.
            peep = dev.contiguous(L.peep) if has_peep else dev.constant(np.zeros(1, F32))
            head = lambda: (hr, peep, np.int32(has_peep), h, c)
            kernel = LSTM_CELL
        elif L.kind == "gru":
            head = lambda: (hr, bhn, h)
            kernel = GRU_CELL
        else:
            head = lambda: (hr, h)
            kernel = RNN_TANH_CELL
        args = geo + head() + ys + tail
        for s in range(S):
            _gemm_into(dev, h, rt, hr)
            dev.launch(kernel, cfg, args + (np.int32(s), bits))
    return dev.result(y), dev.result(h), None if c is None else dev.result(c)


# ---------------------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------------------
def lstm(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, *, lengths=None, bidirectional=False,
         batch_first=False, backend="auto"):
    """One LSTM layer as ``torch.nn.LSTM`` computes it: gate order i, f, g, o (module docstring for
    shapes, stacking per direction and ONNX's order). Returns ``(y, h_n, c_n)``."""
    return _public("lstm", x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, bidirectional, batch_first, backend)


def gru(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, lengths=None, bidirectional=False,
        batch_first=False, backend="auto"):
    """One GRU layer as ``torch.nn.GRU`` computes it: gate order r, z, n,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` (ONNX's linear_before_reset=1). Returns
    ``(y, h_n)``."""
    return _public("gru", x, w_ih, w_hh, b_ih, b_hh, h0, None, lengths, bidirectional, batch_first, backend)


def rnn(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, lengths=None, bidirectional=False,
        batch_first=False, backend="auto"):
    """One Elman RNN layer with tanh as ``torch.nn.RNN`` computes it:
    ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``. Returns ``(y, h_n)``."""
    return _public("rnn", x, w_ih, w_hh, b_ih, b_hh, h0, None, lengths, bidirectional, batch_first, backend)
