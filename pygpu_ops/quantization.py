"""INT8: ``quant_params``, ``quantize`` / ``dequantize`` (ONNX QuantizeLinear / DequantizeLinear),
``int8_gemm`` (ONNX MatMulInteger) with its optimization ladder (``int8_gemm_variants``),
``qlinear_matmul`` (ONNX QLinearMatMul, requantized inside the GEMM kernel) and ``qconv2d`` (ONNX
QLinearConv: int8 im2col padded with the input zero point + the dp4a GEMM with a bias /
per-channel requantization / ReLU epilogue, ``cuda_src/int8_gemm/qconv_gemm_dp4a.cu``).

Numerical contract (every backend gives the same bits):

* ``quantize`` divides: ``q = saturate(rint(x / scale) + zero_point)`` with one correctly rounded
  float32 division (``__fdiv_rn`` in the kernel, NumPy float32 division in the fallback), ties to
  even (``__float2int_rn`` / ``np.rint``). Scales are rounded to float32 first and must be finite,
  positive and normal (>= 2**-126: CuPy compiles with ``-ftz=true``, which would flush a subnormal
  scale to zero). Subnormal inputs are treated as 0 (what ``-ftz`` does on the GPU, done explicitly
  everywhere), NaN gives the zero point, +-Inf saturate. float16 / float64 inputs are converted to
  float32 first.
* ``dequantize``: ``float32(q - zero_point) * scale``, one float32 rounding of an exact integer
  (exact for 8-bit inputs) and one correctly rounded product (``__fmul_rn``, never an FMA).
* ``int8_gemm``: exact int32. The kernels read every operand as signed bytes (a uint8 operand with
  its top bit flipped, i.e. minus 128, its zero point shifted alike), accumulate ``sum a*b`` in
  int32 and correct for the zero points in the epilogue in 64-bit integers, gemmlowp style
  (``acc - zb*rowsum(a) - za*colsum(b) + K*za*zb``). Exactness needs the raw accumulator
  (``<= 16384 K``) and the result (``<= K max|a - za| max|b - zb|``) inside int32: K is limited to
  ``(2**31 - 1) // max(16384, max|a - za| * max|b - zb|)`` - 131071 for int8 with zero zero
  points, 33025 in the worst case (uint8 with zero point 0 or 255) - and a larger K raises
  ``ValueError`` on every backend. The CPU fallback runs ``cpu_src/int8_gemm.cpp`` (vpdpbusd
  with AVX512-VNNI, else a plain int32 loop; wrapping int32 arithmetic, exact because the result
  fits), or where the native loops are not built (``PYGPU_OPS_NATIVE=0``, no compiler) float32
  BLAS over slices of K in which every partial sum is an integer of at most 2**24 (exact in
  float32), added in int32.
* ``qlinear_matmul``: ``y = saturate(rint(float32(acc) * mult[n]) + y_zero_point)`` with
  ``mult = float32(float32(a_scale * b_scale[n]) / y_scale)`` computed once on the host, the
  product one correctly rounded float32 multiplication. This is float32 arithmetic, as ONNX Runtime
  does it; against exact float64 arithmetic it can differ by one unit, only where the exact value
  lies within a few float32 ulps of a rounding tie (``mult`` carries up to 2 roundings, ``float32(acc)``
  one when ``|acc| > 2**24``, the product one: a relative error below ``2**-22``).
* ``qconv2d``: ``y = saturate(rint(float32(acc + bias[o]) * mult[o]) + y_zero_point)``, then
  ``max(y, y_zero_point)`` with the fused ReLU; ``acc = sum (x - x_zero_point) * w`` exact (padding
  holds ``x_zero_point``), ``mult[o] = float32(float32(x_scale * w_scale[o]) / y_scale)``: the
  arithmetic of ``qlinear_matmul`` with ``acc + bias`` in place of ``acc``, the same one-unit
  bound against float64 next to ties. Weights are int8 with zero point 0; the device path folds
  the input zero point into the bias it passes (``bias[o] - x_zero_point * sum w[o]``, host side).
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

from ._runtime import backends, native, npfast, validate
from ._runtime.validate import INT32_MAX
from ._runtime.device import Launch, device_scope, get_device, to_host
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range
from .linalg import check_gemm_dims

FLT_MIN = np.float32(2.0 ** -126)
MAX_GRID_YZ = 65535
QDTYPES: Dict[str, np.dtype] = {"int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8)}
_CTYPE = {np.dtype(np.int8): "signed char", np.dtype(np.uint8): "unsigned char", np.dtype(np.int32): "int"}
#: Each quantized dtype's range (``numpy.iinfo`` builds an object per call: ~1 us).
_RANGE = {dt: (int(np.iinfo(dt).min), int(np.iinfo(dt).max)) for dt in _CTYPE}

# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------
QUANTIZE = {dt: register(Kernel("quant/quantize_linear.cu", "quantize_linear", (_CTYPE[dt],)))
            for dt in QDTYPES.values()}
DEQUANTIZE = {dt: register(Kernel("quant/dequantize_linear.cu", "dequantize_linear", (_CTYPE[dt],)))
              for dt in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32))}
ROW_SUMS = register(Kernel("int8_gemm/zero_point_sums.cu", "int8_gemm_row_sums"))
COL_SUMS = register(Kernel("int8_gemm/zero_point_sums.cu", "int8_gemm_col_sums"))


@dataclass(frozen=True)
class Int8GemmVariant:
    """One step of the int8 GEMM ladder: a kernel per output type, the C tile of a block, its block,
    its dynamic shared memory (bytes)."""

    name: str
    kernels: Dict[np.dtype, Kernel]
    tile: Tuple[int, int]
    block: Tuple[int, ...]
    smem: int = 0


def _variant(name: str, source: str, targs: tuple, tile, block, no_spill: bool = True,
             smem: int = 0) -> Int8GemmVariant:
    kernels = {dt: register(Kernel(source=source, symbol=f"int8_gemm_{name}", template_args=(ctype,) + targs,
                                   no_spill=no_spill))
               for dt, ctype in _CTYPE.items()}
    return Int8GemmVariant(name, kernels, tile, block, smem)


#: int8_gemm_mma's K tile (bytes) and pipeline depth; its stages live in dynamic shared memory:
#: (128 x 128 bytes of A + 128 x 128 of B) per stage, 64 KiB for 2 stages, the most sm_75 allows a
#: block (03_mma.cu's header says why not 3).
MMA_BK, MMA_STAGES = 128, 2


# Slowest first; template arguments after the output type are each file's documented defaults.
INT8_GEMM_LADDER: Tuple[Int8GemmVariant, ...] = (
    _variant("naive", "int8_gemm/01_naive.cu", (), (16, 16), (16, 16), no_spill=False),
    _variant("dp4a", "int8_gemm/02_dp4a.cu", (32,), (128, 128), (256,)),
    _variant("mma", "int8_gemm/03_mma.cu", (MMA_BK, MMA_STAGES), (128, 128), (256,),
             smem=MMA_STAGES * 2 * 128 * MMA_BK),
)
_BY_NAME = {v.name: v for v in INT8_GEMM_LADDER}
_VARIANT_CHOICES = ("auto",) + tuple(_BY_NAME)


def int8_gemm_variants() -> Tuple[str, ...]:
    """Names of the int8 GEMM optimization ladder, slowest step first; each is a valid ``variant=``.

    ``"auto"`` picks ``"mma"`` (tensor cores) on a CUDA device of compute capability 8.0 or newer,
    else ``"dp4a"``; every variant runs (and is exact) everywhere: ``"mma"`` on sm_75 with its
    m8n8k16 tensor-core shape and synchronous copies (no cp.async there, so ``auto`` keeps dp4a),
    on the emulator through the plain-CUDA twins of its PTX.
    """
    return tuple(v.name for v in INT8_GEMM_LADDER)


# ---------------------------------------------------------------------------------------------
# Launch configurations (one per kernel)
# ---------------------------------------------------------------------------------------------
ELEMENTWISE_BLOCK = 256
ELEMENTWISE_MAX_GRID = 8192


def elementwise_launch(n: int) -> Launch:
    """quantize_linear / dequantize_linear: 4 elements per thread, grid-stride beyond the cap."""
    return Launch(grid=(min(ceil_div(ceil_div(n, 4), ELEMENTWISE_BLOCK), ELEMENTWISE_MAX_GRID),),
                  block=(ELEMENTWISE_BLOCK,))


def row_sums_launch(M: int) -> Launch:
    """int8_gemm_row_sums: one warp per row, 8 rows per block."""
    return Launch(grid=(ceil_div(M, 8),), block=(256,))


def col_sums_launch(N: int) -> Launch:
    """int8_gemm_col_sums: one thread per column."""
    return Launch(grid=(ceil_div(N, 256),), block=(256,))


def gemm_launch(v: Int8GemmVariant, M: int, N: int) -> Launch:
    """The int8 GEMM ladder: one block per (BM x BN) tile of C."""
    return Launch(grid=(ceil_div(N, v.tile[1]), ceil_div(M, v.tile[0])), block=v.block, shared_mem=v.smem)


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
def _host_param(op: str, name: str, v) -> np.ndarray:
    """A scale / zero point (number, NumPy array, or GPU array) as a host NumPy array."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a number or an array of numbers; got bool {v!r}")
    if isinstance(v, (numbers.Number, np.generic, np.ndarray)):
        return np.asarray(v)
    if backends.array_kind(v) == "cuda":
        return to_host(v)
    raise TypeError(f"{op}: {name} must be a number or an array; got {type(v).__module__}.{type(v).__qualname__}")


