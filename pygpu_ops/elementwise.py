"""Elementwise ops: broadcasting ``add`` / ``sub`` / ``mul`` / ``div``, ``sigmoid``, ``tanh``, ``clip``,
inference ``batch_norm``, and the strided copies ``transpose`` and ``concat``.

Four kernel files under ``cuda_src/elementwise/``:

* ``broadcast_binary.cu``: one kernel, the op (``AddOp`` ... ``DivOp``) a template parameter. Each
  operand is read through its broadcast strides (0 where it broadcasts; a scalar is a cached 0-d
  device array with every stride 0), so nothing is expanded in memory. ``add(..., activation=)``
  instantiates it with ``AddReluOp`` / ``AddRelu6Op``: the residual Add + Relu in one pass.
* ``strided_copy.cu``: gathers a strided source view into a destination view. ``transpose`` reads
  the permuted view of ``x`` into a new C-contiguous array; ``concat`` copies each input into its
  slice of the output. One instantiation per element size (it moves bits).
* ``unary_vec128.cu``: sigmoid, tanh and clip with 128-bit accesses (relu's scheme).
* ``channel_affine.cu``: batch norm's per-channel ``a = scale / sqrt(var + eps)``,
  ``b = bias - mean * a`` in float64 (then rounded to x's dtype) and ``y = a[c] * x + b[c]``.

How the strided kernels see their arrays: `_merge_dims` drops size-1 dimensions and merges every pair
of neighbours whose strides chain for all operands, so an (N, C, H, W) + (1, C, 1, 1) add becomes
(N, C, H*W) and a contiguous add becomes one dimension. What is left (at most 8 dimensions, the size
of the kernels' `StridedGeometry`) is walked as rows (the outer dimensions, split into coordinates
once per row) by inner elements (one thread per element, coalesced when the inner stride is 1 or 0).
The limits (at most 8 dimensions and below 2**31 rows, so that a row splits into coordinates with
32-bit divisions) apply after merging the dimensions of the operands' own C-order layouts, which
depends only on the shapes (and the permutation), so every backend accepts the same calls; a view
whose strides merge less well is copied to C order first on the device. The inner dimension may
have any size: offsets are 64-bit.

Semantics shared by every op here (``API.md``): float32 or float64 (both operands the same dtype,
else a ``TypeError`` naming the argument; ``transpose`` and ``concat`` take any 1/2/4/8-byte
numeric dtype); results are new C-contiguous arrays of the backend's kind; zero-size gives an
empty result; NaN and Inf propagate as in NumPy. ``add`` ... ``div`` give NumPy's float32 / float64
result bit for bit: each element is one correctly rounded IEEE operation. On a GPU, float32
subnormal inputs and results are flushed to zero, because CuPy compiles with ``-ftz=true``; the
emulator and NumPy keep them.

Scalars: a Python ``int`` / ``float`` (or a NumPy integer scalar) operand is rounded to the array
operand's dtype, as NumPy 2 does for Python scalars; a NumPy floating scalar must have the array's
dtype (a float64 scalar with a float32 array is a ``TypeError``, not a silent promotion). One of
``a`` and ``b`` must be an array.
"""
from __future__ import annotations

import numbers
from typing import List, Sequence, Tuple

import numpy as np

from . import activations
from ._runtime import backends, npfast, validate
from ._runtime.device import Launch, device_scope, get_device
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range

_FLOATS = (np.float32, np.float64)
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: Copies move bits: one instantiation per element size.
_UINT = {1: (np.uint8, "unsigned char"), 2: (np.uint16, "unsigned short"),
         4: (np.uint32, "unsigned int"), 8: (np.uint64, "unsigned long long")}

_BINARY_SRC = "elementwise/broadcast_binary.cu"
_UNARY_SRC = "elementwise/unary_vec128.cu"
_AFFINE_SRC = "elementwise/channel_affine.cu"
_COPY_SRC = "elementwise/strided_copy.cu"

#: op name -> (functor in broadcast_binary.cu, NumPy ufunc of the fallback)
_BINARY_OPS = {"add": ("AddOp", np.add), "sub": ("SubOp", np.subtract),
               "mul": ("MulOp", np.multiply), "div": ("DivOp", np.divide)}
