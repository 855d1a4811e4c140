"""Handlers of ONNX's quantization ops: the QOperator and dynamic formats, on the int8 public ops.

* QuantizeLinear / DequantizeLinear -> ``po.quantize`` / ``po.dequantize``: per tensor (a scalar or
  one-element scale) or per channel (a 1-D scale along ``axis``, opset 13+), int8 / uint8 (and
  int32 for DequantizeLinear, zero point 0 as ONNX requires). The output type of QuantizeLinear is
  the zero point's (uint8 when it is omitted), or ``output_dtype`` (opset 21).
* QLinearMatMul -> ``po.qlinear_matmul``; MatMulInteger -> ``po.int8_gemm``. A of rank >= 2 (its
  leading dims flattened into rows, a view), B a 2-D matrix; per-column B scales / zero points.
* QLinearConv -> ``po.qconv2d`` (4-D input, int8 weights with zero point 0, per-tensor or
  per-output-channel weight scales, int32 bias), with the fused ReLU that the QDQ pass
  (`pygpu_ops.ir.passes_quant`) sets as ``activation`` on the nodes it creates.
* ConvInteger (int32 output, no requantization) -> public ops only: ``dequantize`` at scale 1 gives
  float32 ``x - x_zero_point`` (exact), ``im2col`` pads it with 0, ``quantize`` at scale 1 gives
  back the 8-bit columns padded with the zero point, and one ``int8_gemm`` per group (weight zero
  points per row, the input zero point per column) gives the exact int32 sums.
* DynamicQuantizeLinear: the range (min / max, the array library's reduction) is read back to the
  host, then scale and zero point follow ONNX Runtime's float32 arithmetic
  (``scale = (max(0, max x) - min(0, min x)) / 255``, 1.0 for an all-zero range,
  ``zero_point = round_half_even(clamp(0 - min / scale, 0, 255))``) and ``po.quantize`` divides.
  The scale and zero point are returned as 0-d arrays of the backend.
* Cast of a runtime int8 / uint8 / int32 tensor to float32 (the ``Cast`` after ``MatMulInteger`` in
  dynamic models): ``dequantize`` at scale 1, zero point 0, which rounds exactly as C's cast.

The scales and zero points of QuantizeLinear / DequantizeLinear may be runtime tensors (read back
to the host by ``po.quantize`` / ``po.dequantize`` per call), and so may the zero point of
MatMulInteger's A (DynamicQuantizeLinear's output in dynamic models); all others must be constants
(initializers or folded Constant nodes). Refused at session creation (``Unsupported``): 16-bit, 4-bit and float8 types,
``block_size`` (blocked quantization), ``saturate=0``, QLinearConv with uint8 or non-zero-point
weights, ConvInteger with a per-channel input zero point, 1-D / 3-D quantized convolutions.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .._runtime.device import to_host
from .graph import dim_prod
from .ops import (F32, Info, Step, Unsupported, _axis, _host_value, _ints, _po, conv_padding,
                  register)

I8, U8, I32 = np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32)
Q8 = (I8, U8)
#: ONNX TensorProto element types of ``output_dtype`` (QuantizeLinear 21+): UINT8 = 2, INT8 = 3.
_ONNX_Q8 = {2: U8, 3: I8}


def _want(info: Optional[Info], allowed, what: str) -> np.dtype:
    if info is None:
        raise ValueError(f"input {what} is required")
    if info.dtype not in allowed:
        raise Unsupported(f"input {what} has dtype {info.dtype}; supported: {', '.join(str(d) for d in allowed)}")
    return info.dtype


def _param(info: Optional[Info], what: str, count=None, default=None) -> Optional[np.ndarray]:
    """A constant scale / zero point as a flat host array: one value (per tensor) or ``count``.
    None while its value is not known yet (never for a constant)."""
    if info is None:
        return None if default is None else np.asarray([default])
    v = _host_value(info, what)
    if v is None:
        return None
    v = np.asarray(v)
    if v.ndim > 1 or (v.size != 1 and (count is None or v.size != count)):
        want = "a scalar" if count is None else f"a scalar or {count} values"
        raise ValueError(f"{what} must be {want}; got shape {v.shape}")
    return v.reshape(-1)


def _scalar(v: np.ndarray):
    return v.reshape(-1)[0] if v.size == 1 else v


def _per_channel(node, x: Info, scale: Info, ctx) -> Optional[int]:
    """The channel axis of a QuantizeLinear / DequantizeLinear, None for per tensor."""
    if int(node.attr("block_size", 0)) != 0:
        raise Unsupported("block_size (blocked quantization)")
    if scale.shape is None or len(scale.shape) > 1:
        raise Unsupported(f"scale of shape {scale.shape}: a scalar or a 1-D per-axis scale is supported")
    if len(scale.shape) == 0 or scale.shape[0] == 1:
        return None
    if ctx.opset < 13:
        raise ValueError("a 1-D scale needs opset 13 (per-axis quantization)")
    axis = _axis(int(node.attr("axis", 1)), x.rank)
    if isinstance(x.shape[axis], int) and x.shape[axis] != scale.shape[0]:
        raise ValueError(f"scale has {scale.shape[0]} values; axis {axis} of the input has {x.shape[axis]}")
    return axis


def _qdq_params(s: Info, z: Optional[Info], axis: Optional[int], prefix: str):
    """``params(a) -> (scale, zero_point)`` of a QuantizeLinear / DequantizeLinear: constants where
    they are (checked now), else the runtime tensors (read back to the host by the public op)."""
    count = None if axis is None else s.shape[0]
    sv = _param(s, f"{prefix}_scale", count) if s.host else None
    zv = (_param(z, f"{prefix}_zero_point", count) if z.host else None) if z is not None else np.zeros(1, np.int64)
    sv, zv = (None if v is None else _scalar(v) for v in (sv, zv))
    return lambda a: (a[1] if sv is None else sv, a[2] if zv is None else zv)


@register("QuantizeLinear", 10)
def quantize_linear(node, ins, ctx):
    x, s = ins[0], ins[1]
    z = ins[2] if len(ins) > 2 else None
    _want(x, (F32,), "x")
    if int(node.attr("saturate", 1)) != 1:
        raise Unsupported("saturate=0 (float8 only)")
    out = node.attr("output_dtype", 0)
    if out and int(out) not in _ONNX_Q8:
        raise Unsupported(f"output_dtype {out}: int8 and uint8 are supported")
    ydt = _want(z, Q8, "y_zero_point") if z is not None else _ONNX_Q8.get(int(out or 0), U8)
    if out and z is not None and _ONNX_Q8[int(out)] != ydt:
        raise ValueError(f"output_dtype {_ONNX_Q8[int(out)]} differs from y_zero_point's dtype {ydt}")
    _want(s, (F32,), "y_scale")
    axis = _per_channel(node, x, s, ctx)
    params = _qdq_params(s, z, axis, "y")
    fn = _po().quantize
    return Step([Info(x.shape, ydt, layout=x.layout)], ctx.label("quantize", f"quantize_linear<{ydt}>"),
                lambda a: [fn(a[0], *params(a), axis=axis, dtype=ydt.name, backend=ctx.backend)])


@register("DequantizeLinear", 10)
def dequantize_linear(node, ins, ctx):
    x, s = ins[0], ins[1]
    z = ins[2] if len(ins) > 2 else None
    xdt = _want(x, Q8 + (I32,), "x")
    if z is not None and z.dtype != xdt:
        raise ValueError(f"x_zero_point has dtype {z.dtype}; x has {xdt}")
    if int(node.attr("output_dtype", 0)) not in (0, 1):
        raise Unsupported("output_dtype other than float32")
    _want(s, (F32,), "x_scale")
    axis = _per_channel(node, x, s, ctx)
    params = _qdq_params(s, z, axis, "x")
    if xdt == I32 and z is not None and (not z.host or z.value is None or np.asarray(z.value).any()):
        raise ValueError("an int32 x needs a constant zero point 0")
    fn = _po().dequantize
    # Always a device step, even on a constant: the QDQ pass reads the int8 weights behind a
    # DequantizeLinear, so constant folding must not turn them into float weights first.
    return Step([Info(x.shape, F32, layout=x.layout)], ctx.label("dequantize", f"dequantize_linear<{xdt}>"),
                lambda a: [fn(a[0], *params(a), axis=axis, backend=ctx.backend)])


def int_to_float(x: Info, ctx) -> Step:
    """Cast of a runtime int8 / uint8 / int32 tensor to float32 (ops.cast calls this)."""
    fn = _po().dequantize
    return Step([Info(x.shape, F32, layout=x.layout)], ctx.label("dequantize", f"dequantize_linear<{x.dtype}>"),
                lambda a: [fn(a[0], 1.0, 0, backend=ctx.backend)])


# ---------------------------------------------------------------------------------------------
# Matrix products
# ---------------------------------------------------------------------------------------------
def _matmul_shapes(a: Info, b: Info):
    """(output shape, N) of an N-D A times a 2-D B."""
    if a.rank is None or a.rank < 2:
        raise Unsupported(f"A of rank {a.rank}: rank >= 2 is supported")
    if b.rank != 2:
        raise Unsupported(f"B of rank {b.rank}: a 2-D B is supported")
    ka, kb = a.shape[-1], b.shape[0]
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        raise ValueError(f"A is {a.shape} and B is {b.shape}: inner dimensions differ")
    return a.shape[:-1] + (b.shape[1],), b.shape[1]


def _rows(fn):
    """Run ``fn(a2d, b)`` on A's leading dims flattened into rows and give the result A's leading shape."""
    def run(a, b, *rest):
        lead = tuple(a.shape[:-1])
        y = fn(a.reshape(-1, a.shape[-1]), b, *rest)
        return y.reshape(lead + (y.shape[-1],))
    return run


@register("QLinearMatMul", 10)
def qlinear_matmul(node, ins, ctx):
    a, sa, za, b, sb, zb, sy, zy = ins[:8]
    _want(a, Q8, "a")
    _want(b, Q8, "b")
    for info, what in ((sa, "a_scale"), (sb, "b_scale"), (sy, "y_scale")):
        _want(info, (F32,), what)
    ydt = _want(zy, Q8, "y_zero_point")
    shape, n = _matmul_shapes(a, b)
    count = n if isinstance(n, int) else None
    p = [_param(sa, "a_scale"), _param(za, "a_zero_point"), _param(sb, "b_scale", count),
         _param(zb, "b_zero_point", count), _param(sy, "y_scale"), _param(zy, "y_zero_point")]
    fn = _po().qlinear_matmul
    sa_, za_, sb_, zb_, sy_, zy_ = (None if v is None else _scalar(v) for v in p)
    run = _rows(lambda a2, b2: fn(a2, sa_, za_, b2, sb_, zb_, sy_, zy_, out_dtype=ydt.name, backend=ctx.backend))
    return Step([Info(shape, ydt)], ctx.label("qlinear_matmul", "int8_gemm_auto"), lambda v: [run(v[0], v[3])])


@register("MatMulInteger", 10)
def matmul_integer(node, ins, ctx):
    a, b = ins[0], ins[1]
    za = ins[2] if len(ins) > 2 else None
    zb = ins[3] if len(ins) > 3 else None
    _want(a, Q8, "A")
    _want(b, Q8, "B")
    shape, n = _matmul_shapes(a, b)
    if za is not None:
        _want(za, (a.dtype,), "a_zero_point")
        if za.shape is None or dim_prod(za.shape) != 1:
            raise Unsupported(f"a_zero_point of shape {za.shape}: a per-tensor zero point is supported")
    zbv = _param(zb, "b_zero_point", n if isinstance(n, int) else None, 0) if zb is not None else np.zeros(1, np.int64)
    if zb is not None:
        _want(zb, (b.dtype,), "b_zero_point")
    fn = _po().int8_gemm
    zb_ = None if zbv is None else _scalar(zbv)
    run = _rows(lambda a2, b2, z: fn(a2, b2, a_zero_point=0 if z is None else z.reshape(-1)[:1],
                                     b_zero_point=zb_, backend=ctx.backend))
    has_za = za is not None
    return Step([Info(shape, I32)], ctx.label("int8_gemm", "int8_gemm_auto"),
                lambda v: [run(v[0], v[1], v[2] if has_za else None)])


# ---------------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------------
def _qconv_geometry(node, x: Info, w: Info):
    if x.rank != 4:
        raise Unsupported(f"input of rank {x.rank}: 2-D quantized convolutions (4-D input) are supported")
    if w.shape is None or len(w.shape) != 4 or not all(isinstance(v, int) for v in w.shape):
        raise Unsupported(f"W must be a 4-D tensor of static shape; got {w.shape}")
    k = list(w.shape[2:])
    if node.attr("kernel_shape") is not None and _ints(node.attr("kernel_shape")) != k:
        raise ValueError(f"kernel_shape {node.attr('kernel_shape')} differs from W's {k}")
    s, d, padding, out = conv_padding(node, x, k)
    group = int(node.attr("group", 1))
    return dict(stride=tuple(s), padding=padding, dilation=tuple(d), groups=group), (x.shape[0], w.shape[0], *out)


@register("QLinearConv", 10)
def qlinear_conv(node, ins, ctx):
    x, sx, zx, w, sw, zw, sy, zy = ins[:8]
    b = ins[8] if len(ins) > 8 else None
    _want(x, Q8, "x")
    if _want(w, Q8, "w") != I8:
        raise Unsupported("uint8 weights: qconv2d takes int8 weights with zero point 0")
    for info, what in ((sx, "x_scale"), (sw, "w_scale"), (sy, "y_scale")):
        _want(info, (F32,), what)
    ydt = _want(zy, Q8, "y_zero_point")
    if b is not None:
        _want(b, (I32,), "B")
    kw, shape = _qconv_geometry(node, x, w)
    O = w.shape[0]
    zwv = _param(zw, "w_zero_point", O, 0)
    if zwv is not None and zwv.any():
        raise Unsupported("a non-zero weight zero point: qconv2d takes symmetric int8 weights")
    act = node.attr("activation")
    if act not in (None, "relu"):
        raise Unsupported(f"activation={act!r}: the qconv epilogue has relu only")
    p = [_param(sx, "x_scale"), _param(zx, "x_zero_point"), _param(sw, "w_scale", O), _param(sy, "y_scale"),
         _param(zy, "y_zero_point")]
    sx_, zx_, sw_, sy_, zy_ = (None if v is None else _scalar(v) for v in p)
    fn = _po().qconv2d
    from ..quantization import QCONV_GEMM

    label = ctx.label("qconv2d", QCONV_GEMM[ydt].symbol) + (f"+{act}" if act else "")
    return Step([Info(shape, ydt, layout="NCHW")], label,
                lambda a: [fn(a[0], sx_, zx_, a[3], sw_, 0, sy_, zy_, a[8] if len(a) > 8 else None,
                              activation=act, out_dtype=ydt.name, backend=ctx.backend, **kw)])


def qlinear_gemm(node, ins, ctx):
    """QLinearGemm (domain pygpu_ops, made by the QDQ pass): A (M, K) int8 / uint8 times W (N, K)
    int8 (zero point 0, per-tensor or per-row scales) plus an int32 bias (N,), requantized, with an
    optional ReLU: ``po.qconv2d`` on the (M, K, 1, 1) view of A and the (N, K, 1, 1) view of W."""
    x, w = ins[0], ins[3]
    if x.rank != 2 or w.rank != 2:
        raise Unsupported(f"A of rank {x.rank} and W of rank {w.rank}: 2-D operands are supported")
    x4 = Info(tuple(x.shape) + (1, 1), x.dtype)
    w4 = Info(tuple(w.shape) + (1, 1), w.dtype, None if w.value is None else w.value.reshape(w.shape + (1, 1)),
              host=w.host)
    step = qlinear_conv(node, [x4, *ins[1:3], w4, *ins[4:]], ctx)
    n = w.shape[0]
    return Step([Info((x.shape[0], n), step.outs[0].dtype)], step.kernel,
                lambda a: [step.run([a[0].reshape(a[0].shape + (1, 1)), *a[1:3], a[3].reshape(a[3].shape + (1, 1)),
                                     *a[4:]])[0].reshape(a[0].shape[0], n)])


@register("ConvInteger", 10)
def conv_integer(node, ins, ctx):
    x, w = ins[0], ins[1]
    zx = ins[2] if len(ins) > 2 else None
    zw = ins[3] if len(ins) > 3 else None
    xdt = _want(x, Q8, "x")
    wdt = _want(w, Q8, "w")
    kw, shape = _qconv_geometry(node, x, w)
    O, Cg, KH, KW = w.shape
    G = kw["groups"]
    if O % G:
        raise ValueError(f"W has {O} output channels, not a multiple of group={G}")
    # A runtime x zero point (DynamicQuantizeLinear's, in dynamic models) is read back per call.
    if zx is not None and zx.shape is not None and dim_prod(zx.shape) != 1:
        raise Unsupported("a per-channel x_zero_point: the column trick pads with one zero point")
    zxv = _param(zx, "x_zero_point", None, 0) if zx is None or zx.host else None
    zwv = _param(zw, "w_zero_point", O, 0)
    if zx is not None:
        _want(zx, (xdt,), "x_zero_point")
    if zw is not None:
        _want(zw, (wdt,), "w_zero_point")
    po = _po()
    Og, Kg = O // G, Cg * KH * KW

    def run(a):
        xa, wa = a[0], a[1]
        n = xa.shape[0]
        if zxv is not None:
            zx_ = int(zxv[0])
        else:
            zx_ = int(np.asarray(to_host(a[2])).reshape(-1)[0])
        zw_ = np.broadcast_to(zwv, (O,)) if zwv.size > 1 else np.full(O, int(zwv[0]))
        # x - x_zero_point as float32 (exact), its columns padded with 0, back to 8 bits: the columns
        # of x padded with its zero point, (N, C*kh*kw, P).
        shifted = po.dequantize(xa, 1.0, zx_, backend=ctx.backend)
        cols = po.im2col(shifted, (KH, KW), stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"],
                         backend=ctx.backend)
        cols = po.quantize(cols, 1.0, zx_, dtype=xdt.name, backend=ctx.backend)
        P = cols.shape[2]
        cols = po.transpose(cols, (1, 0, 2), backend=ctx.backend).reshape(G * Kg, n * P)
        wm = wa.reshape(O, Kg)
        parts = [po.int8_gemm(wm[g * Og:(g + 1) * Og], cols[g * Kg:(g + 1) * Kg], a_zero_point=zw_[g * Og:(g + 1) * Og],
                              b_zero_point=zx_, backend=ctx.backend) for g in range(G)]
        y = parts[0] if G == 1 else po.concat(parts, 0, backend=ctx.backend)      # (O, N*P)
        y = po.transpose(y.reshape(O, n, P), (1, 0, 2), backend=ctx.backend)
        return [y.reshape(n, O, *_out_hw(xa.shape, kw, KH, KW))]

    return Step([Info(shape, I32, layout="NCHW")], ctx.label("conv_integer", "im2col+int8_gemm_auto"), run)


def _out_hw(xshape, kw, KH, KW):
    from ..conv import _geometry

    g = _geometry("ConvInteger", xshape[0], xshape[1], xshape[2], xshape[3], 0, 1, KH, KW, kw["stride"],
                  kw["padding"], kw["dilation"])
    return g.OH, g.OW


# ---------------------------------------------------------------------------------------------
# Dynamic quantization
# ---------------------------------------------------------------------------------------------
def _range(x, backend: str):
    """(min, max) of x as float32 host scalars, reduced where x lives."""
    return np.float32(to_host(x.min())), np.float32(to_host(x.max()))


def dynamic_params(lo: np.float32, hi: np.float32):
    """ONNX Runtime's DynamicQuantizeLinear parameters in float32: (scale, uint8 zero point)."""
    lo, hi = min(lo, np.float32(0)), max(hi, np.float32(0))
    scale = np.float32(1) if hi == lo else np.float32(np.float32(hi - lo) / np.float32(255))
    zp = np.float32(np.float32(0) - np.float32(lo / scale))
    return scale, np.uint8(np.rint(np.clip(zp, np.float32(0), np.float32(255))))


@register("DynamicQuantizeLinear", 11)
def dynamic_quantize_linear(node, ins, ctx):
    x = ins[0]
    _want(x, (F32,), "x")
    po = _po()

    def run(a):
        xa = a[0]
        if xa.size == 0:
            raise ValueError("DynamicQuantizeLinear of an empty tensor: its range is undefined")
        lo, hi = _range(xa, ctx.backend)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("DynamicQuantizeLinear: x contains NaN or Inf")
        scale, zp = dynamic_params(lo, hi)
        y = po.quantize(xa, scale, zp, dtype="uint8", backend=ctx.backend)
        return [y, _like(y, np.array(scale, np.float32)), _like(y, np.array(zp, np.uint8))]

    return Step([Info(x.shape, U8), Info((), F32), Info((), U8)], ctx.label("quantize", "quantize_linear<uint8>"), run)


def _like(ref, host: np.ndarray):
    """``host`` on the device ``ref`` lives on (a 0-d parameter output)."""
    if isinstance(ref, np.ndarray):
        return host
    from .._runtime.device import get_device

    return get_device("cuda").upload(host)

