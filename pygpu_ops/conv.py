"""Convolution through im2col + the SGEMM ladder's best kernel, and NCHW <-> NHWC transposes.

``conv2d`` / ``conv1d`` build the column matrix with an im2col kernel and multiply it with the
weights in ``conv_gemm_warptile`` (``cuda_src/conv/conv_gemm_warptile.cu``): the warp-tiled SGEMM
main loop of ``sgemm/08_warptile.cu`` with an epilogue that adds the bias, applies the activation
and stores straight into the output layout, so neither costs an extra pass.

* NCHW: the column buffer is (C*kh*kw, columns) for a chunk of output pixels of one or several
  images (Caffe's layout, all images of a chunk side by side), the GEMM is W (O, C*kh*kw) times it,
  and the epilogue scatters each column to its image, giving (N, O, OH, OW) directly.
* NHWC: the column buffer is (pixels, kh*kw*C) per group, the GEMM is it times W^T, giving rows of
  (N*OH*OW, O) = (N, OH, OW, O) directly; no transposes of activations. A pointwise convolution
  (1x1, stride 1, no padding, one group) has x itself as the column matrix: no im2col, no buffer
  (the graph passes run a Gemm + Relu this way, ``pygpu_ops.ir.passes``).
* groups: ``blockIdx.z`` of the GEMM is the group (depthwise included).
* Memory: the column buffer holds at most ``get_column_buffer_limit()`` bytes (default 256 MiB,
  ``set_column_buffer_limit``); larger problems run in chunks of the flattened (image, pixel)
  range, which may be smaller than one image. Index arithmetic that can pass 2^31 is 64-bit.

conv2d / conv1d take float32 only (a ``TypeError`` names float32); ``im2col`` and the transposes
also take other dtypes (im2col: float32 / float64; transposes: any 1, 2, 4 or 8-byte dtype).

Limits, the same on every backend: ``stride``, ``padding``, ``dilation`` and ``groups`` are ints
(Python or NumPy, checked by value) up to 2**31 - 1; ``padding`` may be asymmetric,
``((top, bottom), (left, right))`` (conv1d: ``(left, right)``): only the begin pads and the output
size enter the im2col indexing (a window at output oh starts at oh * sh - top), the end pads only
the output size, so every backend takes any split; kernel sizes are at least 1; C, H, W and the
padded sizes H + pt + pb, W + pl + pr are at most 2**31 - 1 (they bound every window coordinate
the im2col kernels hold in an int). The device paths also need C*kh*kw, OH*OW and O at most
2**31 - 257 (the GEMM's int tile indices run a tile past its dimensions).

The NumPy fallback never pads: it lists, per axis, the kernel taps that read the input for some
output (``axis_taps``) and builds the columns of those taps only, each from one strided slice of x
over the outputs it reaches, zeros elsewhere; a tap that lands in the padding for every output
is left out of the GEMM. Its cost is (outputs x taps inside the input), whatever the padding and
dilation. Where the native loops are built (`_runtime.native`), a float32 convolution of one group
runs ``cpu_src/sgemm.cpp`` instead (`_native_conv`): the same taps, the im2col folded into the
GEMM's row pointers (no column buffer, no padded copy, the weights read in place), bias and
activation in its epilogue, about twice numpy.matmul's speed per core; float32 sums in a
different order than BLAS, so results differ from the NumPy route in the last bits.
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ._runtime import backends, native, validate
from ._runtime.validate import INT32_MAX
from ._runtime.device import Launch, device_scope, get_device
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range
from .linalg import MAX_GRID_YZ, SGEMM_LADDER, GemmVariant, native_block_table, native_run, native_threads
from .linalg import launch_config as gemm_launch_config

# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------
_FLOAT_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: im2col element types: the float ones of ``im2col`` / ``conv2d`` and the 8-bit ones of the
#: quantized convolution (``quantization.qconv2d``, which pads with the input zero point).
_IM2COL_CTYPE = {**_FLOAT_CTYPE, np.dtype(np.int8): "signed char", np.dtype(np.uint8): "unsigned char"}
IM2COL_NCHW = {dt: register(Kernel(source="conv/im2col_nchw.cu", symbol="im2col_nchw", template_args=(c,)))
               for dt, c in _IM2COL_CTYPE.items()}
IM2COL_NHWC = {dt: register(Kernel(source="conv/im2col_nhwc.cu", symbol="im2col_nhwc", template_args=(c,)))
               for dt, c in _IM2COL_CTYPE.items()}

_BEST = SGEMM_LADDER[-1]
#: The conv GEMM: the best ladder step's tile, block and template arguments, conv epilogue.
CONV_GEMM = GemmVariant(
    "gemm_warptile",
    register(Kernel(source="conv/conv_gemm_warptile.cu", symbol="conv_gemm_warptile",
                    template_args=_BEST.kernel.template_args, no_spill=True)),
    _BEST.tile, _BEST.block,
)

#: Transposes move bits: one instantiation per element size.
_UINT = {1: (np.uint8, "unsigned char"), 2: (np.uint16, "unsigned short"),
         4: (np.uint32, "unsigned int"), 8: (np.uint64, "unsigned long long")}
TRANSPOSE = {size: register(Kernel(source="layout/transpose_tiled.cu", symbol="transpose_tiled",
                                   template_args=(c,)))
             for size, (_, c) in _UINT.items()}

#: The epilogue's activation codes (``act`` in conv_gemm_warptile.cu); 2, leaky ReLU, is internal.
_ACT = {None: 0, "relu": 1, "relu6": 3}
#: The activations conv2d / conv1d take (qconv2d takes relu only).
CONV_ACTIVATIONS = ("relu", "relu6")
_BLOCK = 256
_MAX_BLOCKS = 1 << 16
#: Largest GEMM dimension the conv GEMM takes: its int tile indices run up to a dimension plus one
#: tile (bn + BN, k0 + BK, col + 3), which must stay below 2^31.
_GEMM_DIM_MAX = INT32_MAX - 256


def elementwise_launch(total: int) -> Launch:
    """Launch of the im2col kernels: grid-stride loops, at most 65536 blocks of 256 threads."""
    return Launch(grid=(max(1, min(ceil_div(total, _BLOCK), _MAX_BLOCKS)),), block=(_BLOCK,))


def transpose_launch(B: int, R: int, S: int) -> Launch:
    """Launch of transpose_tiled: 32x32 tiles, 32x8 threads; y and z capped (the kernel loops)."""
    return Launch(grid=(ceil_div(S, 32), min(ceil_div(R, 32), MAX_GRID_YZ), min(B, MAX_GRID_YZ)),
                  block=(32, 8))


# ---------------------------------------------------------------------------------------------
# Column-buffer memory cap
# ---------------------------------------------------------------------------------------------
DEFAULT_COLUMN_BUFFER_LIMIT = 256 * 2**20
_column_buffer_limit = DEFAULT_COLUMN_BUFFER_LIMIT


def set_column_buffer_limit(nbytes: Optional[int]) -> int:
    """Cap the im2col buffer of conv2d / conv1d at ``nbytes`` (None: the 256 MiB default).

    Returns the previous limit. Larger convolutions run in chunks of output pixels; a chunk has at
    least one pixel, so a single pixel's column (C*kh*kw*4 bytes) is the floor.
    """
    global _column_buffer_limit
    prev = _column_buffer_limit
    if nbytes is None:
        nbytes = DEFAULT_COLUMN_BUFFER_LIMIT
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Integral) or nbytes < 1:
        raise ValueError(f"set_column_buffer_limit: nbytes must be a positive int (bytes); got {nbytes!r}")
    _column_buffer_limit = int(nbytes)
    return prev


def get_column_buffer_limit() -> int:
    """The current cap on conv2d's im2col buffer, in bytes."""
    return _column_buffer_limit