#: add's fused activations -> functor in broadcast_binary.cu
ADD_ACTIVATIONS = {"relu": "AddReluOp", "relu6": "AddRelu6Op"}
#: kernel key (the op, or "add+<activation>") -> functor
_BINARY_FUNCTORS = {**{op: f for op, (f, _) in _BINARY_OPS.items()},
                    **{f"add+{act}": f for act, f in ADD_ACTIVATIONS.items()}}
BINARY = {(op, dt): register(Kernel(source=_BINARY_SRC, symbol="broadcast_binary", template_args=(c, f),
                                    no_spill=True))
          for op, f in _BINARY_FUNCTORS.items() for dt, c in _CTYPE.items()}
UNARY = {(op, dt): register(Kernel(source=_UNARY_SRC, symbol=f"{op}_vec128", template_args=(c,),
                                            no_spill=True))
         for op in ("sigmoid", "tanh", "clip") for dt, c in _CTYPE.items()}
BN_PARAMS = {dt: register(Kernel(source=_AFFINE_SRC, symbol="batch_norm_params", template_args=(c,)))
             for dt, c in _CTYPE.items()}
AFFINE = {dt: register(Kernel(source=_AFFINE_SRC, symbol="channel_affine", template_args=(c,),
                                     no_spill=True))
          for dt, c in _CTYPE.items()}
COPY = {size: register(Kernel(source=_COPY_SRC, symbol="strided_copy", template_args=(c,),
                                     no_spill=True))
        for size, (_, c) in _UINT.items()}

#: Kernel variant labels (NVTX ranges, benchmarks).
VARIANTS = {"binary": "broadcast_binary", "unary": "vec128", "batch_norm": "channel_affine",
            "copy": "strided_copy"}

#: Dimensions a strided kernel takes after merging (``GEOM_MAX_DIMS`` in strided_common.cuh).
MAX_DIMS = 8
#: ``struct StridedGeometry`` of strided_common.cuh, passed by value (CuPy and the emulator both take
#: a NumPy structured scalar whose bytes are the C struct's).
GEOMETRY = np.dtype([("n", "<i8", (MAX_DIMS,)), ("s0", "<i8", (MAX_DIMS,)), ("s1", "<i8", (MAX_DIMS,)),
                     ("rows", "<i8"), ("nd", "<i4")], align=True)

_BLOCK = 256
_MAX_GRID_X = 1 << 16
_MAX_GRID_Y = 65535


# ---------------------------------------------------------------------------------------------
# Launch configuration and geometry (one place each)
# ---------------------------------------------------------------------------------------------
def rows_launch(rows: int, inner: int) -> Launch:
    """Launch of the (rows, inner) kernels (broadcast_binary, strided_copy, channel_affine): 256
    threads, ``bx`` = the power of two >= inner (at most 256) along the inner dimension and
    ``256 / bx`` rows per block, so a short inner dimension does not leave most threads idle."""
    bx = min(_BLOCK, 1 << max(0, int(inner) - 1).bit_length())
    by = _BLOCK // bx
    return Launch(grid=(max(1, min(ceil_div(inner, bx), _MAX_GRID_X)), max(1, min(ceil_div(rows, by), _MAX_GRID_Y))),
                  block=(bx, by))


def _merge_dims(shape: Sequence[int], strides: Sequence[Sequence[int]]) -> List[Tuple[int, List[int]]]:
    """[(size, [stride per operand])], outermost first: size-1 dimensions dropped, neighbours merged
    where every operand's outer stride is its inner stride times the inner size. A shape with no
    dimension left (0-d, all ones) is one dimension of size 1."""
    merged: List[Tuple[int, List[int]]] = []
    for d, n in enumerate(shape):
        if n == 1:
            continue
        ss = [int(s[d]) for s in strides]
        if merged and all(ps == s * n for ps, s in zip(merged[-1][1], ss)):
            merged[-1] = (merged[-1][0] * n, ss)
        else:
            merged.append((int(n), ss))
    return merged or [(1, [0] * len(strides))]


