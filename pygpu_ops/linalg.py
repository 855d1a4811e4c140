"""GEMM: ``gemm``, ``matmul`` and the SGEMM optimization ladder (``sgemm_variants``), plus DGEMM.

Every ladder kernel has one signature (see ``cuda_src/sgemm/01_naive.cu``): row-major A (M, K),
B (K, N), C (M, N) with leading dimensions and batch strides, batch = ``blockIdx.z``, and
``C = alpha * A @ B + beta * C`` where beta == 0 never reads C. Transposed operands are
materialized row-major by the wrapper (an O(MK) copy next to O(MNK) work). Batch dimensions that
``matmul`` broadcasts are never materialized: they reach the kernels as batch stride 0, looping
launches over the dimensions a single stride cannot describe (`_launch_batched`).

Limits, the same on every backend (``ValueError`` before any copy): N and K at most
`GEMM_DIM_MAX` (the kernels take them, and the leading dimensions, as C ``int``; their int
indices run up to a tile past the last column / k step). M is not limited: the wrapper launches
it in chunks of at most 65535 tiles (``gridDim.y``), and the kernels form every product such as
``row * lda`` in 64 bits.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ._runtime import backends, validate
from ._runtime.device import Launch, device_scope, get_device
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range

MAX_GRID_YZ = 65535

#: The largest N and K (and M, where a kernel receives it whole, as int8_gemm's row sums do) that
#: the GEMM kernels take: ``int`` arguments, with int indices reaching up to a tile plus a vector
#: (< 4096) past the last row / column / k step. Shared by gemm, matmul, int8_gemm and qconv2d.
GEMM_DIM_MAX = 2**31 - 4096


def check_gemm_dims(op: str, dims: dict) -> None:
    """Each GEMM dimension in ``dims`` (name -> value) within ``[0, GEMM_DIM_MAX]``: a
    ``ValueError`` naming it otherwise, raised before any copy or allocation."""
    for name, value in dims.items():
        validate.check_int(op, name, value, lo=0, hi=GEMM_DIM_MAX)


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
DGEMM = _variant("blocktile_2d", "dgemm/01_blocktile_2d.cu", (128, 128, 8, 8, 8), (128, 128), (256,), prefix="dgemm")

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
    alpha, beta = st(alpha), st(beta)   # exact: gemm rounded them to the dtype already
    # gridDim.y and gridDim.z stop at 65535: larger problems go in chunks of rows / batches.
    rows = MAX_GRID_YZ * v.tile[0]
    for b0 in range(0, batch, MAX_GRID_YZ):
        nb = min(MAX_GRID_YZ, batch - b0)
        for m0 in range(0, M, rows):
            m = min(rows, M - m0)
            args = (np.int32(m), np.int32(N), np.int32(K), alpha,
                    a[b0:b0 + nb, m0:m0 + m], np.int32(lda), np.int64(sa),
                    b[b0:b0 + nb], np.int32(ldb), np.int64(sb),
                    beta, dst[b0:b0 + nb, m0:m0 + m], np.int32(ldc), np.int64(sc))
            dev.launch(v.kernel, launch_config(v, m, N, nb), args)


def _launch_batched(dev, v: GemmVariant, a, b, dst, alpha: float, beta: float) -> None:
    """dst (*batch, M, N) = alpha * a @ b + beta * dst for a (*batch, M, K), b (*batch, K, N):
    views over one batch shape in which broadcast dimensions have stride 0 (never copied).

    The kernels take one batch stride per operand (blockIdx.z). Batch dimensions of extent 1
    are dropped and neighbours merged wherever all three operands' strides allow; the longest
    remaining dimension becomes the kernels' batch and the others are looped over, so
    (100000, 1, M, K) @ (1, 3, K, N) is 3 launches of 100000 batches (x2: gridDim.z chunks).
    """
    nb = dst.ndim - 2
    groups = []                          # (extent, strides of a, b, dst in bytes) per merged dim
    for i in range(nb):
        n = dst.shape[i]
        if n == 1:
            continue
        st = (a.strides[i], b.strides[i], dst.strides[i])
        if groups and all(p == s * n for p, s in zip(groups[-1][1], st)):
            groups[-1] = (groups[-1][0] * n, st)
        else:
            groups.append((n, st))
    (M, K), N = a.shape[-2:], b.shape[-1]
    if not groups:
        first = (0,) * nb
        _device_gemm(dev, v, a[first][None], b[first][None], dst[first][None], alpha, beta)
        return
    # Merged dimensions satisfy stride[i] == stride[i+1] * extent[i+1] in every operand, so these
    # reshapes are views (dst is written through them).
    ext = tuple(n for n, _ in groups)
    a, b, dst = a.reshape(ext + (M, K)), b.reshape(ext + (K, N)), dst.reshape(ext + (M, N))
    k = max(range(len(ext)), key=lambda i: (ext[i], i))
    loops = [(slice(None),) if i == k else range(n) for i, n in enumerate(ext)]
    for idx in itertools.product(*loops):
        _device_gemm(dev, v, a[idx], b[idx], dst[idx], alpha, beta)


def _readable(dev, x) -> bool:
    """Whether the kernels can read ``x`` (..., R, C) in place: addressable, unit-stride columns,
    non-negative row stride below 2**31 elements and non-negative whole-element batch strides."""
    if not dev.addressable(x):
        return False
    item = x.dtype.itemsize
    if any(s < 0 or s % item for s in x.strides[:-2]):
        return False
    return dev.rowmajor_layout(x[(0,) * (x.ndim - 2)])[0]


def _kernel_operand(dev, x):
    """``x`` (..., R, C) as a device array the kernels read as it is: a view when it already
    is one (`_readable`), else a packed copy. Batch dimensions ``x`` broadcasts (stride 0) stay
    broadcast (``dev.asarray`` keeps them so): only the data behind them is packed, so memory
    stays proportional to the data the caller holds, never to the broadcast view."""
    x = dev.asarray(x)
    shape = tuple(x.shape)
    bcast = tuple(shape[i] > 1 and x.strides[i] == 0 for i in range(len(shape) - 2))
    base = x[tuple(slice(0, 1) if s else slice(None) for s in bcast)] if any(bcast) else x
    if base.size and not _readable(dev, base):
        base = dev.contiguous(base)
    return dev.xp.broadcast_to(base, shape) if any(bcast) else base


def _writable_rowmajor(dev, x) -> bool:
    """Whether the kernels can write ``x`` (batch, M, N) in place: addressable, walkable row by
    row, and batches that do not overlap."""
    ok, ld, sb = dev.rowmajor_layout(x)
    return ok and dev.addressable(x) and (x.shape[0] <= 1 or sb >= x.shape[1] * ld)


def _run_device(backend: str, v: GemmVariant, a3, b3, c3, out3, shape, dtype, alpha, beta):
    """Shared by gemm and matmul: a3 (*batch, M, K), b3 (*batch, K, N) over one batch shape
    (broadcast dimensions with stride 0); c3 / out3 (*batch, M, N) or None. Returns the result
    reshaped to ``shape``, or None when it went to ``out3``.

    ``out3`` is the caller's memory: written in place when the kernel can address it, else the
    result is computed in a scratch array and copied in. K == 0 gives ``beta * c`` (zeros when
    beta == 0): the empty product is not formed and alpha is not applied (BLAS, ``torch.addmm``).
    """
    dev = get_device(backend)
    a3, b3 = dev.asarray(a3), dev.asarray(b3)
    *batch, M, K = a3.shape
    N = b3.shape[-1]
    full = tuple(batch) + (M, N)
    dst = out3 if out3 is not None and _writable_rowmajor(dev, out3) else dev.empty(full, dtype)
    if dst.size:
        if beta != 0 and c3 is not dst:
            dst[...] = c3
        if K == 0:
            if beta == 0:
                dst.fill(0)
            else:
                with np.errstate(over="ignore"):
                    dst *= dtype.type(beta)
        else:
            _launch_batched(dev, v, a3, b3, dst, alpha, beta)
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

    ``alpha`` and ``beta`` are real numbers, rounded to the operands' dtype; NaN and +-Inf are
    accepted and act as in IEEE arithmetic (as in NumPy and PyTorch), a value beyond float64's
    range is a ``ValueError``. ``trans_a`` / ``trans_b`` are bools (``numpy.bool_`` too).
    K == 0 (an empty product) gives ``beta * c``, or zeros when ``beta == 0``, on every backend:
    alpha is not applied, as in BLAS and ``torch.addmm`` (so ``alpha=nan`` gives no NaN there).
    N and K are at most `GEMM_DIM_MAX` on every backend. Results are plain ``numpy.ndarray``
    (``numpy.matrix`` inputs included) on the CPU backends.
    """
    op = "gemm"
    name = backends.resolve(op, backend, {"a": a, "b": b, "c": c, "out": out})
    alpha = validate.check_real(op, "alpha", alpha)
    beta = validate.check_real(op, "beta", beta)
    trans_a = validate.check_bool(op, "trans_a", trans_a)
    trans_b = validate.check_bool(op, "trans_b", trans_b)
    dtype = validate.check_dtype(op, "a", a, (np.float32, np.float64))
    validate.check_same_dtype(op, "a", dtype, b=b, c=c)
    with np.errstate(over="ignore", under="ignore"):
        # Rounded to the dtype once, so every backend sees the same numbers (1e39 is inf in float32
        # and a beta that rounds to 0 does not read c, as in the kernels).
        alpha, beta = float(dtype.type(alpha)), float(dtype.type(beta))
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
    check_gemm_dims(op, {"N (columns of op(b))": N, "K (columns of op(a))": K})
    if beta != 0 and c is None:
        raise ValueError("gemm: c is required when beta != 0")
    if c is not None:
        try:
            fits = np.broadcast_shapes(tuple(c.shape), (M, N)) == (M, N)   # (1, 2) does not fit (1, 1)
        except ValueError:
            fits = False
        if not fits or len(c.shape) > 2:
            raise ValueError(f"gemm: c has shape {tuple(c.shape)}; expected one that broadcasts to ({M}, {N})")
    if out is not None:
        _check_out(op, out, (M, N), dtype)
    label = "numpy" if name == "numpy" else v.label
    with op_range(op, label), device_scope(op, name, {"a": a, "b": b, "c": c, "out": out}):
        if name == "numpy":
            opa, opb = np.asarray(a), np.asarray(b)
            opa, opb = (opa.T if trans_a else opa), (opb.T if trans_b else opb)
            return _numpy_gemm(opa, opb, None if c is None else np.asarray(c), alpha, beta, dtype, out)
        dev = get_device(name)
        xp = dev.xp
        c3 = None
        if beta != 0:
            c3 = xp.broadcast_to(dev.view(c), (M, N))[None]
        if name == "cuda":  # a CUDA tensor may expose only DLPack (no .T): a CuPy view first
            a, b = dev.asarray(a), dev.asarray(b)
        opa = _kernel_operand(dev, a.T if trans_a else a)
        opb = _kernel_operand(dev, b.T if trans_b else b)
        res = _run_device(name, v, opa[None], opb[None], c3,
                          None if out is None else dev.view(out)[None], (M, N), dtype, alpha, beta)
        return out if out is not None else dev.result(res)