def _chunk(total: int, per_item_bytes: int, cap_items: int) -> int:
    """Items per chunk: as many as the limit allows (>= 1, <= cap_items), balanced over chunks.

    With several chunks the size is kept a multiple of 4 where possible, so that leading
    dimensions and per-group offsets of the chunk buffer stay 16-byte friendly (float4 paths).
    """
    most = max(1, min(_column_buffer_limit // max(per_item_bytes, 1), cap_items))
    nchunks = ceil_div(total, most)
    if nchunks == 0:
        return 0
    per = ceil_div(total, nchunks)
    if nchunks > 1:
        up = ceil_div(per, 4) * 4
        per = up if up <= most else (per // 4 * 4 or per)
    return per


# ---------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------
def _ints(op: str, name: str, v, n: int, minimum: int) -> Tuple[int, ...]:
    """An int or an n-tuple of ints (Python or NumPy, any width or byte order, checked by value),
    each between ``minimum`` and 2**31 - 1: the C ``int`` the kernels take."""
    def is_int(e):
        return isinstance(e, numbers.Integral) and not isinstance(e, (bool, np.bool_))

    if is_int(v):
        t = (v,) * n
    elif isinstance(v, (tuple, list)) and len(v) == n and all(is_int(e) for e in v):
        t = tuple(v)
    else:
        what = "an int or a 1-tuple" if n == 1 else f"an int or a tuple of {n} ints"
        raise TypeError(f"{op}: {name} must be {what}; got {v!r}")
    return tuple(validate.check_int(op, name, e, lo=minimum, hi=INT32_MAX) for e in t)


def padding_pairs(op: str, padding, nd: int) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a tuple of ``nd`` entries, each an int (both sides)
    or a (begin, end) pair, or for ``nd == 1`` also a bare (left, right) pair. 1-D: top = bottom = 0."""
    def side_pair(e):
        if isinstance(e, (tuple, list)):
            if len(e) != 2:
                raise TypeError(f"{op}: padding entries must be an int or a (begin, end) pair; got {e!r}")
            return _ints(op, "padding", tuple(e), 2, 0)
        return _ints(op, "padding", e, 1, 0) * 2

    if nd == 1:
        if isinstance(padding, (tuple, list)) and len(padding) == 2:
            return (0, 0) + side_pair(tuple(padding))       # (left, right)
        if isinstance(padding, (tuple, list)) and len(padding) == 1:
            return (0, 0) + side_pair(padding[0])
        return (0, 0) + side_pair(padding)
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise TypeError(f"{op}: padding must be an int, a pair, or ((top, bottom), (left, right)); "
                            f"got {padding!r}")
        return side_pair(padding[0]) + side_pair(padding[1])
    return side_pair(padding) * 2


def _cdiv(a: int, b: int) -> int:
    """ceil(a / b) for b > 0, exact on Python ints."""
    return -(-a // b)


def axis_taps(L: int, O: int, k: int, s: int, p: int, d: int):
    """The taps of one pooling / convolution axis that read the input: (i, o0, o1, t0) for each tap
    i in [0, k) with outputs o0 <= o < o1 whose tap i lands inside [0, L), at t0 + (o - o0) * s.

    Output o's tap i sits at ``o * s - p + i * d``. Only taps that reach the input are listed, so
    the work of the NumPy fallbacks is (outputs x taps inside the input), never (outputs x k) or
    the padded input: a 20001-wide window over a 1-wide input lists one tap.
    """
    if L <= 0 or O <= 0:
        return []
    i_lo = max(0, _cdiv(p - (O - 1) * s, d))  # the last output's first tap at or after 0
    i_hi = min(k - 1, (L - 1 + p) // d)       # the first output's last tap before L
    if i_lo > i_hi:
        return []
    per_window = (L - 1) // d + 1             # taps of one window inside the input, at most
    if i_hi - i_lo + 1 <= 4 * O * per_window:
        i = np.arange(i_lo, i_hi + 1, dtype=np.int64)
    else:
        # Few outputs, far apart (a large stride): the union of each output's taps inside the
        # input is much smaller than [i_lo, i_hi]; list those.
        o = np.arange(O, dtype=np.int64)
        a = np.maximum(0, -((o * s - p) // d))
        b = np.minimum(k - 1, (L - 1 + p - o * s) // d)
        n = np.maximum(b - a + 1, 0)
        ends = np.cumsum(n)
        i = np.unique(np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(a - (ends - n), n))
    off = i * d - p
    o0 = np.maximum(0, -(off // s))
    o1 = np.minimum(O, (L - 1 - off) // s + 1)
    keep = o0 < o1
    i, o0, o1, off = i[keep], o0[keep], o1[keep], off[keep]
    return list(zip(i.tolist(), o0.tolist(), o1.tolist(), (o0 * s + off).tolist()))


@dataclass(frozen=True)
class Geometry:
    """Everything a 2-D convolution's kernels need; padding is (top, bottom, left, right)."""

    N: int
    C: int
    H: int
    W: int
    O: int
    G: int
    KH: int
    KW: int
    SH: int
    SW: int
    PT: int
    PB: int
    PL: int
    PR: int
    DH: int
    DW: int
    OH: int
    OW: int

    @property
    def Cg(self) -> int:
        return self.C // self.G

    @property
    def Og(self) -> int:
        return self.O // self.G


def _geometry(op: str, N, C, H, W, O, G, KH, KW, stride, padding, dilation, nd: int = 2,
              x_shape=None, w_shape=None) -> Geometry:
    """The output geometry, after range checks: every size and parameter the kernels receive as a
    C ``int`` fits one, and so do the padded sizes (H + pt + pb, W + pl + pr), which bound every
    window coordinate the kernels form (oh * sh - pt + i * dh lies in [-pt, H + pb))."""
    if min(KH, KW) < 1:
        want = "(O, C/groups, K) with K >= 1" if nd == 1 else "kernel sizes kh, kw >= 1"
        raise ValueError(f"{op}: w has shape {tuple(w_shape)}; expected {want}")
    for dim, size in (("C", C), ("H", H), ("W", W)):
        if size > INT32_MAX:
            raise ValueError(f"{op}: x has shape {tuple(x_shape)}, {dim} = {size}; each of C, H, W must be "
                             f"at most 2**31 - 1")
    sh, sw = _ints(op, "stride", stride, nd, 1) if nd == 2 else (1,) + _ints(op, "stride", stride, 1, 1)
    dh, dw = _ints(op, "dilation", dilation, nd, 1) if nd == 2 else (1,) + _ints(op, "dilation", dilation, 1, 1)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1 (as PyTorch); got stride {stride!r}")
            # Total d*(k-1); an odd total puts the extra row / column at the bottom / right.
            th, tw = dh * (KH - 1), dw * (KW - 1)
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            raise ValueError(f"{op}: padding must be an int, a tuple, 'valid' or 'same'; got {padding!r}")
    else:
        pads = padding_pairs(op, padding, nd)
    pt, pb, pl, pr = pads
    eh, ew = dh * (KH - 1) + 1, dw * (KW - 1) + 1
    hp, wp = H + pt + pb, W + pl + pr
    if eh > hp or ew > wp:
        if nd == 2:
            raise ValueError(
                f"{op}: the kernel ({KH}, {KW}) with dilation ({dh}, {dw}) spans ({eh}, {ew}), larger than "
                f"the padded input ({hp}, {wp}) (input {tuple(x_shape)}, padding {padding!r}); expected a "
                f"padded input of at least ({eh}, {ew})")
        raise ValueError(
            f"{op}: the kernel ({KW},) with dilation ({dw},) spans ({ew},), larger than the padded input "
            f"({wp},) (input {tuple(x_shape)}, padding {padding!r}); expected a padded length of at least ({ew},)")
    if max(hp, wp) > INT32_MAX:
        raise ValueError(f"{op}: the padded input ({hp}, {wp}) (input {tuple(x_shape)}, padding {padding!r}) "
                         f"must be at most 2**31 - 1 in each dimension")
    OH = (hp - eh) // sh + 1
    OW = (wp - ew) // sw + 1
    return Geometry(N, C, H, W, O, G, KH, KW, sh, sw, pt, pb, pl, pr, dh, dw, OH, OW)


def _check_layout(op: str, layout) -> str:
    return validate.check_choice(op, "layout", layout, ("NCHW", "NHWC"))


# ---------------------------------------------------------------------------------------------
# im2col
# ---------------------------------------------------------------------------------------------
def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, layout="NCHW", backend="auto"):
    """The convolution column matrix of ``x``.

    NCHW ``x`` (N, C, H, W) gives (N, C*kh*kw, OH*OW), row ``(c*kh + i)*kw + j`` (as
    ``torch.nn.functional.unfold``); NHWC ``x`` (N, H, W, C) gives (N, OH*OW, kh*kw*C), column
    ``(i*kw + j)*C + c``. Padding positions are 0. ``padding`` may be an int, a pair, ``((top,
    bottom), (left, right))``, ``"valid"`` or ``"same"``. float32 or float64. The whole matrix is returned (no memory cap here).
    """
    op = "im2col"
    name = backends.resolve(op, backend, {"x": x})
    layout = _check_layout(op, layout)
    dtype = validate.check_dtype(op, "x", x, (np.float32, np.float64))
    validate.check_ndim(op, "x", x, 4, "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)")
    KH, KW = _ints(op, "kernel_size", kernel_size, 2, 1)
    if layout == "NCHW":
        N, C, H, W = x.shape
    else:
        N, H, W, C = x.shape
    g = _geometry(op, N, C, H, W, 0, 1, KH, KW, stride, padding, dilation, x_shape=x.shape)
    P, Kc = g.OH * g.OW, C * KH * KW
    if Kc > INT32_MAX:   # on every backend, so all give the same answer
        raise ValueError(f"{op}: C*kh*kw = {Kc} must be at most 2**31 - 1 (the kernels index a column's "
                         f"entries with an int)")
    shape = (N, Kc, P) if layout == "NCHW" else (N, P, Kc)
    label = "numpy" if name == "numpy" else f"im2col_{layout.lower()}"
    with op_range(op, label), device_scope(op, name, {"x": x}):
        if name == "numpy":
            return _numpy_im2col(np.asarray(x), g, layout).reshape(shape)
        dev = get_device(name)
        out = dev.empty(shape, dtype)
        if out.size:
            if 0 in tuple(x.shape):  # x may be any CUDA tensor (torch's .size is a method)
                out.fill(0)
            else:
                xd = dev.contiguous(x)
                if layout == "NCHW":
                    _launch_im2col_nchw(dev, xd, g, dtype, 0, N * P, out, P, (Kc - 1) * P)
                else:
                    _launch_im2col_nhwc(dev, xd, g, dtype, 0, N * P, out)
        return dev.result(out)


def _geom_args(g: Geometry):
    i32 = np.int32
    return (i32(g.KH), i32(g.KW), i32(g.SH), i32(g.SW), i32(g.PT), i32(g.PL), i32(g.DH), i32(g.DW),
            i32(g.OH), i32(g.OW))


def _launch_im2col_nchw(dev, xd, g, dtype, q0, ncols, col, ldrow, image_skip, pad=0):
    """im2col_nchw of columns q0 .. q0 + ncols into ``col``; ``pad`` fills the padding."""
    args = (xd, np.int32(g.C), np.int32(g.H), np.int32(g.W)) + _geom_args(g) + (
        np.int64(q0), np.int64(ncols), col, np.int64(ldrow), np.int64(image_skip), dtype.type(pad))
    dev.launch(IM2COL_NCHW[dtype], elementwise_launch(g.C * ncols), args)


def _launch_im2col_nhwc(dev, xd, g, dtype, q0, nrows, col, pad=0):
    """im2col_nhwc of rows q0 .. q0 + nrows into ``col`` (G, nrows, kh*kw*C/G); ``pad`` fills the padding."""
    args = (xd, np.int32(g.H), np.int32(g.W), np.int32(g.C), np.int32(g.G)) + _geom_args(g) + (
        np.int64(q0), np.int64(nrows), col, dtype.type(pad))
    dev.launch(IM2COL_NHWC[dtype], elementwise_launch(nrows * g.KH * g.KW * g.C), args)


@functools.lru_cache(maxsize=256)
def _taps(g: Geometry):
    """The taps of each axis that read the input (``axis_taps``): rows, columns (cached per
    geometry: a network calls the same layers again and again)."""
    return (tuple(axis_taps(g.H, g.OH, g.KH, g.SH, g.PT, g.DH)),
            tuple(axis_taps(g.W, g.OW, g.KW, g.SW, g.PL, g.DW)))


def _rows(t0: int, n: int, s: int) -> slice:
    """Input positions t0, t0 + s, ... (n of them)."""
    return slice(t0, t0 + (n - 1) * s + 1, s)


def _padding_is_cheap(g: Geometry, columns: int) -> bool:
    """Whether a padded copy of x costs no more than x and the ``columns`` elements built from it
    together: then one strided copy out of the padded input's windows (the common case: padding
    of a few pixels) beats a copy per tap; otherwise only the taps inside the input are copied."""
    padded = g.N * g.C * (g.H + g.PT + g.PB) * (g.W + g.PL + g.PR)
    return padded <= 2 * g.N * g.C * g.H * g.W + columns


def _numpy_im2col(x: np.ndarray, g: Geometry, layout: str) -> np.ndarray:
    """(N, C, kh, kw, OH, OW) for NCHW, (N, OH, OW, kh, kw, C) for NHWC. With cheap padding one
    copy out of the padded input's windows; else zeros, then one strided copy per tap that reads
    the input, over the outputs where it does: O(x + result) either way."""
    if _padding_is_cheap(g, g.N * g.C * g.KH * g.KW * g.OH * g.OW):
        win = _numpy_windows(x, g, layout)
        if layout == "NCHW":
            return np.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3))
        return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3))
    if layout == "NCHW":
        out = np.zeros((g.N, g.C, g.KH, g.KW, g.OH, g.OW), x.dtype)
    else:
        out = np.zeros((g.N, g.OH, g.OW, g.KH, g.KW, g.C), x.dtype)
    if out.size == 0:
        return out
    taps_h, taps_w = _taps(g)
    for i, oh0, oh1, h0 in taps_h:
        hs = _rows(h0, oh1 - oh0, g.SH)
        for j, ow0, ow1, w0 in taps_w:
            ws = _rows(w0, ow1 - ow0, g.SW)
            if layout == "NCHW":
                out[:, :, i, j, oh0:oh1, ow0:ow1] = x[:, :, hs, ws]
            else:
                out[:, oh0:oh1, ow0:ow1, i, j, :] = x[:, hs, ws, :]
    return out