def _geometry(dims: List[Tuple[int, List[int]]]):
    """The ``StridedGeometry`` scalar of merged dimensions (two operands)."""
    g = np.zeros((), GEOMETRY)
    nd = len(dims)
    g["n"][:nd] = [n for n, _ in dims]
    g["s0"][:nd] = [s[0] for _, s in dims]
    g["s1"][:nd] = [s[1] for _, s in dims]
    g["rows"] = int(np.prod([n for n, _ in dims[:-1]], dtype=np.int64))
    g["nd"] = nd
    return g[()]


def _c_strides(shape: Sequence[int]) -> List[int]:
    """C-order strides in elements (0 on size-1 dimensions: they never move)."""
    out, step = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        out[d] = step if shape[d] != 1 else 0
        step *= max(int(shape[d]), 1)
    return out


def _elem_strides(x, shape: Sequence[int]):
    """``x``'s strides in elements broadcast against ``shape`` (0 where x has size 1 or is missing),
    or None when a stride is not a whole number of elements."""
    item = x.dtype.itemsize
    if any(s % item for s in x.strides):
        return None
    lead = len(shape) - x.ndim
    own = [0 if n == 1 else s // item for n, s in zip(x.shape, x.strides)]
    return [0] * lead + own


def _fits(dims) -> bool:
    """Whether merged dimensions fit the kernels: at most `MAX_DIMS`, rows below 2**31."""
    rows = int(np.prod([n for n, _ in dims[:-1]], dtype=np.int64))
    return len(dims) <= MAX_DIMS and rows <= validate.INT32_MAX


def _check_geometry(op: str, shape, strides, what: str) -> None:
    """Refuse, on every backend alike, a call whose C-ordered operands do not fit the strided kernels."""
    dims = _merge_dims(shape, strides)
    if len(dims) > MAX_DIMS:
        raise ValueError(f"{op}: {what} has {len(dims)} dimensions that cannot be merged; the kernels take at "
                         f"most {MAX_DIMS} (shape {tuple(shape)})")
    if not _fits(dims):
        raise ValueError(f"{op}: {what} has {int(np.prod([n for n, _ in dims[:-1]], dtype=np.int64))} rows of "
                         f"{dims[-1][0]} elements after merging dimensions (shape {tuple(shape)}); the kernels "
                         f"take at most {validate.INT32_MAX} rows")


def _label(op: str, name: str, kind: str) -> str:
    return "numpy" if name == "numpy" else f"{op}_{VARIANTS[kind]}"


# ---------------------------------------------------------------------------------------------
# add / sub / mul / div
# ---------------------------------------------------------------------------------------------
def _is_scalar(v) -> bool:
    return isinstance(v, (numbers.Number, np.generic)) and not isinstance(v, np.ndarray)


def _scalar_value(op: str, name: str, v, dtype: np.dtype, ref_name: str):
    """A scalar operand as a NumPy scalar of ``dtype`` (see the module docstring for the rules)."""
    if isinstance(v, np.floating):
        if v.dtype != dtype:
            raise TypeError(f"{op}: {name} is a numpy.{v.dtype} scalar; expected {dtype}, the dtype of {ref_name} "
                            f"(or a Python float)")
        return v
    validate.check_real(op, name, v)
    with np.errstate(over="ignore"):   # rounded to the dtype: 1e39 is inf in float32
        return np.array(v, dtype=dtype)[()]


def _binary(op: str, a, b, backend: str, activation=None):
    """``op`` of a and b, then ``activation`` (add only: None or an `ADD_ACTIVATIONS` key)."""
    if activation is not None and not (isinstance(activation, str) and activation in ADD_ACTIVATIONS):
        raise ValueError(f"{op}: activation must be None, {' or '.join(map(repr, ADD_ACTIVATIONS))}; "
                         f"got {activation!r}")
    kernel_op = op if activation is None else f"{op}+{activation}"
    operands = {"a": a, "b": b}
    arrays = {n: v for n, v in operands.items() if not _is_scalar(v)}
    if not arrays:
        raise TypeError(f"{op}: a and b are both scalars ({type(a).__name__}, {type(b).__name__}); "
                        f"at least one must be an array")
    name = backends.resolve(op, backend, arrays)
    ref_name = next(iter(arrays))
    dtype = validate.check_dtype(op, ref_name, arrays[ref_name], _FLOATS)
    validate.check_same_dtype(op, ref_name, dtype, **{n: v for n, v in arrays.items() if n != ref_name})
    values = {n: (v if n in arrays else _scalar_value(op, n, v, dtype, ref_name)) for n, v in operands.items()}
    shapes = {n: tuple(getattr(v, "shape", ())) for n, v in values.items()}
    try:
        shape = np.broadcast_shapes(shapes["a"], shapes["b"])
    except ValueError:
        raise ValueError(f"{op}: a of shape {shapes['a']} and b of shape {shapes['b']} do not broadcast "
                         f"(NumPy rules: trailing dimensions equal or 1)") from None
    _check_geometry(op, shape, [_pad_strides(shapes[n], shape) for n in ("a", "b")], "the broadcast of a and b")
    label = _label(op, name, "binary") + ("" if activation is None else f"+{activation}")
    with op_range(op, label), device_scope(op, name, arrays):
        if name == "numpy":
            va, vb = (np.asarray(values[n]) for n in ("a", "b"))
            with np.errstate(all="ignore"):   # inf - inf, 0 / 0, overflow: NaN / Inf as NumPy gives them
                y = _BINARY_OPS[op][1](va, vb)
            if activation is not None:        # the kernel's comparisons: NaN and -0.0 stay
                y = np.where(y < 0, dtype.type(0), y)
                if activation == "relu6":
                    y = np.where(y > 6, dtype.type(6), y)
            return np.asarray(y, order="C")
        dev = get_device(name)
        out = dev.empty(shape, dtype)
        if out.size:
            ops = [dev.asarray(values[n]) if n in arrays else dev.constant(np.array(values[n], dtype))
                   for n in ("a", "b")]
            remake = [(lambda v=values[n]: dev.contiguous(v)) if n in arrays else None for n in ("a", "b")]
            dims = _device_dims(ops, shape, remake)
            geom = _geometry(dims)
            dev.launch(BINARY[(kernel_op, dtype)], rows_launch(int(geom["rows"]), dims[-1][0]),
                       (ops[0], ops[1], out, geom))
        return dev.result(out)


def _pad_strides(own_shape, shape) -> List[int]:
    """Broadcast strides of a C-ordered operand of ``own_shape`` against ``shape``."""
    return [0] * (len(shape) - len(own_shape)) + _c_strides(own_shape)


def _device_dims(ops: list, shape, remake: list):
    """Merged dimensions of device operands ``ops`` read through their strides against ``shape``.
    An operand whose strides are not whole elements, or a call whose views do not merge to what the
    kernels take (`_fits`), has its operands rebuilt by ``remake[i]()`` (a C-ordered copy of the caller's array,
    viewed as before; None for the output, which is never copied); ``ops`` is updated in place."""
    for attempt in (0, 1):
        strides = []
        for i in range(len(ops)):
            s = _elem_strides(ops[i], shape)
            if remake[i] is not None and (s is None or attempt):
                ops[i] = remake[i]()
                s = _elem_strides(ops[i], shape)
            strides.append(s)
        dims = _merge_dims(shape, strides)
        if _fits(dims):
            return dims
    # C-ordered operands merge to what _check_geometry accepted before anything was allocated.
    raise AssertionError(f"strided operands of shape {tuple(shape)} kept {len(dims)} dimensions")


def add(a, b, *, activation=None, backend="auto"):
    """``a + b`` with NumPy broadcasting; either may be a scalar. NumPy's result bit for bit.

    ``activation``: None, ``"relu"`` (``s < 0 ? 0 : s`` of the sum ``s``, as ``relu``) or
    ``"relu6"`` (then ``s > 6 ? 6 : s``, as ``clip(s, 0, 6)``), applied in the same kernel, one
    pass over the result instead of two: a residual Add + Relu. NaN stays NaN; the result is
    ``relu(add(a, b))`` (``clip(add(a, b), 0, 6)``) bit for bit."""
    return _binary("add", a, b, backend, activation)


def sub(a, b, *, backend="auto"):
    """``a - b`` with NumPy broadcasting; either may be a scalar. NumPy's result bit for bit."""
    return _binary("sub", a, b, backend)


def mul(a, b, *, backend="auto"):
    """``a * b`` with NumPy broadcasting; either may be a scalar. NumPy's result bit for bit."""
    return _binary("mul", a, b, backend)


def div(a, b, *, backend="auto"):
    """``a / b`` (true division) with NumPy broadcasting; either may be a scalar. x / 0 is +-inf,
    0 / 0 is NaN, as NumPy. NumPy's result bit for bit."""
    return _binary("div", a, b, backend)


# ---------------------------------------------------------------------------------------------
# sigmoid / tanh / clip
# ---------------------------------------------------------------------------------------------
def _unary(op: str, x, backend: str, bounds=None):
    name = backends.resolve(op, backend, {"x": x})
    dtype = validate.check_dtype(op, "x", x, _FLOATS)
    if bounds is not None:
        with np.errstate(over="ignore"):   # rounded to x's dtype: 1e39 is inf in float32
            bounds = tuple(dtype.type(v) for v in bounds)
    with op_range(op, _label(op, name, "unary")), device_scope(op, name, {"x": x}):
        if name == "numpy":
            x = np.asarray(x)
            with np.errstate(all="ignore"):
                if op == "sigmoid":   # the kernel's formula: exp of -|x| only, nothing overflows
                    y = npfast.sigmoid(x)
                elif op == "tanh":
                    y = npfast.elementwise(x, dtype, lambda xb, yb: np.tanh(xb, out=yb))
                else:   # the kernel's two steps: x unchanged unless strictly outside [lo, hi]
                    y = npfast.clip(x, *bounds)
            return y
        dev = get_device(name)
        src = dev.contiguous(x)
        out = dev.empty(tuple(x.shape), dtype)
        n = int(src.size)
        if n:
            args = (src.reshape(-1), out.reshape(-1), np.int64(n)) + (bounds or ())
            # the same vec128 loop as relu (cuda_src/common/vec128.cuh): its launch configuration
            dev.launch(UNARY[(op, dtype)], activations.launch_config(n, dtype.itemsize), args)
        return dev.result(out)


def sigmoid(x, *, backend="auto"):
    """``1 / (1 + exp(-x))`` elementwise, float32 / float64, within 4 ulp of the exact value (the
    bound that CUDA's 2-ulp ``expf`` plus two roundings give; NumPy and the emulator are closer).
    sigmoid(-inf) = 0, sigmoid(inf) = 1, NaN stays NaN; very negative x follow exp(x) into the
    subnormals instead of flushing to 0 early (float32 on a GPU: below 2**-126, ``-ftz``)."""
    return _unary("sigmoid", x, backend)


def tanh(x, *, backend="auto"):
    """``tanh(x)`` elementwise, float32 / float64, within 2 ulp (CUDA's ``tanhf``; 1 ulp for float64).
    tanh(+-inf) = +-1, NaN stays NaN."""
    return _unary("tanh", x, backend)


def clip(x, min=None, max=None, *, backend="auto"):
    """``x`` limited to ``[min, max]``: ``min`` if x < min, else ``max`` if x > max, else x.

    ``min`` / ``max`` are real scalars (None: no bound), rounded to x's dtype (1e39 is inf in
    float32); NaN bounds are a ``ValueError``. NaN in x stays NaN. ``min > max`` gives ``max``
    everywhere, as ``numpy.clip`` and ``torch.clamp`` do. x is returned unchanged unless it is
    strictly outside the bounds, so ``clip(-0.0, 0.0)`` is -0.0 (a zero that equals a bound keeps its
    own sign). Values equal NumPy's ``numpy.clip`` exactly.
    """
    lo = -np.inf if min is None else validate.check_real("clip", "min", min)
    hi = np.inf if max is None else validate.check_real("clip", "max", max)
    for arg, v in (("min", lo), ("max", hi)):
        if np.isnan(v):
            raise ValueError(f"clip: {arg} must not be NaN (use None for no bound)")
    return _unary("clip", x, backend, (lo, hi))


# ---------------------------------------------------------------------------------------------
# batch_norm
# ---------------------------------------------------------------------------------------------
def batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5, layout="NCHW", backend="auto"):
    """Inference batch normalization: ``y = scale * (x - mean) / sqrt(var + epsilon) + bias`` per channel.

    Channels are axis 1 (``layout="NCHW"``: any rank >= 2, e.g. (N, C), (N, C, L), (N, C, H, W)) or
    the last axis (``"NHWC"``: any rank >= 2). ``scale``, ``bias``, ``mean``, ``var``: (C,) arrays of
    x's dtype and kind. Computed as ``a = scale / sqrt(var + epsilon)`` and ``b = bias - mean * a`` in
    float64, each rounded once to x's dtype, then ``y = a * x + b`` with two rounded operations (no
    FMA), so every backend gives the same bits. ``epsilon`` is any finite number; a negative
    ``var + epsilon`` gives NaN for that channel, as ``numpy.sqrt``.
    """
    op = "batch_norm"
    params = {"scale": scale, "bias": bias, "mean": mean, "var": var}
    name = backends.resolve(op, backend, {"x": x, **params})
    dtype = validate.check_dtype(op, "x", x, _FLOATS)
    validate.check_same_dtype(op, "x", dtype, **params)
    validate.check_choice(op, "layout", layout, ("NCHW", "NHWC"))
    if len(x.shape) < 2:
        raise ValueError(f"{op}: x must have at least 2 dimensions (N, C, ...); got shape {tuple(x.shape)}")
    C = int(x.shape[1] if layout == "NCHW" else x.shape[-1])
    for pname, p in params.items():
        if tuple(p.shape) != (C,):
            raise ValueError(f"{op}: {pname} must have shape ({C},), the channels of x (axis "
                             f"{1 if layout == 'NCHW' else -1} for {layout}); got {tuple(p.shape)}")
    eps = validate.check_finite(op, "epsilon", epsilon)
    with op_range(op, _label(op, name, "batch_norm")), device_scope(op, name, {"x": x, **params}):
        if name == "numpy":
            p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
            with np.errstate(all="ignore"):
                a64 = p64["scale"] / np.sqrt(p64["var"] + eps)
                a, b = a64.astype(dtype), (p64["bias"] - p64["mean"] * a64).astype(dtype)
                return npfast.affine_channels(np.asarray(x), a, b, channel_last=layout == "NHWC")
        dev = get_device(name)
        out = dev.empty(tuple(x.shape), dtype)
        if out.size:
            ab = dev.empty((2, C), dtype)
            pd = [dev.contiguous(params[k]) for k in ("scale", "bias", "mean", "var")]
            dev.launch(BN_PARAMS[dtype], Launch(grid=(ceil_div(C, _BLOCK),), block=(_BLOCK,)),
                       (*pd, np.float64(eps), ab, np.int64(C)))
            inner = int(np.prod(x.shape[2:], dtype=np.int64)) if layout == "NCHW" else C
            rows = int(out.size) // inner
            dev.launch(AFFINE[dtype], rows_launch(rows, inner),
                       (dev.contiguous(x), ab, out, np.int64(rows), np.int64(inner), np.int64(C),
                        np.int32(layout == "NHWC")))
        return dev.result(out)