def _numpy_gemm(opa, opb, c, alpha, beta, dtype, out):
    # beta * c first: ``out`` may be ``c`` itself (numpy.matmul buffers any other overlap).
    alpha_t, beta_t = dtype.type(alpha), dtype.type(beta)     # exact: gemm rounded them already
    with np.errstate(invalid="ignore", over="ignore"):
        scaled_c = beta_t * c if beta != 0.0 else None
    if opa.shape[1] == 0:
        # The empty product: beta * c, alpha not applied (BLAS / torch.addmm), as on the device.
        r = np.empty((opa.shape[0], opb.shape[1]), dtype) if out is None else out
        r[...] = 0 if scaled_c is None else scaled_c
        return r
    # NaN / Inf arise silently, as in the kernels (inf - inf, inf * 0): no RuntimeWarning.
    with np.errstate(invalid="ignore", over="ignore"):
        r = _native_matmul(opa, opb, out)
        if r is None:
            r = np.matmul(opa, opb, out=out)
        if alpha != 1.0:
            r *= alpha_t
        if scaled_c is not None:
            r += scaled_c
    return r


#: The native GEMM's tile (cpu_src/sgemm.cpp: MR rows x NR columns per micro-kernel call).
NATIVE_MR, NATIVE_NR = 14, 32