def _numpy_windows(x: np.ndarray, g: Geometry, layout: str, pad=0) -> np.ndarray:
    """Strided view of the padded input (``pad`` in the padding, 0 unless given):
    (N, C, OH, OW, kh, kw) or (N, OH, OW, C, kh, kw)."""
    from numpy.lib.stride_tricks import sliding_window_view

    eh, ew = g.DH * (g.KH - 1) + 1, g.DW * (g.KW - 1) + 1
    if layout == "NCHW":
        xp = np.pad(x, ((0, 0), (0, 0), (g.PT, g.PB), (g.PL, g.PR)), constant_values=pad)
        win = sliding_window_view(xp, (eh, ew), axis=(2, 3))
        return win[:, :, ::g.SH, ::g.SW, ::g.DH, ::g.DW][:, :, :g.OH, :g.OW]
    xp = np.pad(x, ((0, 0), (g.PT, g.PB), (g.PL, g.PR), (0, 0)), constant_values=pad)
    win = sliding_window_view(xp, (eh, ew), axis=(1, 2))
    return win[:, ::g.SH, ::g.SW, :, ::g.DH, ::g.DW][:, :g.OH, :g.OW]


# ---------------------------------------------------------------------------------------------
# conv2d / conv1d
# ---------------------------------------------------------------------------------------------
def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, layout="NCHW",
           activation=None, backend="auto"):
    """2-D cross-correlation (as ``torch.nn.functional.conv2d``), then ``+ bias``, then ``activation``.

    NCHW: ``x`` (N, C, H, W), ``w`` (O, C/groups, kh, kw), result (N, O, OH, OW).
    NHWC: ``x`` (N, H, W, C), ``w`` (O, kh, kw, C/groups), result (N, OH, OW, O).
    ``stride``, ``dilation``: int or pair; ``padding``: int, pair (h, w), ``((top, bottom), (left,
    right))`` (asymmetric, as ONNX ``pads``; an axis may also be one int), ``"valid"`` or ``"same"``
    (stride 1 only; an odd total pads one more at the bottom / right). ``activation``: None, ``"relu"``
    (``max(v, 0)``) or ``"relu6"`` (``min(max(v, 0), 6)``, ONNX's Clip(0, 6)), applied in the GEMM
    epilogue; NaN stays NaN under both. float32 only. The zero padding is multiplied like any
    input (0 * inf is NaN), except that an empty ``x`` (a dimension of 0) gives
    ``activation(bias)`` on every output.
    """
    op = "conv2d"
    name = backends.resolve(op, backend, {"x": x, "w": w, "bias": bias})
    layout = _check_layout(op, layout)
    validate.check_dtype(op, "x", x, (np.float32,))
    validate.check_same_dtype(op, "x", np.dtype(np.float32), w=w, bias=bias)
    g = conv_geometry(op, x, w, bias, groups, layout, stride, padding, dilation)
    act = _activation(op, activation, CONV_ACTIVATIONS)
    return _conv(op, name, x, w, bias, g, layout, act)


