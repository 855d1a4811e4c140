"""2-D max / average pooling and global average pooling, NCHW and NHWC, with PyTorch's semantics.

``max_pool2d`` and ``avg_pool2d`` follow ``torch.nn.functional``: ``kernel_size``, ``stride``
(default: the kernel size), ``padding`` and ``dilation`` (max only) are an int or a pair (h, w);
the output size is ``floor((H + 2p - d(k-1) - 1) / s) + 1`` (``ceil`` with ``ceil_mode``, where a
window that would start in the right padding is dropped); padding may be at most half the
effective kernel ``((k-1)d + 1) // 2``. ``padding`` may also be asymmetric, ``((top, bottom),
(left, right))`` (an axis may be one int), as ONNX ``pads`` with ONNX Runtime's semantics (checked
against it): ``2p`` above becomes begin + end, a ceil_mode window is dropped when it would start
past ``H + begin``, the count_include_pad divisor clips a window to ``H + end``, and each pad must
be smaller than the effective kernel (ONNX Runtime's limit; the half-kernel one is PyTorch's, kept
for the int forms). Windows start at ``o * s - begin``: the end pads only size the output (max)
and clip the divisor (average). Max pooling pads with -inf, propagates NaN and returns
int64 indices flat into each H * W plane (``h * W + w``) with ``return_indices=True``. Average
pooling pads with zeros; with ``count_include_pad`` the divisor is the window clipped to the padded
input (so with ``ceil_mode`` the part of a window past the padded input is not counted), else the
number of input elements in the window.

Kernels (``cuda_src/pooling/``): one thread per output element; NCHW maps threads to ow, NHWC to
C. ``global_avg_pool2d`` reduces each plane with a warp (NCHW) or channel-mapped blocks (NHWC).
Inputs must be 4-D; an input with H or W of zero gives an output with OH or OW of zero (the
package's zero-size rule; PyTorch raises for an empty C, H or W).

Limits, the same on every backend: ``kernel_size``, ``stride``, ``padding`` and ``dilation`` are
ints (Python or NumPy, checked by value) up to 2**31 - 1, the C ``int`` the kernels take; the
window arithmetic built from them ((k - 1) * d, o * s - p) is 64-bit in the kernels, so any such
values give PyTorch's result (kernel 3, padding and dilation 2**31 - 1 on a 1x1 input: the input
value at index 0). H * W and OH * OW are at most 2**31 - 1, C too; for ``global_avg_pool2d`` H * W
and C at most 2**31 - 4097 (its int loop counters step past them by up to a block).

The NumPy fallbacks are separable (rows, then columns) and run only the taps that read the input,
each over the slice of outputs it reaches: their cost is (outputs x taps inside the input), never
the padded input or the kernel area, so a window covering a whole 56x56 map, or a 20001-wide window
with padding 10000, costs what the few taps that touch the input cost.
"""
from __future__ import annotations

import operator
from typing import Tuple

import numpy as np

from ._runtime import backends, native, npfast, validate
from ._runtime.validate import INT32_LOOP_MAX, INT32_MAX
from ._runtime.device import Launch, device_scope, get_device
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range
from .conv import axis_taps

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_DTYPES = (np.float32, np.float64)
_LAYOUTS = ("NCHW", "NHWC")
MAX_GRID_X = 2**31 - 1


def _register_all():
    maxk, avgk, gk = {}, {}, {}
    for layout in _LAYOUTS:
        lo = layout.lower()
        for dt, ctype in _CTYPES.items():
            for idx in (False, True):
                maxk[(layout, dt, idx)] = register(Kernel(
                    source=f"pooling/max_pool2d_{lo}.cu", symbol=f"max_pool2d_{lo}",
                    template_args=(ctype, "true" if idx else "false"), no_spill=True))
            avgk[(layout, dt)] = register(Kernel(source=f"pooling/avg_pool2d_{lo}.cu", symbol=f"avg_pool2d_{lo}",
                                                 template_args=(ctype,), no_spill=True))
            gk[(layout, dt)] = register(Kernel(source=f"pooling/global_avg_pool2d_{lo}.cu",
                                               symbol=f"global_avg_pool2d_{lo}", template_args=(ctype,),
                                               no_spill=True))
    return maxk, avgk, gk


