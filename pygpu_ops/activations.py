"""Activations: ``relu`` and ``leaky_relu`` (elementwise, NaN stays NaN).

One kernel file, ``cuda_src/activation/relu_vec128.cu``: 128-bit loads and stores in a
grid-stride loop with scalar head and tail; it reads n and writes n elements. float32 and float64,
any shape; non-contiguous inputs are made contiguous first (one extra copy). The result is a new
C-contiguous array of the input's shape and dtype on every backend (0-d for a 0-d input, a plain
``numpy.ndarray`` for any ndarray subclass on the CPU backends).

Every backend computes ``x < 0 ? 0 : x`` (relu) and ``x < 0 ? slope * x : x`` (leaky_relu): the
input comes back unchanged unless it is below zero, so NaN keeps its payload and ``relu(-0.0)`` is
``-0.0``, as PyTorch's eager CPU ``relu`` (``clamp_min``) gives; ``numpy.maximum`` would give
``+0.0``.
"""
from __future__ import annotations

import numpy as np

from ._runtime import backends, npfast, validate
from ._runtime.device import Launch, device_scope, get_device
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range

_SOURCE = "activation/relu_vec128.cu"
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

RELU = {dt: register(Kernel(source=_SOURCE, symbol="relu_vec128", template_args=(c,)))
        for dt, c in _CTYPE.items()}
LEAKY_RELU = {dt: register(Kernel(source=_SOURCE, symbol="leaky_relu_vec128", template_args=(c,)))
              for dt, c in _CTYPE.items()}

#: Variant label (kernel symbol suffix) used in NVTX ranges and benchmarks.
VARIANT = "vec128"

_BLOCK = 256
#: Enough resident blocks to saturate any current GPU; the loop strides over the rest.
_MAX_BLOCKS = 8192


def launch_config(n: int, itemsize: int) -> Launch:
    """The one place the activation launch is configured: one 16-byte vector per thread-iteration."""
    per_vec = 16 // itemsize
    return Launch(grid=(max(1, min(ceil_div(ceil_div(n, per_vec), _BLOCK), _MAX_BLOCKS)),), block=(_BLOCK,))


def _run(op: str, kernels, x, slope, backend: str):
    name = backends.resolve(op, backend, {"x": x})
    dtype = validate.check_dtype(op, "x", x, (np.float32, np.float64))
    if slope is not None:
        with np.errstate(over="ignore"):   # rounded to x's dtype: 1e39 is inf in float32
            slope = dtype.type(slope)
    label = "numpy" if name == "numpy" else f"{op}_{VARIANT}"
    with op_range(op, label), device_scope(op, name, {"x": x}):
        if name == "numpy":
            x = np.asarray(x)
            # a new C-contiguous ndarray; 0-d stays 0-d
            return npfast.relu(x) if slope is None else npfast.leaky_relu(x, slope)
        dev = get_device(name)
        src = dev.contiguous(x)
        out = dev.empty(tuple(x.shape), dtype)
        n = int(src.size)
        if n:
            flat_in, flat_out = src.reshape(-1), out.reshape(-1)
            args = (flat_in, flat_out, np.int64(n)) if slope is None else \
                (flat_in, flat_out, np.int64(n), slope)
            dev.launch(kernels[dtype], launch_config(n, dtype.itemsize), args)
        return dev.result(out)


def relu(x, *, backend="auto"):
    """``x < 0 ? 0 : x`` elementwise: NaN stays NaN (unlike ``fmaxf``) and ``-0.0`` stays ``-0.0``
    (module docstring). float32 or float64, any shape."""
    return _run("relu", RELU, x, None, backend)


def leaky_relu(x, negative_slope=0.01, *, backend="auto"):
    """``negative_slope * x if x < 0 else x`` elementwise; NaN stays NaN. float32 or float64.

    ``negative_slope`` is any real number, rounded to x's dtype as PyTorch does (so 1e39 is inf
    for float32); NaN and +-Inf are accepted (torch accepts any float) and act as in IEEE
    arithmetic: with ``inf``, x < 0 gives -inf while ``-0.0`` and positives pass unchanged. A
    number beyond float64's range (``10**400``) is a ``ValueError``.
    """
    slope = validate.check_real("leaky_relu", "negative_slope", negative_slope)
    return _run("leaky_relu", LEAKY_RELU, x, slope, backend)