def conv_geometry(op, x, w, bias, groups, layout, stride, padding, dilation) -> "Geometry":
    """Shape checks shared by the 2-D convolutions (float and quantized): x is 4-D in ``layout``,
    its channels divide into ``groups``, w is (O, C/g, kh, kw) for NCHW or (O, kh, kw, C/g) for
    NHWC, O divides into the groups, bias is (O,); then the output geometry."""
    xs = "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)"
    validate.check_ndim(op, "x", x, 4, xs)
    G = _groups(op, groups)
    if layout == "NCHW":
        N, C, H, W = x.shape
    else:
        N, H, W, C = x.shape
    if C % G:
        raise ValueError(f"{op}: x has {C} channels (shape {tuple(x.shape)}, layout {layout}), not divisible "
                         f"by groups={G}; expected a multiple of {G}")
    Cg = C // G
    wexp = f"(O, {Cg}, kh, kw)" if layout == "NCHW" else f"(O, kh, kw, {Cg})"
    wname = "(O, C/groups, kh, kw)" if layout == "NCHW" else "(O, kh, kw, C/groups)"
    if len(w.shape) != 4 or (w.shape[1] if layout == "NCHW" else w.shape[3]) != Cg:
        raise ValueError(f"{op}: w has shape {tuple(w.shape)}; expected {wname} = {wexp} for layout "
                         f"{layout} with C={C}, groups={G}")
    if layout == "NCHW":
        O, _, KH, KW = w.shape
    else:
        O, KH, KW, _ = w.shape
    _check_out_channels(op, O, G, tuple(w.shape), wexp)
    _check_bias(op, bias, O)
    return _geometry(op, N, C, H, W, O, G, KH, KW, stride, padding, dilation, x_shape=x.shape, w_shape=w.shape)