def _scales(op: str, name: str, v, count: Optional[int], allow_scalar: bool = False) -> np.ndarray:
    """float32 scales: shape (1,) for ``count=None`` (per tensor), else (count,)."""
    if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
        validate.check_finite(op, name, v)     # 10**400, inf, nan: ValueError (not OverflowError)
    arr = _host_param(op, name, v)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{op}: {name} must hold real numbers; got dtype {arr.dtype}")
    scalar = arr.ndim == 0 or arr.shape == (1,)
    if count is None and not scalar:
        raise ValueError(f"{op}: {name} must be a scalar (per tensor); got shape {arr.shape}")
    if count is not None and arr.shape != (count,) and not (allow_scalar and scalar):
        want = f"({count},)" + (" or a scalar" if allow_scalar else "")
        raise ValueError(f"{op}: {name} must have shape {want}; got shape {arr.shape}")
    with np.errstate(over="ignore"):
        s = arr.astype(np.float32).reshape(-1)
    bad = ~np.isfinite(s) | ~(s > 0)
    if bad.any():
        raise ValueError(f"{op}: {name} must be finite and positive (as float32); got {arr.reshape(-1)[bad][0]!r}")
    if (s < FLT_MIN).any():
        raise ValueError(f"{op}: {name} must be at least {float(FLT_MIN)!r} (the smallest normal float32; "
                         f"subnormal scales are flushed to zero on the GPU); got {float(s[s < FLT_MIN][0])!r}")
    return s


def _zero_points(op: str, name: str, v, count: Optional[int], qdtype: np.dtype) -> np.ndarray:
    """int64 zero points in ``qdtype``'s range: shape (1,) (scalar) or (count,).

    The range is checked on the values, before any conversion: ``numpy.uint64(2**64 - 128)``
    is 18446744073709551488, out of range, never -128 (its int64 bit pattern); a Python int
    of any size is a ``ValueError`` when out of range, never an ``OverflowError``."""
    lo, hi = _RANGE[qdtype]
    if type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))):
        if not lo <= int(v) <= hi:
            raise ValueError(f"{op}: {name} must lie in [{lo}, {hi}] ({qdtype}); "
                             f"got {validate.short_repr(int(v))}")
        return np.array([int(v)], np.int64)   # checked: skips the array route (~10 us a call)
    arr = _host_param(op, name, v)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be an integer or an integer array; got dtype {arr.dtype}")
    scalar = arr.ndim == 0 or arr.shape == (1,)
    if not scalar and (count is None or arr.shape != (count,)):
        want = "a scalar" if count is None else f"a scalar or shape ({count},)"
        raise ValueError(f"{op}: {name} must be {want}; got shape {arr.shape}")
    flat = arr.reshape(-1)
    # Compare in the array's own dtype family: unsigned values against the (non-negative) max
    # only, signed ones after an exact widening to int64.
    if flat.dtype.kind == "u":
        out = flat > np.uint64(hi)
    else:
        wide = flat.astype(np.int64)
        out = (wide < lo) | (wide > hi)
    if out.any():
        raise ValueError(f"{op}: {name} must lie in [{lo}, {hi}] ({qdtype}); got {int(flat[out][0])}")
    return flat.astype(np.int64)


def _axis(op: str, axis, ndim: int) -> Optional[int]:
    if axis is None:
        return None
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (numbers.Integral,)):
        raise TypeError(f"{op}: axis must be an int or None; got {type(axis).__name__} {axis!r}")
    axis = int(axis)   # by value: numpy.uint64(2**64 - 1) is out of range, not -1
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {validate.short_repr(axis)} is out of range for an array of {ndim} dimensions")
    return axis % ndim


