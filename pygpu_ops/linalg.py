"""GEMM: ``gemm``, ``matmul`` and the SGEMM optimization ladder (``sgemm_variants``), plus DGEMM.

Every ladder kernel has one signature (see ``cuda_src/sgemm/01_naive.cu``): row-major A (M, K),
B (K, N), C (M, N) with leading dimensions and batch strides, batch = ``blockIdx.z``, and
``C = alpha * A @ B + beta * C`` where beta == 0 never reads C. Transposed operands are
materialized row-major by the wrapper (an O(MK) copy next to O(MNK) work).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ._runtime import backends, validate
from ._runtime.device import Launch, device_scope, get_device
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range

MAX_GRID_YZ = 65535


@dataclass(frozen=True)
class GemmVariant:
    """One step of a GEMM ladder: its kernel, the C tile (BM, BN) one block computes, its block."""

    name: str
    kernel: Kernel
    tile: Tuple[int, int]
    block: Tuple[int, ...]

    @property
    def label(self) -> str:
        """The name in NVTX ranges and benchmark rows: the ladder step, or the DGEMM symbol."""
        return self.name if self.kernel.symbol == f"sgemm_{self.name}" else self.kernel.symbol


def _variant(name: str, source: str, targs: tuple, tile: Tuple[int, int], block: Tuple[int, ...],
             prefix: str = "sgemm", no_spill: bool = True) -> GemmVariant:
    kernel = register(Kernel(source=source, symbol=f"{prefix}_{name}", template_args=targs, no_spill=no_spill))
    return GemmVariant(name, kernel, tile, block)


# The SGEMM ladder, slowest step first. Template arguments and block shapes are those each
# file's header documents as its defaults.
SGEMM_LADDER: Tuple[GemmVariant, ...] = (
    _variant("naive", "sgemm/01_naive.cu", (32, 32), (32, 32), (1024,), no_spill=False),
    _variant("coalesced", "sgemm/02_coalesced.cu", (32, 32), (32, 32), (1024,), no_spill=False),
    _variant("smem_tiled", "sgemm/03_smem_tiled.cu", (32,), (32, 32), (1024,), no_spill=False),
    _variant("blocktile_1d", "sgemm/04_blocktile_1d.cu", (64, 64, 8, 8), (64, 64), (512,)),
    _variant("blocktile_2d", "sgemm/05_blocktile_2d.cu", (128, 128, 8, 8, 8), (128, 128), (256,)),
    _variant("vectorized", "sgemm/06_vectorized.cu", (128, 128, 8, 8, 8), (128, 128), (256,)),
    _variant("double_buffered", "sgemm/07_double_buffered.cu", (128, 128, 8, 8, 8), (128, 128), (256,)),
    _variant("warptile", "sgemm/08_warptile.cu", (128, 128, 8, 32, 64, 2, 2, 4, 4), (128, 128), (256,)),
)
DGEMM = _variant("blocktile_2d", "dgemm/01_blocktile_2d.cu", (128, 64, 8, 8, 4), (128, 64), (256,), prefix="dgemm")

_BY_NAME = {v.name: v for v in SGEMM_LADDER}


def sgemm_variants() -> Tuple[str, ...]:
    """Names of the SGEMM optimization ladder, slowest step first; each is a valid ``variant=``."""
    return tuple(v.name for v in SGEMM_LADDER)


def _pick_variant(op: str, variant: str, dtype: np.dtype) -> GemmVariant:
    names = sgemm_variants()
    validate.check_choice(op, "variant", variant, ("auto",) + names)
    if dtype == np.float64:
        if variant != "auto":
            raise ValueError(
                f"{op}: variant {variant!r} is an SGEMM (float32) step; float64 runs the DGEMM "
                f"kernel, pass variant='auto'"
            )
        return DGEMM
    return SGEMM_LADDER[-1] if variant == "auto" else _BY_NAME[variant]


def launch_config(v: GemmVariant, M: int, N: int, batch: int) -> Launch:
    """The one place a GEMM launch is configured: one block per (BM x BN) tile of C, per batch."""
    return Launch(grid=(ceil_div(N, v.tile[1]), ceil_div(M, v.tile[0]), batch), block=v.block)


# ---------------------------------------------------------------------------------------------
# Device path (CUDA and emulator share it)
# ---------------------------------------------------------------------------------------------
def _device_gemm(dev, v: GemmVariant, a, b, dst, alpha: float, beta: float) -> None:
    """dst (batch, M, N) = alpha * a (batch, M, K) @ b (batch, K, N) + beta * dst."""
    batch, M, K = a.shape
    N = b.shape[2]
    a, lda, sa = dev.rowmajor(a)
    b, ldb, sb = dev.rowmajor(b)
    _, ldc, sc = dev.rowmajor(dst)
    st = np.float32 if dst.dtype == np.float32 else np.float64
    # gridDim.y and gridDim.z stop at 65535: larger problems go in chunks of rows / batches.
    rows = MAX_GRID_YZ * v.tile[0]
    for b0 in range(0, batch, MAX_GRID_YZ):
        nb = min(MAX_GRID_YZ, batch - b0)
        for m0 in range(0, M, rows):
            m = min(rows, M - m0)
            args = (np.int32(m), np.int32(N), np.int32(K), st(alpha),
                    a[b0:b0 + nb, m0:m0 + m], np.int32(lda), np.int64(sa),
                    b[b0:b0 + nb], np.int32(ldb), np.int64(sb),
                    st(beta), dst[b0:b0 + nb, m0:m0 + m], np.int32(ldc), np.int64(sc))
            dev.launch(v.kernel, launch_config(v, m, N, nb), args)


def _writable_rowmajor(dev, x) -> bool:
    """Whether the kernels can write ``x`` (batch, M, N) in place: addressable, walkable row by
    row, and batches that do not overlap."""
    ok, ld, sb = dev.rowmajor_layout(x)
    return ok and dev.addressable(x) and (x.shape[0] <= 1 or sb >= x.shape[1] * ld)


def _run_device(backend: str, v: GemmVariant, a3, b3, c3, out3, shape, dtype, alpha, beta):
    """Shared by gemm and matmul: a3 (batch, M, K), b3 (batch, K, N); c3/out3 (batch, M, N) or None.

    ``out3`` is the caller's memory: written in place when the kernel can address it, else the
    result is computed in a scratch array and copied in.
    """
    dev = get_device(backend)
    a3, b3 = dev.asarray(a3), dev.asarray(b3)
    batch, M, K = a3.shape
    N = b3.shape[2]
    dst = out3 if out3 is not None and _writable_rowmajor(dev, out3) else dev.empty((batch, M, N), dtype)
    if M and N and batch:
        if beta != 0 and c3 is not dst:
            dst[...] = c3
        if K == 0:
            if beta == 0:
                dst.fill(0)
            else:
                dst *= dtype.type(beta)
        else:
            _device_gemm(dev, v, a3, b3, dst, alpha, beta)
    if out3 is not None and dst is not out3:
        out3[...] = dst
        dst = out3
    return dst.reshape(shape) if out3 is None else None


# ---------------------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------------------
def _check_out(op: str, out, shape, dtype) -> None:
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{op}: out has shape {tuple(out.shape)}; expected {tuple(shape)}")
    validate.check_same_dtype(op, "a", dtype, out=out)


def gemm(a, b, c=None, *, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, variant="auto",
         out=None, backend="auto"):
    """``alpha * op(a) @ op(b) + beta * c``, ``op(x)`` being ``x.T`` when its ``trans_`` flag is set.

    float32 runs the SGEMM ladder (``variant``), float64 the DGEMM kernel. ``c`` is needed when
    ``beta != 0`` and must broadcast to (M, N); with ``beta == 0`` it is not read (BLAS
    convention: NaN in ``c`` do not propagate). ``out`` may be ``c`` for in-place use.
    """
    op = "gemm"
    name = backends.resolve(op, backend, {"a": a, "b": b, "c": c, "out": out})
    alpha = validate.check_real(op, "alpha", alpha)
    beta = validate.check_real(op, "beta", beta)
    dtype = validate.check_dtype(op, "a", a, (np.float32, np.float64))
    validate.check_same_dtype(op, "a", dtype, b=b, c=c)
    validate.check_ndim(op, "a", a, 2)
    validate.check_ndim(op, "b", b, 2)
    v = _pick_variant(op, variant, dtype)
    M, K = (a.shape[1], a.shape[0]) if trans_a else tuple(a.shape)
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else tuple(b.shape)
    if K != Kb:
        raise ValueError(
            f"gemm: inner dimensions differ: op(a) is ({M}, {K}) and op(b) is ({Kb}, {N}) "
            f"(a {tuple(a.shape)}, trans_a={trans_a}; b {tuple(b.shape)}, trans_b={trans_b})"
        )
    if beta != 0 and c is None:
        raise ValueError("gemm: c is required when beta != 0")
    if c is not None:
        try:
            np.broadcast_shapes(tuple(c.shape), (M, N))
        except ValueError:
            raise ValueError(f"gemm: c has shape {tuple(c.shape)}; expected one that broadcasts to ({M}, {N})") from None
        if len(c.shape) > 2:
            raise ValueError(f"gemm: c has shape {tuple(c.shape)}; expected ({M}, {N})")
    if out is not None:
        _check_out(op, out, (M, N), dtype)
    label = "numpy" if name == "numpy" else v.label
    with op_range(op, label), device_scope(op, name, {"a": a, "b": b, "c": c, "out": out}):
        if name != "numpy":  # a CUDA tensor may expose only DLPack (no .T): a CuPy view first
            a, b = get_device(name).asarray(a), get_device(name).asarray(b)
        opa = a.T if trans_a else a
        opb = b.T if trans_b else b
        if name == "numpy":
            return _numpy_gemm(opa, opb, c, alpha, beta, dtype, out)
        dev = get_device(name)
        xp = dev.xp
        c3 = None
        if beta != 0:
            c3 = xp.broadcast_to(dev.view(c), (M, N))[None]
        res = _run_device(name, v, dev.asarray(opa)[None], dev.asarray(opb)[None], c3,
                          None if out is None else dev.view(out)[None], (M, N), dtype, alpha, beta)
        return out if out is not None else dev.result(res)


def _numpy_gemm(opa, opb, c, alpha, beta, dtype, out):
    # beta * c first: ``out`` may be ``c`` itself (numpy.matmul buffers any other overlap).
    scaled_c = dtype.type(beta) * c if beta != 0.0 else None
    r = np.matmul(opa, opb, out=out)
    if alpha != 1.0:
        r *= dtype.type(alpha)
    if scaled_c is not None:
        r += scaled_c
    return r


def matmul(a, b, *, variant="auto", backend="auto"):
    """``a`` (..., M, K) @ ``b`` (..., K, N); batch dimensions broadcast as in NumPy."""
    op = "matmul"
    name = backends.resolve(op, backend, {"a": a, "b": b})
    dtype = validate.check_dtype(op, "a", a, (np.float32, np.float64))
    validate.check_same_dtype(op, "a", dtype, b=b)
    for n, x in (("a", a), ("b", b)):
        if len(x.shape) < 2:
            raise ValueError(f"{op}: {n} must be at least 2-D; got shape {tuple(x.shape)}")
    v = _pick_variant(op, variant, dtype)
    *ba, M, K = a.shape
    *bb, Kb, N = b.shape
    if K != Kb:
        raise ValueError(f"matmul: a is {tuple(a.shape)} and b is {tuple(b.shape)}: a's last dimension "
                         f"({K}) must equal b's second-to-last ({Kb})")
    try:
        batch_shape = np.broadcast_shapes(tuple(ba), tuple(bb))
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of a {tuple(a.shape)} and b {tuple(b.shape)} "
                         f"do not broadcast") from None
    label = "numpy" if name == "numpy" else v.label
    with op_range(op, label), device_scope(op, name, {"a": a, "b": b}):
        if name == "numpy":
            return np.matmul(a, b)
        dev = get_device(name)
        batch = int(np.prod(batch_shape)) if batch_shape else 1
        a3 = _as_batch(dev, a, batch_shape, batch, M, K)
        b3 = _as_batch(dev, b, batch_shape, batch, K, N)
        res = _run_device(name, v, a3, b3, None, None, tuple(batch_shape) + (M, N), dtype, 1.0, 0.0)
        return dev.result(res)


def _as_batch(dev, x, batch_shape, batch, rows, cols):
    """``x`` viewed as (batch, rows, cols): a 2-D operand gets batch stride 0 (no copy)."""
    xp = dev.xp
    x = dev.asarray(x)
    if x.ndim == 2:
        return xp.broadcast_to(x, (batch, rows, cols))
    if tuple(x.shape[:-2]) != tuple(batch_shape):
        # A partial broadcast has no single batch stride: materialize it (the one copy here).
        x = dev.contiguous(xp.broadcast_to(x, tuple(batch_shape) + (rows, cols)))
    return x.reshape(batch, rows, cols)