MAX_POOL_KERNELS, AVG_POOL_KERNELS, GLOBAL_AVG_KERNELS = _register_all()


# ---------------------------------------------------------------------------------------------
# Argument checks and output sizes
# ---------------------------------------------------------------------------------------------
def _int(op: str, name: str, v, minimum: int) -> int:
    """One entry of an int-or-pair parameter: an integer (Python or NumPy, any width or byte order,
    checked by value) between ``minimum`` and 2**31 - 1, the C ``int`` the kernels take."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints; got bool {v!r}")
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints; got {type(v).__name__} {v!r}") from None
    return validate.check_int(op, name, i, lo=minimum, hi=INT32_MAX)


def _pair(op: str, name: str, v, minimum: int) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) not in (1, 2):
            raise ValueError(f"{op}: {name} must be an int or a pair of ints; got {len(v)} values {tuple(v)!r}")
        p = tuple(_int(op, name, e, minimum) for e in v)
        return p * 2 if len(p) == 1 else p
    return (_int(op, name, v, minimum),) * 2


def pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool, p_end=None) -> int:
    """PyTorch's ``pooling_output_shape`` for one axis (may be < 1 for a too-small input), with
    ``p_end`` (default ``p``) the end padding: ONNX Runtime's rule for asymmetric pads (the sum of
    both pads in the size; a ceil_mode window is dropped when it would start past ``size + p``)."""
    p_end = p if p_end is None else p_end
    num = size + p + p_end - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1  # floor division, as PyTorch's div_rtn
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1  # the last window would start in the right padding
    return out


def _pads(op: str, padding):
    """((top, bottom), (left, right)) and whether the form was asymmetric (a pair of pairs)."""
    if isinstance(padding, (tuple, list)) and any(isinstance(e, (tuple, list)) for e in padding):
        if len(padding) != 2:
            raise ValueError(f"{op}: padding must be an int, a pair, or ((top, bottom), (left, right)); got "
                             f"{len(padding)} values {tuple(padding)!r}")
        out = []
        for e in padding:
            if isinstance(e, (tuple, list)) and len(e) != 2:
                raise ValueError(f"{op}: padding entries must be an int or a (begin, end) pair; got {tuple(e)!r}")
            out.append(_pair(op, "padding", e, 0))
        return tuple(out), True
    ph, pw = _pair(op, "padding", padding, 0)
    return ((ph, ph), (pw, pw)), False


def _check_pool(op, x, kernel_size, stride, padding, dilation, ceil_mode, layout):
    validate.check_choice(op, "layout", layout, _LAYOUTS)
    dtype = validate.check_dtype(op, "x", x, _DTYPES)
    validate.check_ndim(op, "x", x, 4, layout)
    k = _pair(op, "kernel_size", kernel_size, 1)
    s = k if stride is None else _pair(op, "stride", stride, 1)
    p, asym = _pads(op, padding)
    d = _pair(op, "dilation", dilation, 1)
    ceil_mode = validate.check_bool(op, "ceil_mode", ceil_mode)
    for ax in range(2):
        eff = (k[ax] - 1) * d[ax] + 1
        if asym and max(p[ax]) >= eff:
            # ONNX Runtime's limit ("pad should be smaller than kernel"), with the dilated extent.
            raise ValueError(f"{op}: each padding (begin, end) must be smaller than the effective kernel size "
                             f"(kernel_size - 1) * dilation + 1 = {eff}; got padding={p[ax]}, "
                             f"kernel_size={k[ax]}, dilation={d[ax]}")
        if not asym and p[ax][0] > eff // 2:
            raise ValueError(f"{op}: padding must be at most half the effective kernel size "
                             f"((kernel_size - 1) * dilation + 1) // 2 = {eff // 2}; got padding={p[ax][0]}, "
                             f"kernel_size={k[ax]}, dilation={d[ax]}")
    if layout == "NCHW":
        N, C, H, W = (int(v) for v in x.shape)
    else:
        N, H, W, C = (int(v) for v in x.shape)
    out = []
    for ax, size in enumerate((H, W)):
        o = pool_output_size(size, k[ax], s[ax], p[ax][0], d[ax], ceil_mode, p[ax][1])
        if size == 0:
            o = 0
        elif o < 1:
            raise ValueError(f"{op}: output size is too small: input {'HW'[ax]}={size} with kernel_size={k[ax]}, "
                             f"stride={s[ax]}, padding={p[ax] if asym else p[ax][0]}, dilation={d[ax]} gives {o}")
        out.append(o)
    OH, OW = out
    if H * W > INT32_MAX or OH * OW > INT32_MAX:
        raise ValueError(f"{op}: planes of H*W = {H * W} or OH*OW = {OH * OW} elements are too large "
                         f"(at most 2**31 - 1)")
    if C > INT32_MAX:
        raise ValueError(f"{op}: x has C = {C} channels; at most 2**31 - 1")
    return dtype, (N, C, H, W), (OH, OW), k, s, p, d, ceil_mode


def _out_shape(layout, N, C, OH, OW):
    return (N, C, OH, OW) if layout == "NCHW" else (N, OH, OW, C)


def launch_elementwise(total: int) -> Launch:
    """The launch of the max / avg pooling kernels: one thread per output element, 256 per block."""
    grid = ceil_div(total, 256)
    if grid > MAX_GRID_X:
        raise ValueError(f"pooling: {total} output elements are more than one launch covers")
    return Launch(grid=(grid,), block=(256,))


def launch_global_nchw(planes: int) -> Launch:
    """global_avg_pool2d NCHW: one warp per plane, 8 planes per 256-thread block."""
    return Launch(grid=(ceil_div(planes, 8),), block=(256,))


def launch_global_nhwc(N: int, C: int) -> Tuple[Launch, int]:
    """global_avg_pool2d NHWC: (TX, TY) blocks with TX over channels; also the channel tiles per image."""
    tx = min(32, 1 << max(0, (C - 1).bit_length()))
    ctiles = ceil_div(C, tx)
    if ctiles * N > MAX_GRID_X:
        raise ValueError(f"global_avg_pool2d: N*C = {N * C} is more than one launch covers")
    return Launch(grid=(ctiles * N,), block=(tx, 256 // tx)), ctiles


# ---------------------------------------------------------------------------------------------
# max_pool2d
# ---------------------------------------------------------------------------------------------
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               layout="NCHW", *, backend="auto"):
    """2-D max pooling as ``torch.nn.functional.max_pool2d``; NaN propagates.

    Returns the pooled values, or ``(values, indices)`` with ``return_indices=True``: int64,
    flat into each H * W plane (``h * W + w``), in the layout of the values.
    """
    op = "max_pool2d"
    name = backends.resolve(op, backend, {"x": x})
    dtype, (N, C, H, W), (OH, OW), k, s, pads, d, ceil_mode = _check_pool(
        op, x, kernel_size, stride, padding, dilation, ceil_mode, layout)
    # -inf padding: the end pads only size the output; windows start at o * s - begin.
    p = (pads[0][0], pads[1][0])
    return_indices = validate.check_bool(op, "return_indices", return_indices)
    out_shape = _out_shape(layout, N, C, OH, OW)
    label = "numpy" if name == "numpy" else f"max_pool2d_{layout.lower()}"
    with op_range(op, label), device_scope(op, name, {"x": x}):
        if name == "numpy":
            fn = None if return_indices or layout != "NHWC" else npfast.native_fn("max_pool_nhwc", dtype)
            if fn is not None:
                return _native_pool(x, fn, layout, (N, C, H, W), (OH, OW), k + s + p + d)
            vals, idx = npfast.per_batch(   # images on the thread pool
                lambda xb: _numpy_max_pool(xb, layout, k, s, p, d, OH, OW, return_indices), np.asarray(x))
            return (vals, idx) if return_indices else vals
        dev = get_device(name)
        xd = dev.contiguous(dev.asarray(x))
        y = dev.empty(out_shape, dtype)
        ind = dev.empty(out_shape if return_indices else (1,), np.int64)
        total = N * C * OH * OW
        if total:
            kern = MAX_POOL_KERNELS[(layout, dtype, return_indices)]
            geo = (np.int32(OH), np.int32(OW)) + tuple(np.int32(v) for v in (k + s + p + d))
            if layout == "NCHW":
                args = (xd, y, ind, np.int64(total), np.int32(H), np.int32(W)) + geo
            else:
                args = (xd, y, ind, np.int64(total), np.int32(H), np.int32(W), np.int32(C)) + geo
            dev.launch(kern, launch_elementwise(total), args)
        if return_indices:
            return dev.result(y), dev.result(ind)
        return dev.result(y)


def _along(ndim: int, axis: int, sl) -> tuple:
    """An index tuple that applies the slice ``sl`` to ``axis`` only."""
    return (slice(None),) * axis + (sl,) + (slice(None),) * (ndim - axis - 1)


def _spatial_axes(layout):
    return (2, 3) if layout == "NCHW" else (1, 2)


def _first_taps(O, s, p, d):
    """Per output along one axis: its first tap position at or after 0 (PyTorch's start, which
    steps over the left padding by whole dilations); past the input when no tap is inside it."""
    start = np.arange(O, dtype=np.int64) * s - p
    return np.where(start < 0, start + (-start + d - 1) // d * d, start)


def _max_axis(a, axis, k, s, p, d, O, with_pos=False, carry=None, carry_init=None):
    """Max over the windows of one axis of ``a``: the values (``axis`` of length ``O``) and, with
    ``with_pos``, the position along ``axis`` each came from (``_first_taps`` where no tap wins)
    and the entry of ``carry`` (shaped as ``a``) at that position (``carry_init`` where none wins).

    Only the taps that read the input run (``axis_taps``), each on a slice of outputs. A value
    replaces the running max when it is larger or NaN (the kernels' rule), so the first maximum,
    or the last NaN, along the axis wins.
    """
    shape = list(a.shape)
    L, shape[axis] = shape[axis], O
    best = np.full(shape, -np.inf, a.dtype)
    pos = picked = None
    along = [1] * a.ndim
    along[axis] = O
    if with_pos:
        pos = np.broadcast_to(_first_taps(O, s, p, d).reshape(along), shape).copy()
        if carry is not None:
            picked = np.broadcast_to(carry_init, shape).copy()
    for _, o0, o1, t0 in axis_taps(L, O, k, s, p, d):
        src = _along(a.ndim, axis, slice(t0, t0 + (o1 - o0 - 1) * s + 1, s))
        dst = _along(a.ndim, axis, slice(o0, o1))
        v, b = a[src], best[dst]
        # np.maximum propagates NaN and, of two equal values, returns its second argument: with
        # the running max second, the first of equal values stays (0.0 before -0.0 gives 0.0),
        # as in the kernels, whose rule is the ``take`` below.
        if not with_pos:
            np.maximum(v, b, out=b)
            continue
        take = (v > b) | np.isnan(v)
        np.maximum(v, b, out=b)  # the same values as the rule
        # Blend the positions arithmetically: masked copies with a data-dependent mask run
        # several times slower (branch mispredictions).
        along[axis] = o1 - o0
        _blend(pos[dst], (t0 + s * np.arange(o1 - o0, dtype=np.int64)).reshape(along), take)
        if carry is not None:
            _blend(picked[dst], carry[src], take)
    return best, pos, picked


def _blend(dst, new, take):
    """``dst[take] = new[take]`` (``new`` broadcast), for int64 ``dst``, without branches."""
    dst += (new - dst) * take


def _numpy_max_pool(x, layout, k, s, p, d, OH, OW, with_indices=True):
    """Separable, in the input's layout: the max over each window's columns, row by row, then over
    its rows. With indices the column pass goes first and the row pass carries each row winner's
    column, so ties go to the first maximum in row-major order and NaN to the last NaN, as in the
    kernels; a window with no tap inside the input gets its first tap positions at or after 0."""
    ah, aw = _spatial_axes(layout)
    if not with_indices:  # columns first too: of equal values (0.0, -0.0) the row-major first stays
        cols, _, _ = _max_axis(x, aw, k[1], s[1], p[1], d[1], OW)
        best, _, _ = _max_axis(cols, ah, k[0], s[0], p[0], d[0], OH)
        return best, None
    cols, col, _ = _max_axis(x, aw, k[1], s[1], p[1], d[1], OW, with_pos=True)
    along = [1, 1, 1, 1]
    along[aw] = OW
    best, row, col = _max_axis(cols, ah, k[0], s[0], p[0], d[0], OH, with_pos=True, carry=col,
                               carry_init=_first_taps(OW, s[1], p[1], d[1]).reshape(along))
    return best, row * x.shape[aw] + col


def _native_pool(x, fn, layout, dims, out_hw, geo):
    """A pool through its native loop (cpu_src/pooling.cpp), which splits the output rows (N * OH,
    or N * C * OH planes' rows for NCHW) over its threads; ``geo`` is the loop's int32 window
    arguments."""
    N, C, H, W = dims
    OH, OW = out_hw
    x = np.ascontiguousarray(x)
    y = np.empty(_out_shape(layout, N, C, OH, OW), x.dtype)
    if y.size:
        # the work: every output row reads kh input rows
        work = N * OH * geo[0] * W * C * x.dtype.itemsize
        if layout == "NHWC":
            fn(native.ptr(x), native.ptr(y), H, W, C, OH, OW, *geo, N * OH, native.threads_for(work))
        else:
            fn(native.ptr(x), native.ptr(y), H, W, OH, OW, *geo, N * C * OH, native.threads_for(work))
    return y


def _sum_axis(a, axis, k, s, p, O):
    """Sums of the windows (dilation 1) of one axis of ``a`` over the input taps only, in ``a``'s dtype."""
    shape = list(a.shape)
    L, shape[axis] = shape[axis], O
    acc = np.zeros(shape, a.dtype)
    for _, o0, o1, t0 in axis_taps(L, O, k, s, p, 1):
        acc[_along(a.ndim, axis, slice(o0, o1))] += a[_along(a.ndim, axis, slice(t0, t0 + (o1 - o0 - 1) * s + 1, s))]
    return acc


# ---------------------------------------------------------------------------------------------
# avg_pool2d
# ---------------------------------------------------------------------------------------------
def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               layout="NCHW", *, backend="auto"):
    """2-D average pooling as ``torch.nn.functional.avg_pool2d`` (no ``divisor_override``)."""
    op = "avg_pool2d"
    name = backends.resolve(op, backend, {"x": x})
    dtype, (N, C, H, W), (OH, OW), k, s, p, _, ceil_mode = _check_pool(
        op, x, kernel_size, stride, padding, 1, ceil_mode, layout)
    (pt, pb), (pl, pr) = p
    count_include_pad = validate.check_bool(op, "count_include_pad", count_include_pad)
    out_shape = _out_shape(layout, N, C, OH, OW)
    label = "numpy" if name == "numpy" else f"avg_pool2d_{layout.lower()}"
    with op_range(op, label), device_scope(op, name, {"x": x}):
        if name == "numpy":
            fn = npfast.native_fn(f"avg_pool_{layout.lower()}", dtype)
            if fn is not None:
                return _native_pool(x, fn, layout, (N, C, H, W), (OH, OW),
                                    k + s + (pt, pb, pl, pr, int(count_include_pad)))
            return npfast.per_batch(lambda xb: _numpy_avg_pool(xb, layout, k, s, p, OH, OW, count_include_pad),
                                    np.asarray(x))
        dev = get_device(name)
        xd = dev.contiguous(dev.asarray(x))
        y = dev.empty(out_shape, dtype)
        total = N * C * OH * OW
        if total:
            geo = (np.int32(OH), np.int32(OW)) + tuple(np.int32(v) for v in (k + s + (pt, pb, pl, pr))) + \
                (np.int32(count_include_pad),)
            if layout == "NCHW":
                args = (xd, y, np.int64(total), np.int32(H), np.int32(W)) + geo
            else:
                args = (xd, y, np.int64(total), np.int32(H), np.int32(W), np.int32(C)) + geo
            dev.launch(AVG_POOL_KERNELS[(layout, dtype)], launch_elementwise(total), args)
        return dev.result(y)


def _avg_divisor(size, OS, k, s, p, count_include_pad):
    """Per output along one axis, with ``p`` = (begin, end) pads: the window clipped to the padded
    input (``count_include_pad``) or to the input."""
    o = np.arange(OS, dtype=np.int64)
    start = o * s - p[0]
    end = np.minimum(start + k, size + p[1])
    padded = end - start
    valid = np.minimum(end, size) - np.maximum(start, 0)
    return padded if count_include_pad else np.maximum(valid, 0)


def _numpy_avg_pool(x, layout, k, s, p, OH, OW, count_include_pad):
    """Separable, in the input's layout: window sums over rows, then over columns (input taps only),
    over the divisor of each window."""
    ah, aw = _spatial_axes(layout)
    H, W = x.shape[ah], x.shape[aw]
    acc = _sum_axis(_sum_axis(x, ah, k[0], s[0], p[0][0], OH), aw, k[1], s[1], p[1][0], OW)
    if acc.size:
        along_h, along_w = [1, 1, 1, 1], [1, 1, 1, 1]
        along_h[ah], along_w[aw] = OH, OW
        div = (_avg_divisor(H, OH, k[0], s[0], p[0], count_include_pad).reshape(along_h)
               * _avg_divisor(W, OW, k[1], s[1], p[1], count_include_pad).reshape(along_w))
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(div > 0, acc / div.astype(x.dtype), x.dtype.type(0))
    return acc


# ---------------------------------------------------------------------------------------------
# global_avg_pool2d
# ---------------------------------------------------------------------------------------------
def global_avg_pool2d(x, layout="NCHW", *, backend="auto"):
    """Mean over H and W: (N, C, 1, 1) for NCHW, (N, 1, 1, C) for NHWC. An empty plane gives NaN."""
    op = "global_avg_pool2d"
    name = backends.resolve(op, backend, {"x": x})
    validate.check_choice(op, "layout", layout, _LAYOUTS)
    dtype = validate.check_dtype(op, "x", x, _DTYPES)
    validate.check_ndim(op, "x", x, 4, layout)
    if layout == "NCHW":
        N, C, H, W = (int(v) for v in x.shape)
    else:
        N, H, W, C = (int(v) for v in x.shape)
    HW = H * W
    # The kernels' int loop counters step past HW and C by up to a block (see their headers).
    if C > INT32_LOOP_MAX or HW > INT32_LOOP_MAX:
        raise ValueError(f"{op}: x has C = {C} channels and planes of H*W = {HW} elements; each must be at "
                         f"most 2**31 - 4097")
    out_shape = _out_shape(layout, N, C, 1, 1)
    label = "numpy" if name == "numpy" else f"global_avg_pool2d_{layout.lower()}"
    with op_range(op, label), device_scope(op, name, {"x": x}):
        if name == "numpy":
            axes = (2, 3) if layout == "NCHW" else (1, 2)
            with np.errstate(invalid="ignore", divide="ignore"):
                if HW == 0:
                    return np.full(out_shape, np.nan, dtype)
                return np.ascontiguousarray(np.mean(np.asarray(x), axis=axes, keepdims=True, dtype=dtype))
        dev = get_device(name)
        xd = dev.contiguous(dev.asarray(x))
        y = dev.empty(out_shape, dtype)
        if N * C:
            kern = GLOBAL_AVG_KERNELS[(layout, dtype)]
            if layout == "NCHW":
                dev.launch(kern, launch_global_nchw(N * C), (xd, y, np.int64(N * C), np.int32(HW)))
            else:
                launch, ctiles = launch_global_nhwc(N, C)
                dev.launch(kern, launch, (xd, y, np.int64(N), np.int32(HW), np.int32(C), np.int32(ctiles)))
        return dev.result(y)