def _qdtype(op: str, name: str, dtype) -> np.dtype:
    if isinstance(dtype, str):
        validate.check_choice(op, name, dtype, tuple(QDTYPES))
        return QDTYPES[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in QDTYPES.values():
        raise ValueError(f"{op}: {name} must be 'int8' or 'uint8'; got {dtype!r}")
    return dt


def _float_input(op: str, name: str, x) -> np.dtype:
    return validate.check_dtype(op, name, x, (np.float32, np.float16, np.float64))


# ---------------------------------------------------------------------------------------------
# CPU fallback helpers (bit-identical to the kernels)
# ---------------------------------------------------------------------------------------------
def _round_saturate_np(v: np.ndarray, zp, qdtype: np.dtype) -> np.ndarray:
    """``round_saturate`` of cuda_src/quant/qcommon.cuh on float32 ``v``."""
    r = np.rint(v)
    r = np.where(np.isnan(r), np.float32(0), r)
    r = np.clip(r, -65536, 65536).astype(np.int64) + zp
    info = np.iinfo(qdtype)
    return np.clip(r, info.min, info.max).astype(qdtype)


def _channel_shape(ndim: int, axis: Optional[int], C: int):
    return () if axis is None else (C,) + (1,) * (ndim - axis - 1)


# ---------------------------------------------------------------------------------------------
# quant_params / quantize / dequantize
# ---------------------------------------------------------------------------------------------
def quant_params(x, *, axis=None, symmetric=True, dtype="int8", backend="auto"):
    """``(scale, zero_point)`` for quantizing ``x`` to ``dtype``, per tensor or per channel along ``axis``.

    * symmetric, int8: ``scale = max|x| / 127``, zero point 0 (range [-127, 127]);
      symmetric, uint8: the same scale, zero point 128 (range [1, 255]).
    * asymmetric: ``scale = (max(0, max x) - min(0, min x)) / 255`` (in float64, rounded to
      float32), ``zero_point = saturate(rint(qmin - min(0, min x) / scale))``, so 0.0 quantizes to
      the zero point exactly and dequantizes to exactly 0.0.
    * An all-zero channel (or tensor, or an empty one) gets ``scale = 1.0`` and the zero point the
      formulas give for a zero range: 0 (int8 symmetric), 128 (uint8 symmetric), ``qmin``
      (asymmetric: -128 / 0). Any positive scale represents it exactly; 1.0 keeps it valid input to
      ``quantize``. A scale that would be below the smallest normal float32 is raised to it.

    Symmetric scales are computed in float32 (``float32(max|x|) / 127``). Returns float32 scales
    and zero points of ``dtype``, 0-d (per tensor) or of shape (x.shape[axis],), as arrays of the
    input's kind. NaN or Inf in ``x`` raise ``ValueError``, and so does a float64 ``x`` whose scale
    would not be a finite float32 (symmetric: ``max|x|`` beyond float32's range; asymmetric: the
    range / 255), in both modes alike. This is a reduction done with the
    array library (NumPy / CuPy), no custom kernel; the emulator backend runs it in NumPy.
    """
    op = "quant_params"
    name = backends.resolve(op, backend, {"x": x})
    _float_input(op, "x", x)
    qdt = _qdtype(op, "dtype", dtype)
    symmetric = validate.check_bool(op, "symmetric", symmetric)
    ndim = len(x.shape)
    ax = _axis(op, axis, ndim)
    with op_range(op, name), device_scope(op, name, {"x": x}):
        xd = get_device("cuda").asarray(x) if name == "cuda" else np.asarray(x)
        C = 1 if ax is None else x.shape[ax]
        red = tuple(i for i in range(ndim) if i != ax)
        if xd.size == 0:
            lo = hi = np.zeros(C, np.float64)
        else:
            hi = to_host(xd.max(axis=red)).astype(np.float64).reshape(-1)
            lo = to_host(xd.min(axis=red)).astype(np.float64).reshape(-1)
            if not (np.isfinite(hi).all() and np.isfinite(lo).all()):   # max / min propagate NaN
                raise ValueError(f"{op}: x contains NaN or Inf; no finite scale represents it")
        info = np.iinfo(qdt)
        if symmetric:
            with np.errstate(over="ignore"):
                amax = np.maximum(np.abs(hi), np.abs(lo)).astype(np.float32)
            scale = amax / np.float32(127)
            if not np.isfinite(scale).all():   # float64 x beyond float32's range
                raise ValueError(f"{op}: the range of x exceeds what a float32 scale can express")
            zp = np.full(C, 0 if qdt == np.int8 else 128, np.int64)
        else:
            lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
            with np.errstate(over="ignore"):
                scale = ((hi - lo) / 255.0).astype(np.float32)
            if not np.isfinite(scale).all():
                raise ValueError(f"{op}: the range of x exceeds what a float32 scale can express")
            safe = np.where(scale > 0, scale, np.float32(1)).astype(np.float64)
            zp = np.clip(np.rint(info.min - lo / safe), info.min, info.max).astype(np.int64)
        zero = scale == 0
        scale = np.where(zero, np.float32(1), np.maximum(scale, FLT_MIN)).astype(np.float32)
        if not symmetric:
            zp = np.where(zero, info.min, zp)
        zp = zp.astype(qdt)
        if ax is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        if name == "cuda":
            dev = get_device("cuda")
            return dev.upload(scale), dev.upload(zp)
        return scale, zp


def _channelwise_np(shape, ax, C, s, z):
    """Scale and zero point shaped to broadcast against an array of ``shape`` along axis ``ax``."""
    if ax is None:
        return s[0], z[0]
    shp = _channel_shape(len(shape), ax, C)
    return s.reshape(shp), np.broadcast_to(z, (C,)).reshape(shp)


def _launch_channelwise(dev, kernel, src, out, s, z, ax, C):
    """One elementwise launch of quantize/dequantize over C-contiguous ``src`` into ``out``."""
    n = int(np.prod(src.shape, dtype=np.int64))
    inner = int(np.prod(src.shape[ax + 1:], dtype=np.int64)) if ax is not None else 1
    args = (np.int64(n), src.reshape(-1), out.reshape(-1), dev.constant(s),
            dev.constant(np.broadcast_to(z, (C,)).astype(np.int32)), np.int32(C), np.int64(inner))
    dev.launch(kernel, elementwise_launch(n), args)


def quantize(x, scale, zero_point=0, *, axis=None, dtype="int8", backend="auto"):
    """ONNX QuantizeLinear: ``saturate(round_half_to_even(x / scale) + zero_point)`` as int8 / uint8.

    ``axis=None``: per tensor, ``scale`` and ``zero_point`` scalars. ``axis=k``: per channel,
    ``scale`` of shape (x.shape[k],), ``zero_point`` a scalar or of that shape. See the module
    docstring for the exact float32 arithmetic (true division, ties to even, NaN -> zero point).
    Scales must be finite (``ValueError``, also for numbers beyond float64's range); zero points
    are checked by value against ``dtype``'s range (a ``numpy.uint64`` never wraps). The result is
    a new C-contiguous array of x's shape (0-d for a 0-d ``x``) on every backend.
    """
    op = "quantize"
    name = backends.resolve(op, backend, {"x": x})
    _float_input(op, "x", x)
    qdt = _qdtype(op, "dtype", dtype)
    ax = _axis(op, axis, len(x.shape))
    C = 1 if ax is None else int(x.shape[ax])
    s = _scales(op, "scale", scale, None if ax is None else C)
    z = _zero_points(op, "zero_point", zero_point, None if ax is None else C, qdt)
    kernel = QUANTIZE[qdt]
    with op_range(op, "numpy" if name == "numpy" else kernel.symbol), device_scope(op, name, {"x": x}):
        if name == "numpy":
            x32 = np.asarray(x, dtype=np.float32)
            if ax is None:   # per tensor: cache-sized blocks on the thread pool, the same steps
                with np.errstate(over="ignore", invalid="ignore"):
                    return npfast.quantize_tensor(x32, s[0], int(z[0]), qdt, FLT_MIN)
            sb, zb = _channelwise_np(x32.shape, ax, C, s, z)
            xf = np.where(np.abs(x32) < FLT_MIN, np.float32(0), x32)
            with np.errstate(over="ignore", invalid="ignore"):
                return np.asarray(_round_saturate_np(xf / sb, zb, qdt), order="C")   # as the kernel: C order, 0-d stays 0-d
        dev = get_device(name)
        out = dev.empty(tuple(x.shape), qdt)
        if out.size:
            xd = dev.asarray(x)
            if xd.dtype != np.float32 or not xd.flags.c_contiguous:
                xd32 = dev.empty(tuple(x.shape), np.float32)
                xd32[...] = xd   # converts (float16 / float64) and packs on the device
                xd = xd32
            _launch_channelwise(dev, kernel, xd, out, s, z, ax, C)
        return dev.result(out)


def dequantize(q, scale, zero_point=0, *, axis=None, backend="auto"):
    """ONNX DequantizeLinear: ``(q - zero_point) * scale`` as float32.

    ``q`` is int8, uint8 or int32; ``axis`` as in :func:`quantize`; ``zero_point`` must lie in
    ``q``'s range (checked by value). The result is a new C-contiguous float32 array of q's shape
    (0-d for a 0-d ``q``) on every backend.
    """
    op = "dequantize"
    name = backends.resolve(op, backend, {"q": q})
    qdt = validate.check_dtype(op, "q", q, (np.int8, np.uint8, np.int32))
    ax = _axis(op, axis, len(q.shape))
    C = 1 if ax is None else int(q.shape[ax])
    s = _scales(op, "scale", scale, None if ax is None else C)
    z = _zero_points(op, "zero_point", zero_point, None if ax is None else C, qdt)
    kernel = DEQUANTIZE[qdt]
    with op_range(op, "numpy" if name == "numpy" else kernel.symbol), device_scope(op, name, {"q": q}):
        if name == "numpy":
            qa = np.asarray(q)
            if ax is None and qdt.itemsize == 1:   # per tensor, 8-bit: blocks on the thread pool
                return npfast.dequantize_tensor(qa, s[0], int(z[0]))
            sb, zb = _channelwise_np(qa.shape, ax, C, s, z)
            return np.asarray((qa.astype(np.int64) - zb).astype(np.float32) * sb, order="C")   # C order, 0-d stays 0-d
        dev = get_device(name)
        out = dev.empty(tuple(q.shape), np.float32)
        if out.size:
            _launch_channelwise(dev, kernel, dev.contiguous(dev.asarray(q)), out, s, z, ax, C)
        return dev.result(out)


# ---------------------------------------------------------------------------------------------
# int8 GEMM
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _GemmSpec:
    """What the checks of an int8 GEMM establish from its operands' dtypes and shapes and its zero
    points (nothing depends on the operands' values): sizes, zero points in the kernels' signed
    domain, flips, and the native GEMM's zero-point buffer."""

    M: int
    N: int
    K: int
    za: np.ndarray      # (1,) or (M,) int64, read-only, shifted: a uint8 operand's zero point minus 128
    zb: np.ndarray      # (1,) or (N,)
    a_flip: int
    b_flip: int
    zp: np.ndarray      # int32 [za..., zb...] in the operands' own ranges (`_native_acc`), read-only
    zp_addr: int
    #: `_native_params`' parameter blocks, by (a's strides, b's strides, threads)
    native_params: dict = field(default_factory=dict, compare=False, repr=False)


class _GemmProblem:
    """A validated int8 GEMM: the operands and their `_GemmSpec` (whose fields it reads through)."""

    __slots__ = ("a", "b", "spec")

    def __init__(self, a, b, spec: _GemmSpec):
        self.a, self.b, self.spec = a, b, spec

    M = property(lambda self: self.spec.M)
    N = property(lambda self: self.spec.N)
    K = property(lambda self: self.spec.K)
    za = property(lambda self: self.spec.za)
    zb = property(lambda self: self.spec.zb)
    a_flip = property(lambda self: self.spec.a_flip)
    b_flip = property(lambda self: self.spec.b_flip)


def _gemm_problem(op: str, a, b, a_zero_point, b_zero_point, a_zp_per_row: bool) -> _GemmProblem:
    """Checks an int8 GEMM's operands and zero points (``ValueError`` / ``TypeError`` naming the
    argument). With Python int zero points (the default 0, and what the ONNX runner passes) the
    spec comes from a cache keyed by the dtypes, shapes and zero points, which determine it: a
    repeated call checks only the operands' dtypes and ranks (~1 us, against ~5 us for the whole
    check on the 2-core test machine, a tenth of a 256^3 product)."""
    adt = validate.check_dtype(op, "a", a, (np.int8, np.uint8))
    bdt = validate.check_dtype(op, "b", b, (np.int8, np.uint8))
    validate.check_ndim(op, "a", a, 2)
    validate.check_ndim(op, "b", b, 2)
    key = (op, adt, tuple(a.shape), bdt, tuple(b.shape), a_zp_per_row)
    if type(a_zero_point) is int and type(b_zero_point) is int:
        return _GemmProblem(a, b, _cached_gemm_spec(*key, a_zero_point, b_zero_point))
    return _GemmProblem(a, b, _gemm_spec(*key, a_zero_point, b_zero_point))


def _gemm_spec(op: str, adt: np.dtype, a_shape: tuple, bdt: np.dtype, b_shape: tuple, a_zp_per_row: bool,
               a_zero_point, b_zero_point) -> _GemmSpec:
    (M, K), (Kb, N) = a_shape, b_shape
    if K != Kb:
        raise ValueError(f"{op}: a is {a_shape} and b is {b_shape}: a's columns ({K}) must "
                         f"equal b's rows ({Kb})")
    check_gemm_dims(op, {"M (a's rows)": M, "N (b's columns)": N, "K (a's columns)": K})
    za = _zero_points(op, "a_zero_point", a_zero_point, M if a_zp_per_row else None, adt)
    zb = _zero_points(op, "b_zero_point", b_zero_point, N, bdt)
    a_shift = 128 if adt == np.uint8 else 0
    b_shift = 128 if bdt == np.uint8 else 0
    zp = np.concatenate([za, zb]).astype(np.int32)      # own ranges, for the native GEMM
    za, zb = za - a_shift, zb - b_shift
    za_lo, za_hi = int(za.min()), int(za.max())
    zb_lo, zb_hi = int(zb.min()), int(zb.max())
    amax = max(127 - za_lo, za_hi + 128)
    bmax = max(127 - zb_lo, zb_hi + 128)
    kmax = INT32_MAX // max(16384, amax * bmax)
    if K > kmax:
        raise ValueError(
            f"{op}: K={K} is too large for exact int32 accumulation with these types and zero points: "
            f"K * max|a - a_zero_point| * max|b - b_zero_point| = {K} * {amax} * {bmax} (and the raw "
            f"sum, up to K * 16384) must stay below 2**31, so K <= {kmax}; split K and add the "
            f"int32 results in int64")
    for arr in (za, zb, zp):
        arr.flags.writeable = False
    flip = 0x80808080
    return _GemmSpec(M, N, K, za, zb, flip if a_shift else 0, flip if b_shift else 0, zp, native.ptr(zp))


_cached_gemm_spec = functools.lru_cache(maxsize=256)(_gemm_spec)


def _pick(variant: str, backend_name: str) -> Int8GemmVariant:
    """The variant to run; ``variant`` was validated by the caller (before the device scope)."""
    if variant != "auto":
        return _BY_NAME[variant]
    if backend_name == "cuda" and get_device("cuda").compute_capability()[0] >= 8:
        return _BY_NAME["mma"]
    return _BY_NAME["dp4a"]


#: Integers up to 2**24 in magnitude are exact in float32.
_F32_EXACT = 1 << 24


#: The native int8 GEMM's register tile (rows) and packed-b panel (columns): cpu_src/int8_gemm.cpp.
INT8_MR, INT8_NR = 6, 64


def _native_acc(p: _GemmProblem, lib) -> np.ndarray:
    """int32 sum_k (a - za)(b - zb) by ``cpu_src/int8_gemm.cpp`` (vpdpbusd with AVX512-VNNI, a
    plain int32 loop without), exact for every K `_gemm_problem` accepts; the output in blocks
    (`linalg.native_block_table`) on OpenMP threads (`native.threads_for`, with M * N * K / 8 as
    the work in bytes: about 2M multiply-adds, 5 us of one core, before a second thread helps).
    A call hands the loop the three arrays and a prepared parameter block (`_native_params`)."""
    s = p.spec
    a, b = np.asarray(p.a), np.asarray(p.b)
    nt = native.threads_for(s.M * s.N * s.K // 8)
    params = _native_params(s, a, b, nt)     # held through the call: the block it points to stays
    addr, copy_a, copy_b = params[:3]
    if copy_a:
        a = np.ascontiguousarray(a)
    if copy_b:
        b = np.ascontiguousarray(b)
    out = np.empty((s.M, s.N), np.int32)
    ptr = native.ptr
    lib.int8_gemm(ptr(a), ptr(b), ptr(out), addr)
    return out


def _byte_rows(x) -> Tuple[bool, int]:
    """Whether x (2-D, 8-bit) must be copied for its rows to be contiguous bytes (a column slice
    or a row-strided view is read in place; column strides other than 1 and reversed rows are
    not), and the row stride in bytes that the loop then reads with."""
    st = x.strides
    if st[1] != 1 or st[0] < 0:
        return True, x.shape[1]
    return False, st[0] if x.shape[0] > 1 else x.shape[1]


def _native_params(s: _GemmSpec, a, b, n_threads: int) -> tuple:
    """``int8_gemm``'s int64 parameter block (cpu_src/int8_gemm.cpp) for this problem, the
    operands' strides and the thread count: ``(address, copy a, copy b, block, block table)``,
    whether a and b are copied first (`_byte_rows`). Built once and kept in the spec; the tuple
    holds the block and the table it points to, so while a caller holds it neither is freed
    (another thread may clear the spec's entries meanwhile). The Python side of a 256^3 product was 17
    us, two thirds of the loop's own time; preparing the 13 scalars once and converting 4
    arguments instead of 16 per call is most of what brought it down."""
    key = (a.strides, b.strides, n_threads)
    got = s.native_params.get(key)
    if got is None:
        from .linalg import native_block_table

        (copy_a, lda), (copy_b, ldb) = _byte_rows(a), _byte_rows(b)
        table, table_addr = native_block_table(s.M, s.N, s.K, n_threads, INT8_MR, INT8_NR)
        za_n = s.za.size
        q = np.array([lda, int(not s.a_flip), ldb, int(not s.b_flip), s.K,
                      s.zp_addr, int(za_n > 1), s.zp_addr + 4 * za_n, int(s.zb.size > 1), s.N,
                      table_addr, len(table), n_threads if len(table) > 1 else 1], np.int64)
        q.flags.writeable = False
        if len(s.native_params) >= 16:      # a bound for strided views of many shapes
            s.native_params.clear()
        got = s.native_params[key] = (native.ptr(q), copy_a, copy_b, q, table)
    return got


def _numpy_acc(p: _GemmProblem) -> np.ndarray:
    """int32 sum_k (a - za)(b - zb): the native GEMM (`_native_acc`) where it is built (measured
    at 512^3 int8 on this 2-core Zen 5: 0.33 ms on one core, 425 G multiply-adds/s, against 2.1
    ms for the route below on two), else float32 BLAS over slices of K short enough to be
    exact: with |a - za| <= amax and |b - zb| <= bmax every partial sum of ``kc`` products is an integer
    of magnitude <= kc * amax * bmax <= 2**24, so SGEMM rounds nothing whatever its summation
    order; the slices' results are added in int32 (the total fits: `_gemm_problem` checked K).
    int8 without zero points has amax * bmax = 2**14: K up to 1024 in one SGEMM, about twice the
    speed of the float64 BLAS this replaces, in half the memory."""
    lib = native.lib()
    if lib is not None:
        return _native_acc(p, lib)
    za = p.za.astype(np.float32)[:, None] if p.za.size > 1 else np.float32(p.za[0])
    zb = p.zb.astype(np.float32)[None, :] if p.zb.size > 1 else np.float32(p.zb[0])
    a = np.asarray(p.a).astype(np.float32)
    b = np.asarray(p.b).astype(np.float32)
    # the signed domain: a uint8 operand (flip) is shifted by 128, as its zero point already is
    a -= za + (128 if p.a_flip else 0)
    b -= zb + (128 if p.b_flip else 0)
    amax = max(float(np.abs(a).max(initial=0)), 1.0)
    bmax = max(float(np.abs(b).max(initial=0)), 1.0)
    kc = max(1, int(_F32_EXACT // (amax * bmax)))
    if kc >= p.K:
        return (a @ b).astype(np.int32)
    acc = np.zeros((p.M, p.N), np.int32)
    for k0 in range(0, p.K, kc):
        acc += (a[:, k0:k0 + kc] @ b[k0:k0 + kc]).astype(np.int32)
    return acc


def _device_gemm(name: str, v: Int8GemmVariant, p: _GemmProblem, out_dtype: np.dtype,
                 mult: Optional[np.ndarray], y_zp: int):
    dev = get_device(name)
    M, N, K = p.M, p.N, p.K
    out = dev.empty((M, N), out_dtype)
    if M == 0 or N == 0:
        return out
    if K == 0:
        if mult is None:
            out.fill(0)
        else:
            row = _round_saturate_np(np.zeros(N, np.float32) * np.broadcast_to(mult, (N,)), y_zp, out_dtype)
            out[...] = dev.upload(np.broadcast_to(row, (M, N)))
        return out
    a, lda, _ = dev.rowmajor(dev.asarray(p.a))
    b, ldb, _ = dev.rowmajor(dev.asarray(p.b))
    a, b = a.view(np.int8), b.view(np.int8)
    # Parameters through dev.constant: a repeated call copies nothing to the GPU (and so can be
    # captured into a CUDA graph).
    za = dev.constant(p.za.astype(np.int32))
    zb = dev.constant(p.zb.astype(np.int32))
    has_zp = bool(p.za.any() or p.zb.any())
    # int8_gemm_mma multiplies uint8 operands as they are (.u8) and removes the offset with the
    # row / column sums in its epilogue (03_mma.cu): it needs them whenever an operand is uint8.
    if v.name == "mma" and (p.a_flip or p.b_flip):
        has_zp = True
    if has_zp:
        row_sum = dev.empty((M,), np.int32)
        col_sum = dev.empty((N,), np.int32)
        dev.launch(ROW_SUMS, row_sums_launch(M),
                   (np.int32(M), np.int32(K), a, np.int32(lda), np.uint32(p.a_flip), row_sum))
        dev.launch(COL_SUMS, col_sums_launch(N),
                   (np.int32(K), np.int32(N), b, np.int32(ldb), np.uint32(p.b_flip), col_sum))
    else:
        row_sum = col_sum = dev.constant(np.zeros(1, np.int32))   # not read (has_zp == 0)
    ym = dev.constant(mult if mult is not None else np.ones(1, np.float32))
    kernel = v.kernels[np.dtype(out_dtype)]
    a_step = 1 if p.za.size > 1 else 0
    # gridDim.y stops at 65535: taller problems go in chunks of rows.
    rows = MAX_GRID_YZ * v.tile[0]
    for m0 in range(0, M, rows):
        m = min(rows, M - m0)
        args = (np.int32(m), np.int32(N), np.int32(K),
                a[m0:m0 + m], np.int32(lda), np.uint32(p.a_flip),
                b, np.int32(ldb), np.uint32(p.b_flip),
                za[m0:m0 + m] if a_step else za, np.int32(a_step),
                zb, np.int32(1 if p.zb.size > 1 else 0),
                row_sum[m0:m0 + m] if has_zp else row_sum, col_sum, np.int32(has_zp),
                ym, np.int32(1 if ym.size > 1 else 0), np.int32(y_zp),
                out[m0:m0 + m], np.int32(N))
        dev.launch(kernel, gemm_launch(v, m, N), args)
    return out


def int8_gemm(a, b, *, a_zero_point=0, b_zero_point=0, variant="auto", backend="auto"):
    """ONNX MatMulInteger: int32 (M, N) ``= sum_k (a[m, k] - a_zp) * (b[k, n] - b_zp)``, exact.

    ``a`` (M, K) and ``b`` (K, N) are int8 or uint8 (independently). ``a_zero_point`` is a
    scalar or per row (M,), ``b_zero_point`` a scalar or per column (N,), each in its operand's
    range. ``variant``: one of :func:`int8_gemm_variants` or ``"auto"``. K is limited so that
    int32 accumulation is exact (see the module docstring); beyond it: ``ValueError``.
    """
    op = "int8_gemm"
    name = backends.resolve(op, backend, {"a": a, "b": b})
    p = _gemm_problem(op, a, b, a_zero_point, b_zero_point, a_zp_per_row=True)
    validate.check_choice(op, "variant", variant, _VARIANT_CHOICES)
    if name == "numpy":
        with op_range(op, "numpy"):
            return _numpy_acc(p)
    with device_scope(op, name, {"a": a, "b": b}):
        v = _pick(variant, name)      # "auto" asks the arrays' device, so inside its scope
        with op_range(op, f"int8_gemm_{v.name}"):
            return get_device(name).result(_device_gemm(name, v, p, np.dtype(np.int32), None, 0))


def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point, *,
                   out_dtype="int8", variant="auto", backend="auto"):
    """ONNX QLinearMatMul: the int8 GEMM requantized in its epilogue to ``out_dtype``.

    ``y[m, n] = saturate(rint(a_scale * b_scale[n] / y_scale * acc[m, n]) + y_zero_point)`` with
    ``acc = int8_gemm(a, b, a_zero_point, b_zero_point)``; ``a_scale``, ``a_zero_point``,
    ``y_scale``, ``y_zero_point`` scalars, ``b_scale`` / ``b_zero_point`` scalars or per column
    (N,). float32 arithmetic, identical on every backend (module docstring). ``variant`` selects
    the GEMM kernel as in :func:`int8_gemm` (an extension of the API's signature).
    """
    op = "qlinear_matmul"
    name = backends.resolve(op, backend, {"a": a, "b": b})
    ydt = _qdtype(op, "out_dtype", out_dtype)
    p = _gemm_problem(op, a, b, a_zero_point, b_zero_point, a_zp_per_row=False)
    sa = _scales(op, "a_scale", a_scale, None)
    sb = _scales(op, "b_scale", b_scale, p.N, allow_scalar=True)
    sy = _scales(op, "y_scale", y_scale, None)
    zy = int(_zero_points(op, "y_zero_point", y_zero_point, None, ydt)[0])
    with np.errstate(over="ignore", under="ignore"):
        mult = ((sa * sb) / sy).astype(np.float32)
    validate.check_choice(op, "variant", variant, _VARIANT_CHOICES)
    with device_scope(op, name, {"a": a, "b": b}):
        v = _pick(variant, name)      # "auto" asks the arrays' device, so inside its scope
        with op_range(op, "numpy" if name == "numpy" else f"int8_gemm_{v.name}"):
            if name == "numpy":
                acc = _numpy_acc(p).astype(np.float32)
                with np.errstate(over="ignore", invalid="ignore"):
                    return _round_saturate_np(acc * (mult if mult.size > 1 else mult[0]), zy, ydt)
            return get_device(name).result(_device_gemm(name, v, p, ydt, mult, zy))


# ---------------------------------------------------------------------------------------------
# Quantized convolution (ONNX QLinearConv)
# ---------------------------------------------------------------------------------------------
#: The quantized convolution's GEMM: int8_gemm_dp4a's main loop with a bias + per-channel
#: requantization + ReLU epilogue that stores into NCHW / NHWC (int8_gemm/qconv_gemm_dp4a.cu).
QCONV_GEMM: Dict[np.dtype, Kernel] = {
    dt: register(Kernel("int8_gemm/qconv_gemm_dp4a.cu", "qconv_gemm_dp4a", (_CTYPE[dt], 32), no_spill=True))
    for dt in QDTYPES.values()
}
QCONV_TILE = (128, 128)
QCONV_BLOCK = (256,)


def qconv_launch(M: int, N: int, groups: int) -> Launch:
    """qconv_gemm_dp4a: one block per 128 x 128 tile of the (M, N) GEMM, blockIdx.z = group."""
    return Launch(grid=(ceil_div(N, QCONV_TILE[1]), ceil_div(M, QCONV_TILE[0]), groups), block=QCONV_BLOCK)


def qconv2d(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias=None, *,
            stride=1, padding=0, dilation=1, groups=1, layout="NCHW", activation=None, out_dtype=None,
            backend="auto"):
    """ONNX QLinearConv: a quantized 2-D convolution, requantized to ``out_dtype``.

    ``x`` int8 / uint8, NCHW (N, C, H, W) or NHWC (N, H, W, C), with per-tensor ``x_scale`` and
    ``x_zero_point``; ``w`` int8, (O, C/groups, kh, kw) (NCHW) or (O, kh, kw, C/groups) (NHWC), with
    ``w_scale`` a scalar or per output channel (O,) and ``w_zero_point`` 0 (symmetric weights; a
    scalar or (O,) of zeros); ``bias`` None or int32 (O,) at scale ``x_scale * w_scale[o]`` and zero
    point 0; ``y_scale`` / ``y_zero_point`` per tensor. ``stride``, ``padding`` (int, pair,
    ``"valid"``, ``"same"``), ``dilation``, ``groups`` and ``layout`` as in :func:`conv2d`; the
    padding holds ``x_zero_point`` (the quantized 0.0). ``activation``: None or ``"relu"`` (fused:
    the result is clamped below at ``y_zero_point``). ``out_dtype``: "int8", "uint8" or None (the
    dtype of ``x``). Result (N, O, OH, OW) or (N, OH, OW, O).

    Per output element, ``acc = sum (x - x_zero_point) * w`` over the window (exact int32), then
    ``y = saturate(rint(float32(acc + bias[o]) * mult[o]) + y_zero_point)`` with
    ``mult[o] = float32(float32(x_scale * w_scale[o]) / y_scale)``: the float32 arithmetic of
    :func:`qlinear_matmul` (module docstring), identical on every backend. ``acc + bias`` must fit
    in int32: ``C/groups * kh * kw`` is limited so that ``K * 128 * max|x - x_zp| + max|bias|`` stays
    below 2**31 (``ValueError`` otherwise).
    """
    op = "qconv2d"
    from .conv import _activation, _check_layout, conv_geometry

    name = backends.resolve(op, backend, {"x": x, "w": w, "bias": bias})
    layout = _check_layout(op, layout)
    xdt = validate.check_dtype(op, "x", x, (np.int8, np.uint8))
    validate.check_dtype(op, "w", w, (np.int8,))
    if bias is not None:
        validate.check_dtype(op, "bias", bias, (np.int32,))
    ydt = xdt if out_dtype is None else _qdtype(op, "out_dtype", out_dtype)
    g = conv_geometry(op, x, w, bias, groups, layout, stride, padding, dilation)
    N, O, KH, KW, Cg = g.N, g.O, g.KH, g.KW, g.C // g.G
    relu = _activation(op, activation)
    sx = _scales(op, "x_scale", x_scale, None)
    sw = _scales(op, "w_scale", w_scale, O, allow_scalar=True)
    sy = _scales(op, "y_scale", y_scale, None)
    zx = int(_zero_points(op, "x_zero_point", x_zero_point, None, xdt)[0])
    zw = _zero_points(op, "w_zero_point", w_zero_point, O, np.dtype(np.int8))
    if zw.any():
        raise ValueError(f"{op}: w_zero_point must be 0 (symmetric weights, per tensor or per channel); "
                         f"got {int(zw[zw != 0][0])}")
    zy = int(_zero_points(op, "y_zero_point", y_zero_point, None, ydt)[0])
    Kg = Cg * KH * KW
    check_gemm_dims(op, {"C/groups*kh*kw": Kg, "OH*OW": g.OH * g.OW, "O": O})
    with np.errstate(over="ignore", under="ignore"):
        mult = np.broadcast_to((sx * sw) / sy, (O,)).astype(np.float32)
    shape = (N, O, g.OH, g.OW) if layout == "NCHW" else (N, g.OH, g.OW, O)
    kernel = QCONV_GEMM[ydt]
    with device_scope(op, name, {"x": x, "w": w, "bias": bias}), \
            op_range(op, "numpy" if name == "numpy" else kernel.symbol):
        # Device work (the weight sums, the bias read back) runs inside the arrays' device scope.
        bh = to_host(bias).astype(np.int64) if bias is not None else np.zeros(O, np.int64)
        xmax = max(zx - int(np.iinfo(xdt).min), int(np.iinfo(xdt).max) - zx)   # max |x - x_zero_point|
        bmax = int(np.abs(bh).max()) if O else 0
        if Kg * 16384 > INT32_MAX or Kg * 128 * xmax + bmax > INT32_MAX:
            raise ValueError(
                f"{op}: C/groups*kh*kw = {Kg} is too large for exact int32 accumulation: K * 128 * "
                f"max|x - x_zero_point| + max|bias| = {Kg} * 128 * {xmax} + {bmax} (and K * 16384) must stay "
                f"below 2**31")
        if name == "numpy":
            return _numpy_qconv(x, w, bh, g, layout, zx, mult, zy, relu, ydt, shape)
        if layout == "NCHW" and g.Og > MAX_GRID_YZ * QCONV_TILE[0]:
            raise ValueError(f"{op}: O/groups must be at most {MAX_GRID_YZ * QCONV_TILE[0]} for NCHW (gridDim.y); "
                             f"got {g.Og}")
        dev = get_device(name)
        out = dev.empty(shape, ydt)
        if out.size == 0:
            return dev.result(out)
        if Kg == 0:
            row = _qconv_finish_np(np.zeros((1, O), np.int64), bh, mult, zy, relu, ydt)[0]
            out[...] = dev.upload(row.reshape((1, O, 1, 1) if layout == "NCHW" else (1, 1, 1, O)))
            return dev.result(out)
        # The int32 bias with the input zero point folded in (qconv_gemm_dp4a.cu): in the kernels'
        # signed domain a uint8 input is x - 128 and its zero point zx - 128. Only O numbers
        # cross to the host: the per-channel weight sums, summed where w lives.
        wsum = to_host(dev.asarray(w).reshape(O, Kg).sum(axis=1, dtype=np.int64))
        shift = 0 if xdt == np.int8 else 128
        folded = (bh - (zx - shift) * wsum).astype(np.uint32).view(np.int32)   # wraps mod 2**32
        chan = (dev.constant(folded), dev.constant(mult))
        flip = np.uint32(0 if xdt == np.int8 else 0x80808080)
        if layout == "NCHW":
            _device_qconv_nchw(dev, kernel, x, w, g, xdt, zx, flip, chan, zy, relu, out)
        else:
            _device_qconv_nhwc(dev, kernel, x, w, g, xdt, zx, flip, chan, zy, relu, out)
        return dev.result(out)


def _qconv_finish_np(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray, zy: int, relu: int, ydt):
    """The epilogue of qconv_gemm_dp4a.cu on int64 sums (..., O) (channel last)."""
    r = (acc + bias).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        y = _round_saturate_np(r * mult, zy, ydt)
    if relu:
        y = np.maximum(y, ydt.type(zy))
    return y


def _numpy_qconv(x, w, bh, g, layout, zx, mult, zy, relu, ydt, shape):
    """NumPy fallback: the convolution of (x - x_zero_point) with zero padding (the input's zero
    point, in that domain) through conv2d's own fallback (only the taps that read the input, so
    the cost does not grow with padding or dilation), as float64 sums, which are exact: every
    product and partial sum is an integer below 2**53. Then the requantizing epilogue."""
    from .conv import _numpy_conv

    xs = np.asarray(x).astype(np.float64) - zx
    acc = _numpy_conv(xs, np.asarray(w).astype(np.float64), None, g, layout, 0, 0.0, shape, dtype=np.float64)
    if layout == "NCHW":
        acc = np.moveaxis(acc, 1, -1)                                          # channel last
    y = _qconv_finish_np(acc.astype(np.int64), bh, mult, zy, relu, ydt)
    return np.ascontiguousarray(np.moveaxis(y, -1, 1)) if layout == "NCHW" else y


def _device_qconv_nchw(dev, kernel, x, w, g, xdt, zx, flip, chan, zy, relu, out):
    """Weights (O/G, Kg) times column chunks (Kg, pixels of several images), per group."""
    from .conv import _chunk, _launch_im2col_nchw

    xd = dev.contiguous(x)
    Og, P = g.Og, g.OH * g.OW
    Kg = g.Cg * g.KH * g.KW
    Kc = g.C * g.KH * g.KW
    wd = dev.contiguous(w).reshape(-1)
    bias_d, mult_d = chan
    flat = out.reshape(-1)
    total = g.N * P
    per = _chunk(total, Kc, INT32_MAX)
    col = dev.empty((Kc * per,), xdt)
    for q0 in range(0, total, per):
        nc = min(per, total - q0)
        colv = col[:Kc * nc].reshape(Kc, nc)
        _launch_im2col_nchw(dev, xd, g, xdt, q0, nc, colv, nc, 0, pad=zx)
        colb = colv.reshape(-1).view(np.int8)
        for g0 in range(0, g.G, MAX_GRID_YZ):
            ng = min(MAX_GRID_YZ, g.G - g0)
            args = (np.int32(Og), np.int32(nc), np.int32(Kg),
                    wd[g0 * Og * Kg:], np.int32(Kg), np.int64(Og * Kg), np.uint32(0),
                    colb[g0 * Kg * nc:], np.int32(nc), np.int64(Kg * nc), flip,
                    flat[g0 * Og * P:], np.int32(P), np.int64(Og * P),
                    np.int64(q0), np.int64(P), np.int64(g.O * P),
                    bias_d[g0 * Og:], mult_d[g0 * Og:], np.int64(Og), np.int32(1),
                    np.int32(zy), np.int32(relu))
            dev.launch(kernel, qconv_launch(Og, nc, ng), args)


def _device_qconv_nhwc(dev, kernel, x, w, g, xdt, zx, flip, chan, zy, relu, out):
    """Column chunks (pixels, Kg) times the group's transposed weights (Kg, O/G), per group."""
    from .conv import _chunk, _launch_im2col_nhwc

    xd = dev.contiguous(x)
    Og = g.Og
    Kg = g.KH * g.KW * g.Cg
    wt = dev.contiguous(dev.asarray(w).reshape(g.G, Og, Kg).transpose(0, 2, 1)).reshape(-1)
    bias_d, mult_d = chan
    flat = out.reshape(-1)
    total = g.N * g.OH * g.OW
    per = _chunk(total, g.G * Kg, min(INT32_MAX, MAX_GRID_YZ * QCONV_TILE[0]))
    col = dev.empty((g.G * Kg * per,), xdt)
    for q0 in range(0, total, per):
        nr = min(per, total - q0)
        colv = col[:g.G * nr * Kg]
        _launch_im2col_nhwc(dev, xd, g, xdt, q0, nr, colv, pad=zx)
        cola = colv.view(np.int8)
        for g0 in range(0, g.G, MAX_GRID_YZ):
            ng = min(MAX_GRID_YZ, g.G - g0)
            args = (np.int32(nr), np.int32(Og), np.int32(Kg),
                    cola[g0 * nr * Kg:], np.int32(Kg), np.int64(nr * Kg), flip,
                    wt[g0 * Kg * Og:], np.int32(Og), np.int64(Kg * Og), np.uint32(0),
                    flat[q0 * g.O + g0 * Og:], np.int32(g.O), np.int64(Og),
                    np.int64(0), np.int64(2**62), np.int64(0),
                    bias_d[g0 * Og:], mult_d[g0 * Og:], np.int64(Og), np.int32(2),
                    np.int32(zy), np.int32(relu))
            dev.launch(kernel, qconv_launch(nr, Og, ng), args)