def conv1d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, activation=None,
           backend="auto"):
    """1-D cross-correlation (as ``torch.nn.functional.conv1d``): ``x`` (N, C, L), ``w`` (O, C/groups, K),
    result (N, O, OL); then ``+ bias`` and ``activation`` (None, ``"relu"`` or ``"relu6"``, as
    ``conv2d``). float32 only. ``padding``: an int (both ends), a (left, right) pair, ``"valid"`` or
    ``"same"``.

    Runs as conv2d with H = 1 (NCHW).
    """
    op = "conv1d"
    name = backends.resolve(op, backend, {"x": x, "w": w, "bias": bias})
    validate.check_dtype(op, "x", x, (np.float32,))
    validate.check_same_dtype(op, "x", np.dtype(np.float32), w=w, bias=bias)
    validate.check_ndim(op, "x", x, 3, "(N, C, L)")
    G = _groups(op, groups)
    N, C, L = x.shape
    if C % G:
        raise ValueError(f"{op}: x has {C} channels (shape {tuple(x.shape)}), not divisible by groups={G}; "
                         f"expected a multiple of {G}")
    Cg = C // G
    if len(w.shape) != 3 or w.shape[1] != Cg:
        raise ValueError(f"{op}: w has shape {tuple(w.shape)}; expected (O, C/groups, K) = (O, {Cg}, K) "
                         f"with C={C}, groups={G}")
    O, _, K = w.shape
    _check_out_channels(op, O, G, tuple(w.shape), f"(O, {Cg}, K)")
    _check_bias(op, bias, O)
    act = _activation(op, activation, CONV_ACTIVATIONS)
    g = _geometry(op, N, C, 1, L, O, G, 1, K, stride, padding, dilation, nd=1, x_shape=x.shape,
                  w_shape=w.shape)
    res = _conv(op, name, x[:, :, None, :], w[:, :, None, :], bias, g, "NCHW", act)
    return res.reshape(N, O, g.OW)


def _groups(op, groups) -> int:
    return validate.check_int(op, "groups", groups, lo=1, hi=INT32_MAX)


def _check_out_channels(op, O, G, wshape, wexp):
    if O % G:
        raise ValueError(f"{op}: w has shape {wshape} with O={O} output channels, not divisible by "
                         f"groups={G}; expected {wexp} with O a multiple of {G}")


def _check_bias(op, bias, O):
    if bias is not None and tuple(bias.shape) != (O,):
        raise ValueError(f"{op}: bias has shape {tuple(bias.shape)}; expected ({O},)")


def _activation(op, activation, allowed=("relu",)) -> int:
    """The epilogue code of ``activation``: None or one of ``allowed``."""
    if not (activation is None or (isinstance(activation, str) and activation in allowed)):
        names = " or ".join(repr(a) for a in allowed)
        raise ValueError(f"{op}: activation must be None or {names}; got {activation!r}")
    return _ACT[activation]


def _conv(op, name, x, w, bias, g: Geometry, layout: str, act: int, slope: float = 0.0):
    """Validated conv: ``act`` 0 none, 1 ReLU, 2 leaky ReLU with ``slope`` (the epilogue supports it;
    the public API exposes None, "relu" and "relu6"), 3 ReLU6."""
    label = "numpy" if name == "numpy" else CONV_GEMM.kernel.symbol
    shape = (g.N, g.O, g.OH, g.OW) if layout == "NCHW" else (g.N, g.OH, g.OW, g.O)
    with op_range(op, label), device_scope(op, name, {"x": x, "w": w, "bias": bias}):
        # The GEMM kernel's dimensions, checked on every backend so all give the same answer.
        big = max(g.C * g.KH * g.KW, g.OH * g.OW, g.O)
        if big > _GEMM_DIM_MAX:
            raise ValueError(f"{op}: C*kh*kw, OH*OW and O must each be at most 2**31 - 257 for the GEMM kernel's "
                             f"32-bit dimensions; got {g.C * g.KH * g.KW}, {g.OH * g.OW}, {g.O}")
        if name == "numpy":
            return _numpy_conv(np.asarray(x), np.asarray(w), bias, g, layout, act, slope, shape)
        dev = get_device(name)
        out = dev.empty(shape, np.float32)
        if out.size:
            if 0 in tuple(x.shape) or 0 in tuple(w.shape):  # any CUDA tensor: only .shape is sure
                _fill_bias(dev, out, bias, g, layout, act, slope)
            elif layout == "NCHW":
                _device_conv_nchw(dev, x, w, bias, g, act, slope, out)
            else:
                _device_conv_nhwc(dev, x, w, bias, g, act, slope, out)
        return dev.result(out)


def _fill_bias(dev, out, bias, g, layout, act, slope):
    """A convolution with nothing to sum (C = 0 or an all-padding input): act(bias) everywhere."""
    if bias is None:
        out.fill(0)
        return
    b = dev.asarray(bias)
    if act:
        b = b.copy()
        neg = b < 0  # NaN compares false and stays
        b[neg] = b[neg] * np.float32(slope) if act == 2 else 0
        if act == 3:
            b[b > 6] = 6
    out[...] = b.reshape((1, g.O, 1, 1) if layout == "NCHW" else (1, 1, 1, g.O))


def _fastdiv_magic(d: int) -> Tuple[int, int, int]:
    """(magic, sh1, sh2) with ``x // d == (t + ((x - t) >> sh1)) >> sh2``, ``t = (x * magic) >> 32``,
    for every 0 <= x < 2**32, in 32-bit unsigned arithmetic (Granlund & Montgomery, "Division by
    invariant integers using multiplication", PLDI 1994, fig. 4.1). ``d``: 1 <= d < 2**32. The conv
    GEMM's epilogue divides pixel offsets by OH*OW this way (conv_gemm_warptile.cu)."""
    if not 1 <= d < 2**32:
        raise ValueError(f"_fastdiv_magic: d must be in [1, 2**32); got {d}")
    lg = (d - 1).bit_length()          # ceil(log2 d)
    magic = (2**32 * (2**lg - d)) // d + 1   # < 2**32 for d < 2**32
    return magic, min(lg, 1), max(lg - 1, 0)