# ---------------------------------------------------------------------------------------------
# transpose / concat (strided copies)
# ---------------------------------------------------------------------------------------------
def _copy_dtype(op: str, name: str, x) -> np.dtype:
    dtype = validate.dtype_of(x)
    if dtype.itemsize not in _UINT or dtype.hasobject or dtype.kind not in "biufc":
        raise TypeError(f"{op}: {name} has dtype {dtype}; expected a numeric dtype of 1, 2, 4 or 8 bytes")
    return dtype


def _strided_copy(dev, src, dst, remake) -> None:
    """dst[...] = src[...] (views of one shape) with strided_copy; ``remake()`` gives src from a
    C-ordered copy of the caller's array (see `_device_dims`)."""
    ops = [src, dst]
    dims = _device_dims(ops, tuple(dst.shape), [remake, None])
    geom = _geometry(dims)
    utype = _UINT[dst.dtype.itemsize][0]
    dev.launch(COPY[dst.dtype.itemsize], rows_launch(int(geom["rows"]), dims[-1][0]),
               (ops[0].view(utype), dst.view(utype), geom))


def transpose(x, axes=None, *, backend="auto"):
    """``x`` with its axes permuted (``numpy.transpose``; ``axes=None`` reverses them), as a new
    C-contiguous array. ``axes``: a permutation of ``range(x.ndim)``, negative entries counted from
    the end. Any 1/2/4/8-byte numeric dtype; the bits are moved unchanged."""
    op = "transpose"
    name = backends.resolve(op, backend, {"x": x})
    dtype = _copy_dtype(op, "x", x)
    ndim = len(x.shape)
    if axes is None:
        perm = tuple(range(ndim - 1, -1, -1))
    else:
        if isinstance(axes, (str, bytes)) or not isinstance(axes, (Sequence, np.ndarray)):
            raise TypeError(f"{op}: axes must be a sequence of ints or None; got {type(axes).__name__}")
        perm = tuple(validate.check_int(op, "axes", a, lo=-ndim, hi=ndim - 1) % max(ndim, 1) for a in axes)
        if sorted(perm) != list(range(ndim)):
            raise ValueError(f"{op}: axes must be a permutation of 0..{ndim - 1} for x of shape "
                             f"{tuple(x.shape)}; got {tuple(axes)}")
    shape = tuple(int(x.shape[p]) for p in perm)
    own = _c_strides(x.shape)
    _check_geometry(op, shape, [[own[p] for p in perm], _c_strides(shape)], "the permutation")
    with op_range(op, _label(op, name, "copy")), device_scope(op, name, {"x": x}):
        if name == "numpy":
            return np.array(np.asarray(x).transpose(perm), order="C")
        dev = get_device(name)
        out = dev.empty(shape, dtype)
        if out.size:
            _strided_copy(dev, dev.asarray(x).transpose(perm), out,
                          lambda: dev.contiguous(x).transpose(perm))
        return dev.result(out)


