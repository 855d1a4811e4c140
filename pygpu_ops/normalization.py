"""Softmax and log-softmax along any axis, and the softmax optimization ladder (``softmax_variants``).

The input is viewed as (outer, L, inner) around the softmax axis (made C-contiguous first when it
is not). With the axis last (inner == 1) the rows are contiguous and one of the ladder kernels in
``cuda_src/softmax/0*.cu`` runs; otherwise the strided kernel (``cuda_src/softmax/strided.cu``),
whose threads map to the inner index so loads stay coalesced, runs without a transposing copy.

Ladder (slowest first; every step is correct for every row length):

* ``naive``: one thread per row, three passes (max, sum, normalize) over global memory;
* ``online``: one thread per row, max and sum in one pass (two passes in all);
* ``warp``: a warp (or, for rows of at most 16, a power-of-two group of lanes) per row, the row in
  registers for rows up to 1024 floats or 512 doubles (128 bytes per lane), exp computed once per
  element; longer rows stream twice through the warp;
* ``block``: a block per row, shared-memory reductions, the row cached in shared memory while it
  fits (``BLOCK_CACHE_BYTES``), exp computed once per element there.

``warp`` (whole warps) and ``block`` move rows in 16-byte packs (128-bit loads and stores) between
a scalar head up to the input's first 16-byte boundary and a scalar tail, so any row length and
any offset of the input work; the output takes 128-bit stores where it has the input's alignment
modulo 16 (element by element otherwise, e.g. for an offset view of the input). ``naive`` and
``online`` keep their one-thread-per-row scalar accesses: that is their lesson. ``strided`` stays
scalar: a warp's loads already cover whole 128-byte lines once the inner size reaches 32.

``variant="auto"`` picks ``warp`` for rows it holds in registers (up to 1024 floats, 512 doubles)
and ``block`` above. Semantics
are PyTorch's: a ``-inf`` entry gives 0, a row of only ``-inf`` gives NaN, a ``+inf`` entry makes
the row NaN, a NaN makes the row NaN. float32 computes in float32, float64 in float64.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from ._runtime import backends, npfast, validate
from ._runtime.validate import INT32_LOOP_MAX
from ._runtime.device import Launch, device_scope, get_device
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_DTYPES = (np.float32, np.float64)
MAX_GRID_X = 2**31 - 1
#: A lane of the warp kernel holds at most this many bytes of its row in registers: 32 floats or
#: 16 doubles per lane (rows up to WARP_MAX_L[dtype]). More doubles per lane would unroll 32
#: inline double exps (over 2,000 SASS instructions for one kernel) for no gain in traffic.
WARP_LANE_BYTES = 128
#: Rows up to this many elements run on the register-resident warp kernel under ``auto``.
WARP_MAX_L = {np.dtype(np.float32): 32 * 32, np.dtype(np.float64): 32 * 16}
#: The block kernel caches a row in dynamic shared memory while it takes at most this many bytes.
BLOCK_CACHE_BYTES = 64 * 1024
#: Warp kernel configurations (ELEMS per lane, WIDTH lanes per row); ELEMS == 0: any length.
_WARP_CONFIGS = ((1, 1), (1, 2), (1, 4), (1, 8), (1, 16), (1, 32), (2, 32), (4, 32), (8, 32),
                 (16, 32), (32, 32), (0, 32))
#: Block kernel sizes: 256 threads for rows up to 4096 elements, 1024 above.
_BLOCK_SIZES = (256, 1024)
_BLOCK_SMALL_MAX_L = 4096


@dataclass(frozen=True)
class SoftmaxVariant:
    """One softmax kernel family: its name (== ``softmax_<name>`` symbol) and source file."""

    name: str
    source: str
    # (dtype, log, *config) -> Kernel
    kernels: Dict[tuple, Kernel]


def _family(name: str, source: str, configs=((),), no_spill: bool = True) -> SoftmaxVariant:
    kernels = {}
    for dt, ctype in _CTYPES.items():
        for log in (False, True):
            for cfg in configs:
                if name == "warp" and cfg[0] * dt.itemsize > WARP_LANE_BYTES:
                    continue
                k = Kernel(source=f"softmax/{source}", symbol=f"softmax_{name}",
                           template_args=(ctype, "true" if log else "false") + tuple(cfg), no_spill=no_spill)
                kernels[(dt, log) + tuple(cfg)] = register(k)
    return SoftmaxVariant(name, f"softmax/{source}", kernels)


SOFTMAX_LADDER: Tuple[SoftmaxVariant, ...] = (
    _family("naive", "01_naive.cu"),
    _family("online", "02_online.cu"),
    _family("warp", "03_warp.cu", _WARP_CONFIGS),
    _family("block", "04_block.cu", tuple((b,) for b in _BLOCK_SIZES)),
)
STRIDED = _family("strided", "strided.cu")
_BY_NAME = {v.name: v for v in SOFTMAX_LADDER + (STRIDED,)}


def softmax_variants() -> Tuple[str, ...]:
    """Names of the softmax ladder for contiguous rows, slowest step first; each is a valid ``variant=``.

    ``variant="strided"`` (the kernel a non-last axis runs) is accepted too.
    """
    return tuple(v.name for v in SOFTMAX_LADDER)


# ---------------------------------------------------------------------------------------------
# Launch configuration: one function per kernel family
# ---------------------------------------------------------------------------------------------
def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def warp_config(L: int, itemsize: int = 4) -> Tuple[int, int]:
    """(ELEMS, WIDTH) of the warp kernel for rows of ``L`` elements of ``itemsize`` bytes: the
    smallest that holds the row in registers (at most WARP_LANE_BYTES per lane), else streaming."""
    if L <= 32:
        return 1, _next_pow2(L)
    if L <= 32 * (WARP_LANE_BYTES // itemsize):
        return _next_pow2(ceil_div(L, 32)), 32
    return 0, 32


def launch_rows(name: str, rows: int, L: int, itemsize: int, cache_limit: int):
    """(kernel config, Launch, extra args) for a ladder kernel over ``rows`` rows of ``L``."""
    if name in ("naive", "online"):
        return (), Launch(grid=(ceil_div(rows, 256),), block=(256,)), ()
    if name == "warp":
        elems, width = warp_config(L, itemsize)
        return (elems, width), Launch(grid=(ceil_div(rows, 128 // width),), block=(128,)), ()
    block = _BLOCK_SIZES[0] if L <= _BLOCK_SMALL_MAX_L else _BLOCK_SIZES[1]
    cache = L * itemsize <= cache_limit
    return (block,), Launch(grid=(rows,), block=(block,), shared_mem=L * itemsize if cache else 0), \
        (np.int32(1 if cache else 0),)


def launch_strided(outer: int, inner: int) -> Tuple[Launch, int]:
    """Launch of the strided kernel over ``outer`` slabs, and the number of column tiles per slab."""
    tx = min(32, _next_pow2(inner))
    tiles = ceil_div(inner, tx)
    return Launch(grid=(tiles * outer,), block=(tx, 256 // tx)), tiles


def _rows_per_launch(name: str, L: int, itemsize: int) -> int:
    """Most rows one launch may cover (grid.x stops at 2^31 - 1)."""
    if name in ("naive", "online"):
        return MAX_GRID_X * 256
    if name == "warp":
        return MAX_GRID_X * (128 // warp_config(L, itemsize)[1])
    return MAX_GRID_X


# ---------------------------------------------------------------------------------------------
# Validation and dispatch
# ---------------------------------------------------------------------------------------------
def _normalize_axis(op: str, axis, ndim: int) -> int:
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"{op}: axis must be an int; got bool {axis!r}")
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"{op}: axis must be an int; got {type(axis).__name__} {axis!r}") from None
    n = max(ndim, 1)
    if not -n <= a < n:
        raise ValueError(f"{op}: axis {a} is out of range for an array of {ndim} dimension(s) "
                         f"(expected {-n} <= axis < {n})")
    return a % n


def _pick(op: str, variant: str, L: int, inner: int, dtype) -> SoftmaxVariant:
    validate.check_choice(op, "variant", variant, ("auto",) + softmax_variants() + ("strided",))
    if inner > 1 or variant == "strided":
        return STRIDED
    if variant == "auto":
        return _BY_NAME["warp"] if L <= WARP_MAX_L[np.dtype(dtype)] else _BY_NAME["block"]
    return _BY_NAME[variant]


def _softmax(op: str, x, axis, variant: str, backend: str, log: bool):
    name = backends.resolve(op, backend, {"x": x})
    dtype = validate.check_dtype(op, "x", x, _DTYPES)
    shape = tuple(int(d) for d in x.shape)
    ax = _normalize_axis(op, axis, len(shape))
    shape3 = shape if shape else (1,)
    L = shape3[ax]
    outer = int(np.prod(shape3[:ax], dtype=np.int64))
    inner = int(np.prod(shape3[ax + 1:], dtype=np.int64))
    # The kernels' int loop counters run up to L - 1 + 4 * BLOCK (block kernel, BLOCK <= 1024),
    # L - 1 + 32 (warp) or L - 1 + TY (strided): below 2**31 for L <= INT32_LOOP_MAX.
    if L > INT32_LOOP_MAX:
        raise ValueError(f"{op}: the softmax axis has {L} elements; at most 2**31 - 4097 are supported")
    v = _pick(op, variant, L, inner, dtype)
    label = "numpy" if name == "numpy" else f"softmax_{v.name}"
    with op_range(op, label), device_scope(op, name, {"x": x}):
        if name == "numpy":
            return np.asarray(_numpy_softmax(x, ax if shape else 0, log).reshape(shape), order="C")   # C order (0-d stays 0-d), as the kernels
        dev = get_device(name)
        xd = dev.asarray(x)
        if outer * L * inner == 0:
            return dev.result(dev.empty(shape, dtype))
        xc = dev.contiguous(xd).reshape(outer, L, inner)
        y = dev.empty((outer, L, inner), dtype)
        if v is STRIDED:
            _launch_strided(dev, xc, y, log, dtype)
        else:
            _launch_rows(dev, v, xc.reshape(outer, L), y.reshape(outer, L), log, dtype)
        return dev.result(y.reshape(shape))


def _launch_rows(dev, v: SoftmaxVariant, x2, y2, log: bool, dtype) -> None:
    rows, L = x2.shape
    limit = min(BLOCK_CACHE_BYTES, dev.max_shared_optin() - 1024)
    step = _rows_per_launch(v.name, L, dtype.itemsize)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        cfg, launch, extra = launch_rows(v.name, n, L, dtype.itemsize, limit)
        args = (x2[r0:r0 + n], y2[r0:r0 + n], np.int64(n), np.int32(L)) + extra
        dev.launch(v.kernels[(dtype, log) + cfg], launch, args)


def _launch_strided(dev, x3, y3, log: bool, dtype) -> None:
    outer, L, inner = x3.shape
    _, tiles = launch_strided(1, inner)
    step = max(1, MAX_GRID_X // tiles)
    for o0 in range(0, outer, step):
        n = min(step, outer - o0)
        launch, tiles = launch_strided(n, inner)
        args = (x3[o0:o0 + n], y3[o0:o0 + n], np.int64(n), np.int32(L), np.int64(inner), np.int64(tiles))
        dev.launch(STRIDED.kernels[(dtype, log)], launch, args)


def _numpy_softmax(x, axis: int, log: bool):
    """Vectorized CPU fallback, in the input's precision, with PyTorch's edge cases."""
    x = np.asarray(x)
    x1 = x.reshape(1) if x.ndim == 0 else x
    if x1.size == 0:
        return np.empty(x1.shape, x1.dtype)
    if axis == x1.ndim - 1:
        # rows along the last axis: cache-sized row blocks on the thread pool, the same ufuncs
        x2 = np.asarray(x1, order="C").reshape(-1, x1.shape[-1])
        return npfast.softmax_rows(x2, log).reshape(x1.shape)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(x1, axis=axis, keepdims=True)  # propagates NaN; all -inf gives -inf
        z = x1 - m  # -inf - -inf and inf - inf give NaN, as in PyTorch
        e = np.exp(z)
        s = np.sum(e, axis=axis, keepdims=True)
        if log:
            return z - np.log(s)
        return e / s


# ---------------------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------------------
def softmax(x, axis=-1, *, variant="auto", backend="auto"):
    """``exp(x - max) / sum(exp(x - max))`` along ``axis`` (as ``torch.softmax``), float32 or float64.

    ``variant`` picks the ladder kernel for contiguous rows (see ``softmax_variants``); a non-last
    axis (with trailing elements) always runs the strided kernel. A ``-inf`` entry gives 0, a row of
    only ``-inf`` gives NaN, a ``+inf`` or NaN entry makes its row NaN.
    """
    return _softmax("softmax", x, axis, variant, backend, log=False)


def log_softmax(x, axis=-1, *, variant="auto", backend="auto"):
    """``x - max - log(sum(exp(x - max)))`` along ``axis`` (as ``torch.log_softmax``); see `softmax`."""
    return _softmax("log_softmax", x, axis, variant, backend, log=True)