def native_threads(M: int, N: int, K: int) -> int:
    """Threads for a native (M, N, K) product: `native.threads_for` of M * N * K / 16 "bytes", so
    a second thread joins from about 4M multiply-adds (~40 us of one core at the kernel's ~200
    GFLOP/s), and never in a fork child or inside a Python pool chunk."""
    from ._runtime import native

    return native.threads_for(M * N * K // 16)


def native_blocks(M: int, N: int, K: int, n_threads: int, mr: int = NATIVE_MR, nr: int = NATIVE_NR):
    """``[(m0, m1, n0, n1), ...]``: blocks of C for a native GEMM on ``n_threads`` threads, for a
    kernel of ``mr`` x ``nr`` register tiles over ``nr``-column panels of packed B (the float32
    GEMM's by default; the int8 GEMM passes its own).
    Columns are split (in whole NR panels) when they divide evenly over the threads or are
    plenty, since then a block packs only its own columns of B, into up to two blocks per thread:
    on a shared machine a thread that starts late, or a core another process holds, then still
    leaves the work balanced (traced here: with one block per thread the caller often ran both
    while the other thread waited for a core). Otherwise rows (in whole MR tiles), one block per
    thread, each packing all of B."""
    from ._runtime import threads

    t = int(n_threads)
    panels, tiles = ceil_div(N, nr), ceil_div(M, mr)
    if t <= 1 or (panels < t and tiles < t):
        return [(0, M, 0, N)]
    if panels >= t and (panels % t == 0 or panels >= 4 * t or tiles < t):
        return [(0, M, a * nr, min(N, b * nr)) for a, b in threads.split(panels, 1, t, 2)]
    return [(a * mr, min(M, b * mr), 0, N) for a, b in threads.split(tiles, 1, t)]


@functools.lru_cache(maxsize=512)
def native_block_table(M: int, N: int, K: int, n_threads: int, mr: int = NATIVE_MR,
                       nr: int = NATIVE_NR) -> Tuple[np.ndarray, int]:
    """`native_blocks` as a read-only (n, 4) int64 array and its address, cached per problem: a
    repeated product builds neither again (the list, the array and the pointer cost ~5 us, as
    long as a quarter of a 256^3 int8 GEMM)."""
    from ._runtime import native

    arr = np.array(native_blocks(M, N, K, n_threads, mr, nr), np.int64).reshape(-1, 4)
    arr.flags.writeable = False
    return arr, native.ptr(arr)


def native_run(table: Tuple[np.ndarray, int], n_threads: int, fn, *args) -> None:
    """``fn(*args, blocks, len(blocks), threads)``: a native entry point that runs the C blocks of
    a `native_block_table` on ``n_threads`` OpenMP threads."""
    arr, addr = table
    fn(*args, addr, len(arr), n_threads if len(arr) > 1 else 1)


def native_sgemm(a, b, bias=None, act: int = 0, slope: float = 0.0, out=None, lib=None):
    """``act(a @ b + bias)`` in float32 by the native kernel (``cpu_src/sgemm.cpp: sgemm_f32``),
    or None where the native loops are unavailable. ``a`` (M, K) and ``b`` (K, N) are float32
    (``a`` is copied when its rows are not unit-stride; ``b`` may have any strides), ``bias``
    (N,) or None; ``act`` 0 none, 1 relu, 2 leaky (``slope``), 3 relu6. ``out``: an (M, N) float32
    array with unit column stride to write into (rows at any stride), else a new one. ``lib``: a
    CDLL with the same exports (the tests' portable build), default `native.lib`."""
    from ._runtime import native

    lib = native.lib() if lib is None else lib
    if lib is None:
        return None
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    (M, K), (Kb, N) = a.shape, b.shape
    if K != Kb:
        raise ValueError(f"native_sgemm: a is {a.shape} and b is {b.shape}; inner dimensions differ")
    if a.strides[1] != 4 or a.strides[0] % 4 or a.strides[0] < 0:
        a = np.ascontiguousarray(a)
    if any(st % 4 or st < 0 for st in b.strides):
        b = np.ascontiguousarray(b)
    if out is None:
        out = np.empty((M, N), np.float32)
    elif out.shape != (M, N) or out.dtype != np.float32 or out.strides[1] != 4 or out.strides[0] % 4:
        raise ValueError(f"native_sgemm: out must be float32 ({M}, {N}) with unit column stride")
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    if bias is not None and bias.shape != (N,):
        raise ValueError(f"native_sgemm: bias has shape {bias.shape}; expected ({N},)")
    if out.size == 0:
        return out
    ptr = native.ptr
    lda, (rs, cs), ldc = a.strides[0] // 4, (st // 4 for st in b.strides), out.strides[0] // 4
    nt = native_threads(M, N, K)
    native_run(native_block_table(M, N, K, nt), nt, lib.sgemm_f32, ptr(a), lda, ptr(b), rs, cs, ptr(out), ldc, K,
               None if bias is None else ptr(bias), act, slope)
    return out


#: The numpy backend's 2-D float32 products of at least this many flops run the native GEMM
#: (measured here: from about 96^3 it beats numpy.matmul's OpenBLAS, 1.7x at 1024^3; below, the
#: ~10 us of ctypes calls dominate).
NATIVE_MATMUL_MIN_FLOPS = 2e6


def _native_matmul(a, b, out):
    """``a @ b`` into ``out`` (or a new C-contiguous array) by `native_sgemm`, or None where
    numpy.matmul should run: not 2-D float32, too small, no native loops, or an ``out`` that is not
    row-major or overlaps an operand (numpy.matmul buffers that; the kernel would read its own
    partial results)."""
    if a.dtype != np.float32 or b.dtype != np.float32 or a.ndim != 2 or b.ndim != 2:
        return None
    if 2.0 * a.shape[0] * a.shape[1] * b.shape[1] < NATIVE_MATMUL_MIN_FLOPS:
        return None
    if out is not None and (out.strides[1] != 4 or out.strides[0] % 4 or out.strides[0] < 0
                            or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        return None
    return native_sgemm(a, b, out=out)


def matmul(a, b, *, variant="auto", backend="auto"):
    """``a`` (..., M, K) @ ``b`` (..., K, N); batch dimensions broadcast as in NumPy.

    On the device backends a broadcast batch dimension is never copied (batch stride 0 in the
    kernels; see `_launch_batched`): memory is the inputs plus the result. N and K are at most
    `GEMM_DIM_MAX` on every backend. The result is a C-contiguous ``numpy.ndarray`` on the CPU
    backends (``numpy.matrix`` inputs included).
    """
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
        batch_shape = tuple(np.broadcast_shapes(tuple(ba), tuple(bb)))
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of a {tuple(a.shape)} and b {tuple(b.shape)} "
                         f"do not broadcast") from None
    check_gemm_dims(op, {"N (b's last dimension)": N, "K (a's last dimension)": K})
    label = "numpy" if name == "numpy" else v.label
    with op_range(op, label), device_scope(op, name, {"a": a, "b": b}):
        if name == "numpy":
            a, b = np.asarray(a), np.asarray(b)
            r = _native_matmul(a, b, None) if a.ndim == 2 and b.ndim == 2 else None
            return np.ascontiguousarray(np.matmul(a, b)) if r is None else r   # C order, as the kernels write
        dev = get_device(name)
        xp = dev.xp
        a3 = xp.broadcast_to(_kernel_operand(dev, a), batch_shape + (M, K))
        b3 = xp.broadcast_to(_kernel_operand(dev, b), batch_shape + (K, N))
        res = _run_device(name, v, a3, b3, None, None, batch_shape + (M, N), dtype, 1.0, 0.0)
        return dev.result(res)