def concat(arrays, axis=0, *, backend="auto"):
    """The arrays joined along ``axis`` (``numpy.concatenate`` / ONNX Concat), as a new C-contiguous
    array. At least one array; all of the same dtype, rank (>= 1) and shape except along ``axis``
    (negative counts from the end). Any 1/2/4/8-byte numeric dtype; one strided copy per non-empty
    input into its slice of the output."""
    op = "concat"
    if isinstance(arrays, (str, bytes)) or not isinstance(arrays, Sequence):
        raise TypeError(f"{op}: arrays must be a list or tuple of arrays; got {type(arrays).__name__}")
    if not arrays:
        raise ValueError(f"{op}: arrays must hold at least one array; got an empty {type(arrays).__name__}")
    named = {f"arrays[{i}]": a for i, a in enumerate(arrays)}
    name = backends.resolve(op, backend, named)
    dtype = _copy_dtype(op, "arrays[0]", arrays[0])
    validate.check_same_dtype(op, "arrays[0]", dtype, **{k: v for k, v in named.items() if k != "arrays[0]"})
    first = tuple(arrays[0].shape)
    ndim = len(first)
    if ndim == 0:
        raise ValueError(f"{op}: arrays[0] is 0-d; arrays must have at least one dimension")
    ax = validate.check_int(op, "axis", axis, lo=-ndim, hi=ndim - 1) % ndim
    for k, a in named.items():
        s = tuple(a.shape)
        if len(s) != ndim or s[:ax] + s[ax + 1:] != first[:ax] + first[ax + 1:]:
            raise ValueError(f"{op}: {k} has shape {s}; expected {ndim} dimensions matching arrays[0]'s "
                             f"{first} except along axis {ax}")
    shape = first[:ax] + (sum(int(a.shape[ax]) for a in arrays),) + first[ax + 1:]
    out_strides = _c_strides(shape)
    for k, a in named.items():
        _check_geometry(op, tuple(a.shape), [_c_strides(a.shape), out_strides], f"the copy of {k}")
    with op_range(op, _label(op, name, "copy")), device_scope(op, name, named):
        if name == "numpy":
            return np.asarray(np.concatenate([np.asarray(a) for a in arrays], axis=ax), order="C")
        dev = get_device(name)
        out = dev.empty(shape, dtype)
        off = 0
        for a in arrays:
            k = int(a.shape[ax])
            if out.size and k:
                dst = out[(slice(None),) * ax + (slice(off, off + k),)]
                _strided_copy(dev, dev.asarray(a), dst, lambda a=a: dev.contiguous(a))
            off += k
        return dev.result(out)