def _pixel_args(q0: int, P: int, strideP: int):
    """The conv GEMM's pixel arguments: image n0 and pixel p0 of the first column, P, strideP and
    the division constants of P (the kernel's x = p0 + col stays below 2**32 for P, col < 2**31)."""
    magic, sh1, sh2 = _fastdiv_magic(P)
    return (np.int64(q0 // P), np.uint32(q0 % P), np.uint32(P), np.int64(strideP),
            np.uint32(magic), np.uint32(sh1), np.uint32(sh2))


def _gemm_args(dev, bias, act, slope):
    bd = dev.contiguous(bias) if bias is not None else dev.empty((1,), np.float32)
    return bd, np.int32(act), np.float32(slope)


def _device_conv_nchw(dev, x, w, bias, g: Geometry, act: int, slope: float, out):
    xd = dev.contiguous(x)
    Cg, Og, P = g.Cg, g.Og, g.OH * g.OW
    Kg = Cg * g.KH * g.KW                 # GEMM K (per group)
    Kc = g.C * g.KH * g.KW                # rows of the column buffer
    wd = dev.contiguous(w).reshape(-1)    # (O, Kg) row-major
    bd, act32, slope32 = _gemm_args(dev, bias, act, slope)
    flat = out.reshape(-1)
    total = g.N * P
    per = _chunk(total, Kc * 4, _GEMM_DIM_MAX)
    col = dev.empty((Kc * per,), np.float32)
    for q0 in range(0, total, per):
        nc = min(per, total - q0)
        colv = col[:Kc * nc].reshape(Kc, nc)
        _launch_im2col_nchw(dev, xd, g, np.dtype(np.float32), q0, nc, colv, nc, 0)
        for g0 in range(0, g.G, MAX_GRID_YZ):
            ng = min(MAX_GRID_YZ, g.G - g0)
            args = (np.int32(Og), np.int32(nc), np.int32(Kg),
                    wd[g0 * Og * Kg:], np.int32(Kg), np.int64(Og * Kg),
                    colv.reshape(-1)[g0 * Kg * nc:], np.int32(nc), np.int64(Kg * nc),
                    flat[g0 * Og * P:], np.int32(P), np.int64(Og * P),
                    *_pixel_args(q0, P, g.O * P),
                    bd[g0 * Og:] if bias is not None else bd, np.int64(Og),
                    np.int32(1 if bias is not None else 0), act32, slope32)
            dev.launch(CONV_GEMM.kernel, gemm_launch_config(CONV_GEMM, Og, nc, ng), args)


def _device_conv_nhwc(dev, x, w, bias, g: Geometry, act: int, slope: float, out):
    xd = dev.contiguous(x)
    Og = g.Og
    Kg = g.KH * g.KW * g.Cg
    # W (O, kh, kw, C/G) -> per group W_g^T (Kg, Og): a copy of the (small) weights only.
    wt = dev.contiguous(dev.asarray(w).reshape(g.G, Og, Kg).transpose(0, 2, 1)).reshape(-1)
    bd, act32, slope32 = _gemm_args(dev, bias, act, slope)
    flat = out.reshape(-1)
    total = g.N * g.OH * g.OW
    most = min(_GEMM_DIM_MAX, MAX_GRID_YZ * CONV_GEMM.tile[0])
    # A pointwise convolution (1x1, stride 1, no padding, one group) reads x's rows as they are:
    # the column matrix would be a copy of x, so x is the GEMM's A (no im2col, no buffer).
    direct = (g.KH, g.KW, g.SH, g.SW, g.PT, g.PB, g.PL, g.PR, g.G) == (1, 1, 1, 1, 0, 0, 0, 0, 1)
    per = most if direct else _chunk(total, g.G * Kg * 4, most)
    col = None if direct else dev.empty((g.G * Kg * per,), np.float32)
    for q0 in range(0, total, per):
        nr = min(per, total - q0)
        if direct:
            colv = xd.reshape(-1)[q0 * Kg:(q0 + nr) * Kg]
        else:
            colv = col[:g.G * nr * Kg]
            _launch_im2col_nhwc(dev, xd, g, np.dtype(np.float32), q0, nr, colv)
        for g0 in range(0, g.G, MAX_GRID_YZ):
            ng = min(MAX_GRID_YZ, g.G - g0)
            args = (np.int32(nr), np.int32(Og), np.int32(Kg),
                    colv[g0 * nr * Kg:], np.int32(Kg), np.int64(nr * Kg),
                    wt[g0 * Kg * Og:], np.int32(Og), np.int64(Kg * Og),
                    flat[q0 * g.O + g0 * Og:], np.int32(g.O), np.int64(Og),
                    *_pixel_args(0, 2**31, 0),   # one "image" wider than any column: C[row * ldc + col]
                    bd[g0 * Og:] if bias is not None else bd, np.int64(Og),
                    np.int32(2 if bias is not None else 0), act32, slope32)
            dev.launch(CONV_GEMM.kernel, gemm_launch_config(CONV_GEMM, nr, Og, ng), args)


def _numpy_conv(x, w, bias, g: Geometry, layout: str, act: int, slope: float, shape, dtype=np.float32):
    """NumPy fallback: im2col of the taps that read the input only (a kernel tap that lands in the
    padding for every output adds nothing), in chunks under the column-buffer limit, then one
    batched BLAS matmul per chunk. Never a padded copy of x: the cost is (outputs x taps inside
    the input), whatever the padding and dilation. ``dtype`` is the computation's (qconv2d's
    fallback sums exact integers in float64 through this same path)."""
    dtype = np.dtype(dtype)
    lib = native.lib() if dtype == np.float32 and g.G == 1 else None
    if layout == "NCHW" and lib is None and g.G == 1 and g.KH * g.KW > 1 and x.size and w.size:
        # Through NHWC: its columns put C innermost (long contiguous copies) and its matmul is one
        # (pixels x K) @ (K x O) SGEMM for the chunk, where NCHW's is a batch of small ones per
        # image. Measured on the bench's ResNet layers (8x64x28x28, 1x128x28x28, 1x256x14x14, the
        # 7x7 stem): 1.3-4x faster including the three transposes (x, w, out), which cost
        # O(input + output). 1x1 (NCHW is already a plain GEMM) and grouped convolutions (NHWC
        # columns of a few channels per group) stay on the NCHW path, which is faster there.
        xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wt = np.ascontiguousarray(w.transpose(0, 2, 3, 1))
        y = _numpy_conv(xt, wt, bias, g, "NHWC", act, slope, (shape[0], shape[2], shape[3], shape[1]), dtype)
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    out = np.empty(shape, dtype)
    if out.size == 0:
        return out
    G, Cg, Og = g.G, g.Cg, g.Og
    taps_h, taps_w = _taps(g)
    nh, nw = len(taps_h), len(taps_w)
    fused = False       # bias and activation applied by the native kernel
    if x.size == 0 or w.size == 0 or nh == 0 or nw == 0:
        out[...] = 0
    elif lib is not None:
        _native_conv(lib, x, w, bias, g, layout, act, slope, out)
        fused = True
    else:
        ih, iw = [t[0] for t in taps_h], [t[0] for t in taps_w]
        if layout == "NCHW":
            wt = w[:, :, ih][:, :, :, iw]                                  # (O, Cg, nh, nw)
            wm = wt.reshape(G, Og, Cg * nh * nw)                           # (G, Og, K)
        else:
            wt = w[:, ih][:, :, iw]                                        # (O, nh, nw, Cg)
            wm = wt.reshape(G, Og, nh * nw * Cg).transpose(0, 2, 1)        # (G, K, Og)
        # Every tap reads the input for every output (no padding reached): nothing to zero.
        covered = all(o0 == 0 and o1 == g.OH for _, o0, o1, _ in taps_h) and \
            all(o0 == 0 and o1 == g.OW for _, o0, o1, _ in taps_w)
        alloc = np.empty if covered else np.zeros
        # Every tap reads the input and the padding is small: one copy per chunk out of the padded
        # input's windows is faster than a copy per tap.
        win = None
        if nh == g.KH and nw == g.KW and _padding_is_cheap(g, g.N * g.C * g.KH * g.KW * g.OH * g.OW):
            win = _numpy_windows(x, g, layout)
            alloc = np.empty
        for n0, n1, h0, h1 in _numpy_chunks(g, g.C * nh * nw * dtype.itemsize):
            nb, oh = n1 - n0, h1 - h0
            xs = x[n0:n1]
            if layout == "NCHW":
                cols = alloc((nb, G, Cg, nh, nw, oh, g.OW), dtype)    # Caffe's columns
            else:
                cols = alloc((nb, oh, g.OW, G, nh, nw, Cg), dtype)
            if win is not None:
                if layout == "NCHW":    # win (N, C, OH, OW, kh, kw)
                    part = win[n0:n1, :, h0:h1].reshape(nb, G, Cg, oh, g.OW, nh, nw)
                    cols[...] = part.transpose(0, 1, 2, 5, 6, 3, 4)
                else:                   # win (N, OH, OW, C, kh, kw)
                    part = win[n0:n1, h0:h1].reshape(nb, oh, g.OW, G, Cg, nh, nw)
                    cols[...] = part.transpose(0, 1, 2, 3, 5, 6, 4)
            for a, (_, oa0, oa1, ta) in enumerate(taps_h if win is None else ()):
                r0, r1 = max(oa0, h0), min(oa1, h1)
                if r0 >= r1:
                    continue
                hs = _rows(ta + (r0 - oa0) * g.SH, r1 - r0, g.SH)
                for b, (_, ob0, ob1, tb) in enumerate(taps_w):
                    ws = _rows(tb, ob1 - ob0, g.SW)
                    if layout == "NCHW":
                        cols[:, :, :, a, b, r0 - h0:r1 - h0, ob0:ob1] = \
                            xs[:, :, hs, ws].reshape(nb, G, Cg, r1 - r0, ob1 - ob0)
                    else:
                        cols[:, r0 - h0:r1 - h0, ob0:ob1, :, a, b, :] = \
                            xs[:, hs, ws, :].reshape(nb, r1 - r0, ob1 - ob0, G, Cg)
            if layout == "NCHW":
                r = np.matmul(wm, cols.reshape(nb, G, Cg * nh * nw, oh * g.OW))   # (nb, G, Og, pixels)
                out[n0:n1, :, h0:h1] = r.reshape(nb, g.O, oh, g.OW)
            elif G == 1:
                r = np.matmul(cols.reshape(nb * oh * g.OW, nh * nw * Cg), wm[0])  # (pixels, O)
                out[n0:n1, h0:h1] = r.reshape(nb, oh, g.OW, g.O)
            else:
                c3 = cols.reshape(nb * oh * g.OW, G, nh * nw * Cg).transpose(1, 0, 2)
                r = np.matmul(c3, wm)                                              # (G, pixels, Og)
                out[n0:n1, h0:h1] = r.transpose(1, 0, 2).reshape(nb, oh, g.OW, g.O)
    if x.size:   # an empty x (H or W of 0 too) gives the bias alone, as on the device
        _skipped_taps_nan(out, w, g, layout, taps_h, taps_w)
    if fused:    # NaN stays NaN under + bias and every activation: the order does not matter
        return out
    if bias is not None:
        out += np.asarray(bias).reshape((1, g.O, 1, 1) if layout == "NCHW" else (1, 1, 1, g.O))
    if act in (1, 3):
        np.maximum(out, np.float32(0), out=out)  # np.maximum / np.minimum keep NaN
        if act == 3:
            np.minimum(out, np.float32(6), out=out)
    elif act == 2:
        out[out < 0] *= np.float32(slope)
    return out


def _native_conv(lib, x, w, bias, g: Geometry, layout: str, act: int, slope: float, out) -> None:
    """``out`` = act(conv(x, w) + bias) for one group, float32, by the native kernel
    (``cpu_src/sgemm.cpp: conv_nhwc_f32``): the im2col matrix is never built, each tile reads its
    pixels' channel vectors from NHWC x (zeros in the padding), so there is no column buffer (the
    `set_column_buffer_limit` cap holds trivially), and the weights are read in place in either
    layout. Only the taps that read the input enter the sum, as in the NumPy route
    (`_skipped_taps_nan` covers the others). NCHW: x is transposed to NHWC first (O(input), by
    `native_transpose`); the kernel scatters its last K block's results straight into the NCHW
    output. Blocks of output channels (or pixels) per thread (`linalg.native_blocks`) on OpenMP
    threads."""
    nchw = layout == "NCHW"
    x = native_transpose(lib, x, (g.N, g.H, g.W, g.C), g.N, g.C, g.H * g.W) if nchw else x
    x = np.ascontiguousarray(x, np.float32)
    w = np.ascontiguousarray(w, np.float32)
    nt = native_threads(g.N * g.OH * g.OW, g.O, g.KH * g.KW * g.C)
    tap_info, zeros, blocks, rs, cs, scatter = _native_plan(g, nchw, nt)
    y = np.empty((g.N * g.OH * g.OW, g.O), np.float32) if nchw else out
    b = None if bias is None else np.ascontiguousarray(bias, np.float32)
    ptr = native.ptr
    native_run(blocks, nt, lib.conv_nhwc_f32, ptr(x), g.H, g.W, g.C, g.OH, g.OW, g.SH, g.SW, g.PT, g.PL,
               g.DH, g.DW, ptr(tap_info), len(tap_info) // 3, ptr(zeros), ptr(w), rs, cs, ptr(y), g.O,
               ptr(out) if scatter else None, g.O, None if b is None else ptr(b), act, slope)
    if nchw and not scatter:
        out[...] = y.reshape(g.N, g.OH, g.OW, g.O).transpose(0, 3, 1, 2)


@functools.lru_cache(maxsize=256)
def _native_plan(g: Geometry, nchw: bool, n_threads: int):
    """What `_native_conv` hands the kernel besides the arrays, per geometry (cached: rebuilding it
    is Python work that, with the caches cold after the kernel, cost ~0.1-0.3 ms a call here):
    the taps (rows, columns, weight offsets) as one read-only int64 array, a row of zeros for the
    padding (at least one K block of C), the C blocks, B's strides, and whether NCHW results are
    scattered by the kernel (an image of more than 2**26 pixels, past the scatter's int32
    offsets, goes through a (pixels, O) array and a transpose instead)."""
    taps_h, taps_w = _taps(g)
    th = [t[0] for t in taps_h for _ in taps_w]
    tw = [t[0] for _ in taps_h for t in taps_w]
    taps = g.KH * g.KW
    if nchw:        # w (O, C, kh, kw): tap (i, j) of channel c of output o at o * C*taps + c * taps + i*KW + j
        boff, rs, cs = [i * g.KW + j for i, j in zip(th, tw)], taps, g.C * taps
    else:           # w (O, kh, kw, C): at o * taps*C + (i*KW + j) * C + c
        boff, rs, cs = [(i * g.KW + j) * g.C for i, j in zip(th, tw)], 1, taps * g.C
    tap_info = np.array(th + tw + boff, np.int64)
    zeros = np.zeros(max(1, min(g.C, 512)), np.float32)
    blocks = native_block_table(g.N * g.OH * g.OW, g.O, len(th) * g.C, n_threads)
    for a in (tap_info, zeros):
        a.flags.writeable = False
    return tap_info, zeros, blocks, rs, cs, nchw and g.OH * g.OW <= INT32_MAX // 32


def _skipped_taps_nan(out, w, g: Geometry, layout: str, taps_h, taps_w) -> None:
    """A tap that lands in the padding for every output is left out of the fallback's matmul, but
    the kernels (and PyTorch) multiply the zero padding by its weight: 0 * inf and 0 * NaN are
    NaN. So an output channel with a non-finite weight at such a tap is NaN everywhere."""
    if out.size == 0 or w.size == 0 or (len(taps_h), len(taps_w)) == (g.KH, g.KW):
        return      # (every tap reads the input somewhere: none was left out)
    inside = np.zeros((g.KH, g.KW), bool)
    inside[np.ix_([t[0] for t in taps_h], [t[0] for t in taps_w])] = True
    if inside.all():
        return
    wk = w if layout == "NCHW" else w.transpose(0, 3, 1, 2)                  # (O, Cg, kh, kw)
    bad = ~np.isfinite(wk[:, :, ~inside]).reshape(g.O, -1).all(axis=1)
    if bad.any():
        out[(slice(None), bad) if layout == "NCHW" else (Ellipsis, bad)] = np.nan


def _numpy_chunks(g: Geometry, pixel_bytes: int):
    """(n0, n1, oh0, oh1) pieces whose column matrix fits the limit: whole images, or row blocks."""
    image = g.OH * g.OW * pixel_bytes
    if image <= _column_buffer_limit:
        per = _chunk(g.N, image, g.N)
        for n0 in range(0, g.N, per):
            yield n0, min(g.N, n0 + per), 0, g.OH
    else:
        rows = _chunk(g.OH, g.OW * pixel_bytes, g.OH)
        for n in range(g.N):
            for h0 in range(0, g.OH, rows):
                yield n, n + 1, h0, min(g.OH, h0 + rows)


# ---------------------------------------------------------------------------------------------
# Layout transposes
# ---------------------------------------------------------------------------------------------
def nchw_to_nhwc(x, *, backend="auto"):
    """(N, C, H, W) -> (N, H, W, C), a new C-contiguous array (tiled shared-memory transpose)."""
    return _transpose("nchw_to_nhwc", x, "(N, C, H, W)", backend, to_nhwc=True)


def nhwc_to_nchw(x, *, backend="auto"):
    """(N, H, W, C) -> (N, C, H, W), a new C-contiguous array (tiled shared-memory transpose)."""
    return _transpose("nhwc_to_nchw", x, "(N, H, W, C)", backend, to_nhwc=False)


def native_transpose(lib, x: np.ndarray, shape, B: int, R: int, S: int) -> np.ndarray:
    """x viewed as (B, R, S), transposed to (B, S, R) by cpu_src/transpose.cpp into a new array of
    ``shape``, the B * R source rows split over the loop's threads."""
    x = np.ascontiguousarray(x)
    out = np.empty(shape, x.dtype)
    if out.size:
        fn = getattr(lib, f"transpose_u{8 * x.dtype.itemsize}")
        fn(native.ptr(x), native.ptr(out), R, S, B * R, native.threads_for(x.nbytes))
    return out


def _transpose(op, x, layout_name, backend, to_nhwc: bool):
    name = backends.resolve(op, backend, {"x": x})
    dtype = validate.dtype_of(x)
    if dtype.itemsize not in _UINT or dtype.hasobject:
        raise TypeError(f"{op}: x has dtype {dtype}; expected a numeric dtype of 1, 2, 4 or 8 bytes")
    validate.check_ndim(op, "x", x, 4, layout_name)
    N, A1, A2, A3 = x.shape
    if to_nhwc:
        shape, (B, R, S) = (N, A2, A3, A1), (N, A1, A2 * A3)
    else:
        shape, (B, R, S) = (N, A3, A1, A2), (N, A1 * A2, A3)
    label = "numpy" if name == "numpy" else "transpose_tiled"
    with op_range(op, label), device_scope(op, name, {"x": x}):
        if name == "numpy":
            lib = native.lib()
            if lib is not None:
                return native_transpose(lib, np.asarray(x), shape, B, R, S)
            perm = (0, 2, 3, 1) if to_nhwc else (0, 3, 1, 2)
            return np.array(np.asarray(x).transpose(perm), order="C")   # a new array, even for (1, 1, 1, 1)
        dev = get_device(name)
        out = dev.empty(shape, dtype)
        if out.size:
            utype = _UINT[dtype.itemsize][0]
            xd = dev.contiguous(x).reshape(-1).view(utype)
            dev.launch(TRANSPOSE[dtype.itemsize], transpose_launch(B, R, S),
                       (xd, out.reshape(-1).view(utype), np.int64(B), np.int64(R), np.int64(S)))
        return dev.result(out)
