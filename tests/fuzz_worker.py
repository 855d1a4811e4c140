"""Fuzz worker: random calls of every public op, on the numpy and emulator backends, in a process of
its own so that a crash or a hang is a reported failure with its reproducer, not a lost test run.

    python tests/fuzz_worker.py --seed 0 --examples 40 --budget 45 [--ops relu,gemm] [--mem-mb 512]

``tests/test_bad_inputs.py`` runs this under a watchdog. Protocol on stdout, one line each, flushed:
``BEGIN op``, ``CALL op #i: <python code>`` (printed before the call is made, so the parent can name
the call that crashed or hung), ``FAIL op: <what> :: <python code>``, ``END op``, ``ALLDONE``.

Each drawn call runs on every CPU backend present and must either return or raise a ValueError /
TypeError whose message starts with ``"<op>:"`` (the library's convention: the op, then the
argument). Beyond that:

* the backends agree: both raise the same class, or both return results of the same type (ndarray,
  NumPy scalar, tuple), shape, dtype, C-contiguity, and values (NaN positions, signs of zeros where
  the op is exact, within the op's tolerance elsewhere);
* an independent reference, where the op has one (Python-int shape formulas, float64 / int64 loops
  over the in-bounds taps only, so that they stay cheap for any padding or dilation), agrees with
  the result; some inputs must be refused (a zero-size kernel);
* inputs are not modified;
* memory is bounded: the address space is capped (``RLIMIT_AS``) at ``--mem-mb`` above what the
  process holds after warming up, so an absurd allocation is a MemoryError, counted as a failure
  unless the result itself is that large;
* time is bounded: a call over ``--call-limit`` seconds (run twice, so that a first kernel build is
  not counted) is a failure, and the parent kills a call that does not return at all.

The parameters come from pools of extreme values (0, -1, 2**31 - 1, 2**31, 2**63, 10**30, NaN, Inf,
subnormals), NumPy scalars (unsigned, any width), big-endian 0-d arrays, non-bool flags and junk
(strings, lists, arrays); the arrays from small shapes, the common dtypes, special values, F-order
and strided views, and ``np.broadcast_to`` views of huge logical size (no memory). The ``emulator
timeout`` entry launches an op on a fresh thread under a tiny ``set_timeout``; run first in its
process, it is also the first launch of that process.

Adding an op is one entry in ``OPS``: how to draw its call, and optionally its reference.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pygpu_ops as po  # noqa: E402
from pygpu_ops._runtime import backends  # noqa: E402

BACKENDS = [b for b in ("numpy", "emulator") if backends.problem(b) is None]


def out(line: str) -> None:
    sys.stdout.write(line.replace("\n", " ") + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Values, with a repr that is Python code rebuilding them (the reproducers)
# ---------------------------------------------------------------------------------------------
class Code:
    """A value and the code that builds it."""

    def __init__(self, value, code: str):
        self.value, self.code = value, code

    def __repr__(self):
        return self.code


def int_code(v: int) -> str:
    """A big int as ``10**k`` / ``2**k`` (with its sign) when it is one; else its digits."""
    a = abs(v)
    if a >= 2**16:
        for base in (10, 2):
            k = round(math.log(a, base))
            if base**k == a:
                return ("-" if v < 0 else "") + f"{base}**{k}"
    return repr(v)


def code_of(v) -> str:
    if isinstance(v, Code):
        return v.code
    if type(v) is int:
        return int_code(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, np.generic):
        t = type(v).__name__
        if isinstance(v, np.floating) and not np.isfinite(v):
            return f"np.{t}({code_of(float(v))})"
        return f"np.{t}({v.item()!r})"
    if isinstance(v, tuple):
        return "(" + "".join(code_of(e) + ", " for e in v).rstrip(" ").rstrip(",") + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(code_of(e) for e in v) + "]"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, np.ndarray):
        return f"np.array({v.tolist()!r}, dtype={v.dtype.str!r})"
    return repr(v)


def value_of(v):
    if isinstance(v, Code):
        return v.value
    if isinstance(v, tuple):
        return tuple(value_of(e) for e in v)
    if isinstance(v, list):
        return [value_of(e) for e in v]
    return v


I32 = 2**31
EXTREME_INTS = [0, -1, 1, 2, I32 - 1, I32, -I32, -I32 - 1, 2**32, 2**32 + 1, 2**62, 2**63 - 1, 2**63, 2**64,
                10**30, -(10**30)]
NP_INTS = [np.uint64(2**64 - 1), np.uint64(2**64 - 128), np.uint64(2**63), np.uint32(2**32 - 1), np.int64(-(2**63)),
           np.int64(2**31), np.uint8(255), np.int8(-1), np.uint16(2)]
TINY = 1e-45  # float32 subnormal
EXTREME_REALS = [0.0, -0.0, -1.0, 1.0, TINY, 5e-324, 1e-310, 1e-39, float("nan"), float("inf"), float("-inf"),
                 float("nan"), float("inf"), 10**400,
                 3e38, 3.5e38, 1e308, 10**400, -(10**400), 2**63, np.float32("nan"), np.float16(65504),
                 np.float64(1e-320), np.float32(1.5), np.longdouble(2.0)]
JUNK = [None, "1", "False", "same", "valid", "x", 2.5, [1], (1, 2), (1, 2, 3), (), 1j, b"1", object]


def big_endian(v, dtype: str) -> Code:
    a = np.array(v, dtype=dtype)
    return Code(a, f"np.array({a.tolist()!r}, dtype={dtype!r})")


def np_bool_arrays():
    return [Code(np.array([True, False]), "np.array([True, False])"), Code(np.array(True), "np.array(True)"),
            Code(np.array([1, 0]), "np.array([1, 0])")]


class P:
    """A scalar parameter: ``typical`` values (valid; OMIT leaves the keyword out) and a ``wild``
    strategy (extremes, NumPy scalars, big-endian 0-d arrays, junk). A call makes one to three of its
    parameters wild at a time, so that the others pass and the wild one reaches the deep checks."""

    def __init__(self, typical, wild, is_flag=False):
        self.typical, self.wild, self.is_flag = list(typical), wild, is_flag


WILD_INTS = st.one_of(st.sampled_from(EXTREME_INTS), st.sampled_from(NP_INTS),
                      st.sampled_from(EXTREME_INTS).map(lambda v: big_endian(v, ">i8") if -2**63 <= v < 2**63 else v),
                      st.sampled_from(JUNK + [True, 2.0, float("nan")]))


def ints(*typical):
    return P(typical, WILD_INTS)


def pairs(*typical):
    t = st.sampled_from([v for v in typical if isinstance(v, int)] or [1])
    return P(typical, st.one_of(WILD_INTS, st.tuples(WILD_INTS, WILD_INTS), st.tuples(WILD_INTS, t),
                                st.tuples(t, WILD_INTS), st.tuples(WILD_INTS), st.lists(WILD_INTS, min_size=2, max_size=2)))


def reals(*typical):
    return P(typical, st.one_of(st.sampled_from(EXTREME_REALS), st.sampled_from(EXTREME_REALS),
                                st.sampled_from(EXTREME_INTS), st.sampled_from(NP_INTS),
                                st.sampled_from([True, "1.0", None, (1.0,), 1j])))


def choice(*valid, junk=("x", None, 1, "NCHW ", b"NCHW")):
    return P(valid, st.sampled_from(list(junk)))


def flag(default=False):
    return P([OMIT, OMIT, False, True, np.bool_(True), np.bool_(False)],
             st.one_of(st.sampled_from(["False", "True", "", 0, 1, 2, None, 1.0, np.int8(0), np.uint64(1)]),
                       st.sampled_from(np_bool_arrays())), is_flag=True)


# ---------------------------------------------------------------------------------------------
# Arrays: values cycled through a shape, then a layout (C, F, strided view, broadcast view, matrix)
# ---------------------------------------------------------------------------------------------
FLOAT_SPECIAL = [1.5, -2.0, 0.0, -0.0, 3.0, -0.5, float("nan"), float("inf"), float("-inf"), 1e-45, 1e-40, 1e4]
# Near the float32 / float16 maxima: only for ops exact on every backend (a sum may overflow in one
# order of summation and not in another).
FLOAT_EDGE = FLOAT_SPECIAL + [3e38, -3.4e38, 65504.0, 1e38]
FLOAT_MODERATE = [1.5, -2.0, 0.0, -0.0, 3.0, -0.5, 0.25, 7.0, -1.0, 100.0]
INT_SPECIAL = [0, 1, -1, 127, -128, 5, -7, 100]
# Logical sizes past the kernels' int indices: a correct op refuses them at once or needs a result
# that large (a MemoryError under the cap, accepted then); below 2**31 a correct op may legitimately
# run for minutes on them, so the fuzzer does not go there.
HUGE = [I32, I32 + 1, 2**32 + 3, 2**40]


@st.composite
def arrays(draw, shapes, dtypes, values=None, huge_axes=(), views=True, force=None):
    """An array drawn from ``shapes`` (a strategy of tuples) and ``dtypes`` (dtype strings, '>f4'
    allowed). ``huge_axes``: axes that may be made huge through np.broadcast_to (no memory)."""
    shape = tuple(draw(shapes))
    dt = np.dtype(draw(st.sampled_from(dtypes)))
    if dt.kind == "f":
        pool = values if values is not None else draw(st.sampled_from([FLOAT_SPECIAL, FLOAT_MODERATE]))
    elif dt.kind == "b":
        pool = [True, False]
    else:
        pool = [v for v in INT_SPECIAL if np.iinfo(dt).min <= v <= np.iinfo(dt).max]
    vals = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=6))
    with np.errstate(all="ignore"):
        base = np.array(vals, dtype=dt)
    n = int(np.prod(shape)) if shape else 1
    src = f"np.array({base.tolist()!r}, dtype={dt.str!r})"
    big = [ax for ax in huge_axes if ax < len(shape)]
    if force:  # {axis: size}: a broadcast view of exactly these sizes (e.g. a shared huge K)
        small = tuple(1 if ax in force else s for ax, s in enumerate(shape))
        target = tuple(force.get(ax, s) for ax, s in enumerate(shape))
        a = np.broadcast_to(np.resize(base, small), target)
        return Code(a, f"np.broadcast_to(np.resize({src}, {small!r}), {target!r})")
    how = draw(st.sampled_from(["C"] * 6 + (["F", "strided", "bcast"] if views else []) + (["huge"] if big else []) + (["matrix"] if len(shape) == 2 and views else [])))
    if how == "huge":
        axes = draw(st.lists(st.sampled_from(big), min_size=1, max_size=2, unique=True))
        target = list(shape)
        for ax in axes:
            target[ax] = draw(st.sampled_from(HUGE))
        small = tuple(1 if ax in axes else s for ax, s in enumerate(shape))
        while int(np.prod([t or 1 for t in target], dtype=object)) > 2**58:  # NumPy's limit on the logical size of a view
            ax = axes.pop()
            target[ax] = shape[ax] if axes else I32
            axes = axes or [ax]
        small = tuple(1 if ax in axes else s for ax, s in enumerate(shape))
        a = np.broadcast_to(np.resize(base, small), tuple(target))
        return Code(a, f"np.broadcast_to(np.resize({src}, {small!r}), {tuple(target)!r})")
    if how == "matrix":
        a = np.asmatrix(np.resize(base, shape))
        return Code(a, f"np.asmatrix(np.resize({src}, {shape!r}))")
    if how == "F":
        a = np.asfortranarray(np.resize(base, shape))
        return Code(a, f"np.asfortranarray(np.resize({src}, {shape!r}))")
    if how == "strided" and shape:
        wide = shape[:-1] + (2 * shape[-1],)
        a = np.resize(base, wide)[..., ::2]
        return Code(a, f"np.resize({src}, {wide!r})[..., ::2]")
    if how == "bcast" and shape and n > 0:
        a = np.broadcast_to(np.resize(base, (1,) + shape[1:]), shape)
        return Code(a, f"np.broadcast_to(np.resize({src}, {(1,) + shape[1:]!r}), {shape!r})")
    a = np.resize(base, shape) if n else np.zeros(shape, dt)
    return Code(a, f"np.resize({src}, {shape!r})" if n else f"np.zeros({shape!r}, dtype={dt.str!r})")


def dims(lo=0, hi=5):
    """A dimension: mostly at least 1, sometimes ``lo`` (zero-size)."""
    return st.one_of(st.integers(max(lo, 1), hi), st.integers(max(lo, 1), hi), st.integers(lo, hi))


def nd(n, lo=0, hi=5):
    return st.tuples(*[dims(lo, hi)] * n)


ANY_SHAPE = st.lists(dims(0, 4), min_size=0, max_size=5).map(tuple)


# ---------------------------------------------------------------------------------------------
# A call, its reproducer, and the run on one backend
# ---------------------------------------------------------------------------------------------
@dataclass
class Call:
    op: str
    args: tuple
    kwargs: dict
    fn: Optional[Callable] = None  # default: getattr(po, op)
    reject: Optional[str] = None  # set when a drawn value must be refused (a non-bool flag)

    def code(self, backend: str = "BACKEND") -> str:
        parts = [code_of(a) for a in self.args] + [f"{k}={code_of(v)}" for k, v in self.kwargs.items()]
        parts.append(f"backend={backend!r}")
        return f"po.{self.op}({', '.join(parts)})"

    def run(self, backend: str):
        fn = self.fn or getattr(po, self.op)
        return fn(*value_of(self.args), backend=backend, **value_of(self.kwargs))


@dataclass
class Outcome:
    result: Any = None
    error: Optional[BaseException] = None
    seconds: float = 0.0


@dataclass
class Op:
    draw: Callable  # st.composite: draw -> Call
    ref: Optional[Callable] = None  # (Call) -> Ref or None
    exact: bool = False  # bitwise agreement between backends (signs of zeros included)
    rtol: float = 1e-4
    backends: tuple = ()  # default: BACKENDS


@dataclass
class Ref:
    """What an independent reference expects of a call that returned."""

    shape: Optional[tuple] = None  # of the result (the first element of a tuple result)
    value: Optional[np.ndarray] = None  # float64 / int64, compared with ``rtol`` (exact if 0)
    rtol: float = 0.0
    atol: float = 0.0
    reject: Optional[str] = None  # the call must raise ValueError / TypeError, for this reason
    finite: bool = False  # the result must be finite
    extra: List[Callable] = field(default_factory=list)  # (result) -> message or None


def plain_int(v, lo=None):
    if isinstance(v, Code) or isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        return None
    v = int(v)
    return v if lo is None or v >= lo else None


def plain_pair(v, lo):
    if isinstance(v, (tuple, list)) and len(v) in (1, 2):
        p = [plain_int(e, lo) for e in v]
        if None in p:
            return None
        return tuple(p * 2 if len(p) == 1 else p)
    i = plain_int(v, lo)
    return None if i is None else (i, i)


def val(c):
    return value_of(c)


# ---------------------------------------------------------------------------------------------
# References (independent of the package: Python ints for sizes, float64 / int64 for values)
# ---------------------------------------------------------------------------------------------
def pool_out(size, k, s, p, d, ceil):
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    o = num // s + 1
    if ceil and (o - 1) * s >= size + p:
        o -= 1
    return o


def taps(size, o, k, s, p, d):
    """In-bounds input indices of window ``o`` along one axis, and their tap numbers (no loop over k)."""
    start = o * s - p
    res = []
    for i in range(size):
        off = i - start
        if off >= 0 and off % d == 0 and off // d < k:
            res.append(i)
    return res


def ref_pool(c: Call, avg: bool) -> Optional[Ref]:
    x = val(c.args[0])
    kw = c.kwargs
    k = plain_pair(c.args[1], 1)
    s = k if kw.get("stride") is None else plain_pair(kw.get("stride"), 1)
    p = plain_pair(kw.get("padding", 0), 0)
    d = (1, 1) if avg else plain_pair(kw.get("dilation", 1), 1)
    ceil = kw.get("ceil_mode", False)
    layout = kw.get("layout", "NCHW")
    if (None in (k, s, p, d) or not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype.kind != "f"
            or not isinstance(ceil, bool) or layout not in ("NCHW", "NHWC")):
        return None
    xv = x if layout == "NCHW" else np.moveaxis(x, 3, 1)
    N, C, H, W = xv.shape
    if N * C == 0:
        return None
    if any(p[a] > ((k[a] - 1) * d[a] + 1) // 2 for a in range(2)):
        return None
    OH, OW = (pool_out(H, k[0], s[0], p[0], d[0], ceil), pool_out(W, k[1], s[1], p[1], d[1], ceil))
    if H == 0:
        OH = 0
    if W == 0:
        OW = 0
    if OH < 0 or OW < 0 or (H and OH < 1) or (W and OW < 1):
        return None
    shape = (N, C, OH, OW) if layout == "NCHW" else (N, OH, OW, C)
    if N * C * OH * OW > 4096 or H * W > 4096 or OH * (H + 1) * OW * (W + 1) > 200000:
        return Ref(shape=shape)
    ref = np.zeros((N, C, OH, OW))
    idx = np.zeros((N, C, OH, OW), np.int64)
    x64 = xv.astype(np.float64)
    for oh in range(OH):
        rows = taps(H, oh, k[0], s[0], p[0], d[0])
        for ow in range(OW):
            cols = taps(W, ow, k[1], s[1], p[1], d[1])
            win = x64[:, :, rows][:, :, :, cols].reshape(N, C, -1)
            if avg:
                count_pad = kw.get("count_include_pad", True)
                if not isinstance(count_pad, bool):
                    return None
                hs, ws = oh * s[0] - p[0], ow * s[1] - p[1]
                he, we = min(hs + k[0], H + p[0]), min(ws + k[1], W + p[1])
                div = (he - hs) * (we - ws) if count_pad else len(rows) * len(cols)
                with np.errstate(all="ignore"):
                    ref[:, :, oh, ow] = win.sum(axis=2) / div if div else np.nan
            elif win.shape[2] == 0:
                ref[:, :, oh, ow] = -np.inf
            else:
                flat = np.array([r * W + q for r in rows for q in cols])
                nan = np.isnan(win)
                pos = np.where(nan.any(axis=2), nan.argmax(axis=2), np.nanargmax(np.where(nan, -np.inf, win), axis=2))
                ref[:, :, oh, ow] = np.take_along_axis(win, pos[..., None], 2)[..., 0]
                idx[:, :, oh, ow] = flat[pos]
    if layout == "NHWC":
        ref, idx = np.moveaxis(ref, 1, 3), np.moveaxis(idx, 1, 3)
    r = Ref(shape=shape, value=ref.astype(x.dtype).astype(np.float64), rtol=0 if not avg else 1e-5,
            atol=0 if not avg else 1e-30)
    if not avg and kw.get("return_indices") is True and ref.size:
        def check_idx(res, idx=idx, ref=ref):
            got = np.asarray(res[1])
            if got.shape != idx.shape:
                return f"indices shape {got.shape}, expected {idx.shape}"
            # ties may pick any equal element: compare the values the indices point at
            xs = (xv if layout == "NCHW" else xv).reshape(N, C, -1).astype(np.float64)
            g = got if layout == "NCHW" else np.moveaxis(got, 3, 1)
            want = ref if layout == "NCHW" else np.moveaxis(ref, 3, 1)
            empty = want == -np.inf  # a window wholly in the padding (or of -inf): any index is as good
            g = np.where(empty, 0, g)
            if g.size and (g.min() < 0 or g.max() >= H * W):
                return f"indices out of [0, {H * W}): {g.min()}..{g.max()}"
            picked = np.take_along_axis(xs, g.reshape(N, C, -1), 2).reshape(g.shape)
            picked = np.where(empty, -np.inf, picked)
            if not np.array_equal(picked, want, equal_nan=True):
                return f"indices point at {picked.ravel()[:8]}, the maxima are {want.ravel()[:8]}"
            return None
        r.extra.append(check_idx)
    return r


def ref_im2col_shape(c: Call, x, k) -> Optional[Ref]:
    """The result's shape (API.md) when every parameter is a plain valid int or pair, so that a
    MemoryError for a result that really is that large is told apart from an absurd allocation."""
    kw = c.kwargs
    s, p, d = (plain_pair(kw.get(n, dflt), lo) for n, dflt, lo in (("stride", 1, 1), ("padding", 0, 0), ("dilation", 1, 1)))
    layout = kw.get("layout", "NCHW")
    if None in (s, p, d) or x.ndim != 4 or layout not in ("NCHW", "NHWC") or max(s + p + d) > I32:
        return None
    N, C, H, W = x.shape if layout == "NCHW" else (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    OH = (H + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    OW = (W + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if OH < 1 or OW < 1:
        return None
    return Ref(shape=(N, C * k[0] * k[1], OH * OW) if layout == "NCHW" else (N, OH * OW, k[0] * k[1] * C))


def ref_conv(c: Call, nd: int) -> Optional[Ref]:
    """Shape of conv2d / conv1d / qconv2d / im2col; a zero-size kernel must be refused."""
    x, w = val(c.args[0]), val(c.args[3] if c.op == "qconv2d" else c.args[1])
    if c.op == "im2col":
        k = plain_pair(c.args[1], 0)
        if k is None or not isinstance(x, np.ndarray):
            return None
        if 0 in k:
            return Ref(reject="a zero-size kernel")
        return ref_im2col_shape(c, x, k)
    if not (isinstance(x, np.ndarray) and isinstance(w, np.ndarray)) or w.ndim != nd + 2:
        return None
    layout = c.kwargs.get("layout", "NCHW")
    ks = w.shape[2:] if layout == "NCHW" or nd == 1 else w.shape[1:3]
    if 0 in ks:
        return Ref(reject=f"a zero-size kernel {ks}")
    return None


def ref_elementwise(c: Call, fn) -> Optional[Ref]:
    x = val(c.args[0])
    if type(x) is not np.ndarray or x.dtype.kind != "f" or x.size > 10**6:  # np.matrix: no opinion
        return None
    with np.errstate(all="ignore"):
        want = fn(x.astype(np.float64))
    return Ref(shape=x.shape, value=want.astype(x.dtype).astype(np.float64), rtol=0)


def ref_relu(c):
    return ref_elementwise(c, lambda v: np.where(np.isnan(v), v, np.where(v > 0, v, 0.0)))


def ref_leaky(c):
    s = val(c.args[1]) if len(c.args) > 1 else 0.01
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, float, np.floating, np.integer)):
        return None
    try:
        s = float(s)
    except OverflowError:
        return Ref(reject=f"negative_slope={code_of(c.args[1])} (does not fit a float64)")
    if not math.isfinite(s):
        return None
    x = val(c.args[0])
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and s != float(np.float32(s)):
        return None  # the slope is rounded to float32 by the kernel: leave the last bit to the backends' agreement
    return ref_elementwise(c, lambda v: np.where(v >= 0, v, v * s))


def ref_gemm_like(c: Call) -> Optional[Ref]:
    a, b = val(c.args[0]), val(c.args[1])
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.dtype.kind != "f" or a.ndim < 2 or b.ndim < 2:
        return None
    kw = c.kwargs
    if c.op == "gemm":
        ta, tb = kw.get("trans_a", False), kw.get("trans_b", False)
        if not all(isinstance(t, (bool, np.bool_)) for t in (ta, tb)) or a.ndim != 2 or b.ndim != 2:
            return None
        a, b = (a.T if ta else a), (b.T if tb else b)
    if a.shape[-1] != b.shape[-2]:
        return None
    try:
        bshape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        return None
    shape = bshape + (a.shape[-2], b.shape[-1])
    work = int(np.prod(shape, dtype=object)) * max(a.shape[-1], 1)   # K = 0 still writes the result
    if work > 10**6 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return Ref(shape=shape)
    with np.errstate(all="ignore"):
        want = np.matmul(a.astype(np.float64), b.astype(np.float64))
        mag = np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))
    if c.op == "gemm":
        alpha, beta = kw.get("alpha", 1.0), kw.get("beta", 0.0)
        if not all(type(v) in (int, float) and math.isfinite(v) and abs(v) < 1e6 for v in (alpha, beta)) or beta:
            return Ref(shape=shape)
        want, mag = want * alpha, mag * abs(alpha)
    tiny = float(np.finfo(a.dtype).smallest_subnormal) * (a.shape[-1] + 1)  # products rounded below normal
    tol = (1e-5 * mag.max() if mag.size else 0.0) + tiny
    return Ref(shape=shape, value=want, rtol=1e-5, atol=tol, finite=bool(np.isfinite(want).all()))


def ref_quant_params(c: Call) -> Optional[Ref]:
    x = val(c.args[0])
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.size == 0 or x.size > 10**6:
        return None
    if not np.isfinite(x).all():
        return Ref(reject="x holds NaN or Inf")

    def positive_finite(res):
        s = np.asarray(res[0], np.float64)
        if not (np.isfinite(s).all() and (s > 0).all()):
            return f"scale {s.ravel()[:4]} is not finite and positive for finite x"
        return None
    return Ref(extra=[positive_finite])


def ref_int8_gemm(c: Call) -> Optional[Ref]:
    a, b = val(c.args[0]), val(c.args[1])
    za, zb = scalar_of(val(c.kwargs.get("a_zero_point", 0))), scalar_of(val(c.kwargs.get("b_zero_point", 0)))
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.ndim != 2 or b.ndim != 2:
        return None
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu" or a.shape[1] != b.shape[0]:
        return None
    zs = []
    for z, dt in ((za, a.dtype), (zb, b.dtype)):
        if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer)):
            return None
        if not np.iinfo(dt).min <= int(z) <= np.iinfo(dt).max:
            return Ref(reject=f"zero point {z!r} outside {dt}")
        zs.append(int(z))
    if a.size * b.shape[1] > 10**6:
        return Ref(shape=(a.shape[0], b.shape[1]))
    want = (a.astype(np.int64) - zs[0]) @ (b.astype(np.int64) - zs[1])
    return Ref(shape=want.shape, value=want, rtol=0)


def scalar_of(v):
    """A 0-d or one-element array as its scalar (dtype kept); anything else unchanged."""
    if isinstance(v, np.ndarray) and v.size == 1 and v.ndim <= 1:
        return v.reshape(-1)[0]
    return v


def ref_quantize(c: Call) -> Optional[Ref]:
    x, s = val(c.args[0]), val(c.args[1])
    z = scalar_of(val(c.args[2])) if len(c.args) > 2 else 0
    dt = c.kwargs.get("dtype", "int8")
    if c.kwargs.get("axis") is not None or dt not in ("int8", "uint8"):
        return None
    if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer)):
        return None
    info = np.iinfo(dt)
    if not info.min <= int(z) <= info.max:
        return Ref(reject=f"zero_point {z!r} outside {dt}")
    if type(x) is not np.ndarray or x.dtype.kind != "f" or x.size > 10**6:
        return None
    if type(s) not in (int, float) or not (1e-30 < s < 1e30):
        return None
    with np.errstate(all="ignore"):
        q = np.rint(x.astype(np.float64) / np.float64(np.float32(s)))
        want = np.clip(np.where(np.isnan(q), 0, q) + int(z), info.min, info.max)
    # x / scale is rounded to float32 by the kernel: allow 1 at exact halves
    return Ref(shape=x.shape, value=want, rtol=0, atol=1.0)


def ref_dequantize(c: Call) -> Optional[Ref]:
    q, s = val(c.args[0]), val(c.args[1])
    z = scalar_of(val(c.args[2])) if len(c.args) > 2 else 0
    if c.kwargs.get("axis") is not None or type(q) is not np.ndarray or q.dtype.kind not in "iu":
        return None
    if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer)):
        return None
    if q.dtype in (np.int8, np.uint8) and not np.iinfo(q.dtype).min <= int(z) <= np.iinfo(q.dtype).max:
        return Ref(reject=f"zero_point {z!r} outside {q.dtype}")
    if type(s) not in (int, float) or not (1e-30 < s < 1e30) or q.size > 10**6:
        return None
    want = (q.astype(np.int64) - int(z)).astype(np.float64) * np.float64(np.float32(s))
    return Ref(shape=q.shape, value=want, rtol=1e-6, atol=0)


def ref_softmax(c: Call) -> Optional[Ref]:
    x = val(c.args[0])
    axis = c.kwargs.get("axis", -1)
    if type(x) is not np.ndarray or x.dtype.kind != "f" or type(axis) is not int or x.size > 10**5:
        return None
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        return None
    if not np.isfinite(x).all() or x.shape[axis] == 0:
        return Ref(shape=x.shape)
    x64 = x.astype(np.float64)
    m = np.max(x64, axis=axis, keepdims=True)
    e = np.exp(x64 - m)
    ssum = e.sum(axis=axis, keepdims=True)
    want = (x64 - m - np.log(ssum)) if c.op == "log_softmax" else e / ssum
    return Ref(shape=x.shape, value=want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max(initial=0)), finite=True)


def ref_transpose(c: Call) -> Optional[Ref]:
    x = val(c.args[0])
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        return None
    perm = (0, 2, 3, 1) if c.op == "nchw_to_nhwc" else (0, 3, 1, 2)
    if x.size > 10**6 or x.dtype.kind not in "fiub":
        return Ref(shape=tuple(x.shape[i] for i in perm))
    return Ref(shape=tuple(x.shape[i] for i in perm),
               value=np.transpose(x, perm).astype(np.float64) if x.dtype.kind == "f" else None)


def ref_global_avg(c: Call) -> Optional[Ref]:
    x = val(c.args[0])
    layout = c.kwargs.get("layout", "NCHW")
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype.kind != "f" or layout not in ("NCHW", "NHWC"):
        return None
    ax = (2, 3) if layout == "NCHW" else (1, 2)
    shape = tuple(1 if i in ax else n for i, n in enumerate(x.shape))
    big = max(x.size, int(np.prod(shape, dtype=object))) > 10**6   # an empty plane still has N * C results
    if big or not np.isfinite(x).all() or np.abs(x).max(initial=0) > 1e30:
        return Ref(shape=shape)
    with np.errstate(all="ignore"):
        want = x.astype(np.float64).mean(axis=ax, keepdims=True)
    return Ref(shape=shape, value=want, rtol=1e-5, atol=1e-30)


def expected_bytes(c: Call, ref: Optional[Ref]) -> int:
    """The size of the result (8 bytes an element): the reference's shape, else the largest input."""
    if ref is not None and ref.shape is not None:
        return int(np.prod(ref.shape, dtype=object)) * 8
    return max([int(np.prod(a.shape, dtype=object)) * 8 for a in arrays_in(c)] + [0])


# ---------------------------------------------------------------------------------------------
# The op table: one entry per public op
# ---------------------------------------------------------------------------------------------
OMIT = object()


def call(draw, op, *args, fn=None, **kwargs):
    """A Call of ``op``; P parameters are drawn, one to three of them wild (sometimes none)."""
    names = [i for i, v in enumerate(args) if isinstance(v, P)] + [k for k, v in kwargs.items() if isinstance(v, P)]
    names += [k for k, v in kwargs.items() if isinstance(v, P) and v.is_flag] * 2  # flags: cheap to get wrong
    n = draw(st.sampled_from([0, 1, 1, 1, 1, 1, 1, 2, 2, 3]))
    wild = set(draw(st.lists(st.sampled_from(names), max_size=n, unique=True))) if names else set()

    def pick(key, v):
        if not isinstance(v, P):
            return v
        return draw(v.wild) if key in wild else draw(st.sampled_from(v.typical))
    a = tuple(pick(i, v) for i, v in enumerate(args))
    k = {key: pick(key, v) for key, v in kwargs.items()}
    c = Call(op, a, {key: v for key, v in k.items() if v is not OMIT}, fn)
    for key, v in list(enumerate(args)) + list(kwargs.items()):
        got = a[key] if isinstance(key, int) else k[key]
        if isinstance(v, P) and v.is_flag and got is not OMIT and not isinstance(got, (bool, np.bool_)):
            c.reject = f"the flag {key}={code_of(got)} (not a bool)"
    return c


@st.composite
def window(draw, dilation=True, kernels=(1, 2, 3)):
    """(kernel, stride, padding, dilation) of one axis, extreme together yet often valid: a huge
    dilation with a padding that keeps the window in range, a kernel of 20001 padded by half."""
    d = draw(st.sampled_from([1, 2, 2**16, 2**30, I32 - 1, I32 - 1, I32])) if dilation else 1
    k = draw(st.sampled_from(kernels))
    eff = (k - 1) * d + 1
    p = draw(st.sampled_from([0, eff // 2, eff // 2, eff // 2 + 1, min(eff // 2, I32 - 1), I32 - 1, 2**30]))
    s = draw(st.sampled_from([1, 1, 2, I32 - 1, I32, eff]))
    return k, s, p, d


@st.composite
def windows(draw, dilation=True, kernels=(1, 2, 3)):
    """(kernel, stride, padding, dilation) pairs of two axes; sometimes one axis plain."""
    a = draw(window(dilation, kernels))
    b = draw(st.one_of(st.just((1, 1, 0, 1)), st.just(a), window(dilation, kernels)))
    if draw(st.booleans()):
        a, b = b, a
    return tuple(zip(a, b))


X4 = nd(4, 0, 5)
X4N = st.one_of(nd(4, 1, 5), nd(4, 1, 5), ANY_SHAPE)
VALID = ["<f4", "<f4", "<f4", "<f8", ">f4"]  # float ops: mostly valid dtypes, big-endian included
WRONG = ["<i4", "<f2", "|b1", "<i8", "<u1"]


def EDGE(draw):
    return draw(st.sampled_from([FLOAT_EDGE, FLOAT_MODERATE]))


def fdtypes(draw, extra=()):
    return draw(st.sampled_from([VALID] * 4 + [WRONG + list(extra)]))


@st.composite
def d_relu(draw):
    x = draw(arrays(st.one_of(ANY_SHAPE, st.just(())), fdtypes(draw), EDGE(draw), huge_axes=(0, 1, 2)))
    return call(draw, "relu", x)


@st.composite
def d_leaky(draw):
    x = draw(arrays(st.one_of(ANY_SHAPE, st.just(())), fdtypes(draw), EDGE(draw), huge_axes=(0, 1)))
    return call(draw, "leaky_relu", x, reals(0.01, 0.2, -1.5, 3.0, 0.5))


@st.composite
def d_gemm(draw):
    M, N = draw(dims(0, 9)), draw(dims(0, 9))
    K = draw(st.one_of(dims(0, 9), st.just(0), st.just(M)))  # K == M: a square a, transposed or not
    if draw(st.integers(0, 3)) == 3:
        N = K = M  # all square: a flag that wrongly transposes still gives valid shapes
    dt = [draw(st.sampled_from(fdtypes(draw)))]
    ta, tb = draw(st.booleans()), draw(st.booleans())
    sa = (K, M) if ta else (M, K)
    sb = (N, K) if tb else (K, N)
    if draw(st.integers(0, 4)) == 4:  # a huge K shared by both operands, through broadcast views
        K = draw(st.sampled_from(HUGE))
        a = draw(arrays(st.just(sa), dt, force={0 if ta else 1: K}))
        b = draw(arrays(st.just(sb), dt, force={1 if tb else 0: K}))
    else:
        a = draw(arrays(st.one_of(st.just(sa), st.just(sa), nd(2, 0, 6)), dt, huge_axes=(0, 1)))
        b = draw(arrays(st.one_of(st.just(sb), st.just(sb), nd(2, 0, 6)), dt, huge_axes=(0, 1)))
    cm = draw(st.one_of(st.just(None), arrays(st.just((M, N)), dt)))
    beta = [OMIT, 0.0] if cm is None else [OMIT, 0.0, 1.0, 0.5]
    return call(draw, "gemm", a, b, cm, alpha=reals(OMIT, 1.0, 2.0, -0.5), beta=reals(*beta),
                trans_a=P([ta], flag().wild, is_flag=True), trans_b=P([tb], flag().wild, is_flag=True),
                variant=choice(OMIT, "auto", *po.sgemm_variants()))


@st.composite
def d_matmul(draw):
    M, N, K = draw(dims(0, 6)), draw(dims(0, 6)), draw(dims(0, 8))
    dt = fdtypes(draw)
    ba = draw(st.lists(dims(1, 3), max_size=2).map(tuple))
    bb = draw(st.one_of(st.just(ba), st.lists(st.sampled_from([1, 2, 3]), max_size=2).map(tuple)))
    if draw(st.integers(0, 4)) == 4:  # a huge K shared by both operands, through broadcast views
        K = draw(st.sampled_from(HUGE))
        a = draw(arrays(st.just(ba + (M, 1)), dt, force={len(ba) + 1: K}))
        b = draw(arrays(st.just(bb + (1, N)), dt, force={len(bb): K}))
    else:
        a = draw(arrays(st.one_of(st.just(ba + (M, K)), st.just(ba + (M, K)), ANY_SHAPE), dt,
                        huge_axes=tuple(range(len(ba) + 2))))
        b = draw(arrays(st.one_of(st.just(bb + (K, N)), st.just(bb + (K, N)), ANY_SHAPE), dt,
                        huge_axes=tuple(range(len(bb) + 2))))
    return call(draw, "matmul", a, b, variant=choice(OMIT, "auto", *po.sgemm_variants()))


@st.composite
def d_softmax(draw):
    x = draw(arrays(st.one_of(X4N, st.just(())), fdtypes(draw), huge_axes=(0, 1, 2, 3)))
    return call(draw, draw(st.sampled_from(["softmax", "log_softmax"])), x, axis=ints(OMIT, -1, 0, 1, 2, 3, -4),
                variant=choice(OMIT, "auto", *po.softmax_variants()))


def small_x(draw, edge=True):
    """A valid little 4-D float array: the joint extremes of the window are the point of the call."""
    return draw(arrays(nd(4, 1, 3), VALID, EDGE(draw) if edge else None))


def pool_x(draw, edge=False):
    return draw(arrays(st.one_of(X4, X4, ANY_SHAPE), fdtypes(draw), EDGE(draw) if edge else None, huge_axes=(0, 1, 2, 3)))


@st.composite
def d_max_pool(draw):
    if draw(st.booleans()):
        k, s, p, d = draw(windows())
        return call(draw, "max_pool2d", small_x(draw), k, stride=s, padding=p, dilation=d,
                    ceil_mode=flag(), return_indices=flag(), layout=choice(OMIT, "NCHW", "NHWC"))
    return call(draw, "max_pool2d", pool_x(draw, edge=True), pairs(1, 2, 3, (3, 1), (2, 3)), stride=pairs(OMIT, None, 1, 2, (1, 2)),
                padding=pairs(OMIT, 0, 1, (1, 0)), dilation=pairs(OMIT, 1, 2, (2, 1)), ceil_mode=flag(),
                return_indices=flag(), layout=choice(OMIT, "NCHW", "NHWC"))


@st.composite
def d_avg_pool(draw):
    if draw(st.booleans()):
        k, s, p, _ = draw(windows(dilation=False, kernels=(1, 2, 3, 1201, 20001)))
        return call(draw, "avg_pool2d", small_x(draw, edge=False), k, stride=s, padding=p, ceil_mode=flag(),
                    count_include_pad=flag(), layout=choice(OMIT, "NCHW", "NHWC"))
    return call(draw, "avg_pool2d", pool_x(draw), pairs(1, 2, 3, (3, 1), (2, 3)), stride=pairs(OMIT, None, 1, 2),
                padding=pairs(OMIT, 0, 1, (1, 0)), ceil_mode=flag(), count_include_pad=flag(),
                layout=choice(OMIT, "NCHW", "NHWC"))


@st.composite
def d_global_avg(draw):
    return call(draw, "global_avg_pool2d", pool_x(draw), layout=choice(OMIT, "NCHW", "NHWC"))


@st.composite
def d_transpose(draw):
    x = draw(arrays(st.one_of(X4, X4, ANY_SHAPE), draw(st.sampled_from([VALID, ["<i1", "<u1", "<i4", "<f8", "|b1", "<f2"]])),
                    huge_axes=(0, 1, 2, 3)))
    return call(draw, draw(st.sampled_from(["nchw_to_nhwc", "nhwc_to_nchw"])), x)


@st.composite
def d_im2col(draw):
    if draw(st.integers(0, 2)) == 2:
        k, s, p, d = draw(windows())
        return call(draw, "im2col", small_x(draw), k, stride=s, padding=p, dilation=d,
                    layout=choice(OMIT, "NCHW", "NHWC"))
    return call(draw, "im2col", pool_x(draw), pairs(1, 2, 3, (1, 2), (3, 1)), stride=pairs(OMIT, 1, 2),
                padding=pairs(OMIT, 0, 1), dilation=pairs(OMIT, 1, 2), layout=choice(OMIT, "NCHW", "NHWC"))


@st.composite
def conv_window(draw, k, size):
    """(stride, padding, dilation) of one conv axis with kernel ``k`` over ``size``: a huge dilation
    padded just enough for the window to fit, or plain."""
    d = draw(st.sampled_from([1, 2, 2**16, 2**30, I32 - 1, I32]))
    eff = (max(k, 1) - 1) * d + 1
    fit = max(0, -(-(eff - size) // 2))
    return (draw(st.sampled_from([1, 1, 2, I32 - 1, I32])), draw(st.sampled_from([fit, fit, fit + 1, I32 - 1, I32])), d)


def conv_params(draw, ks, sizes):
    """stride / padding / dilation keywords: P parameters, or (a third of the time) joint extremes."""
    if draw(st.integers(0, 2)) < 2:
        return dict(stride=pairs(OMIT, 1, 2), padding=P([OMIT, 0, 1, (1, 0), "same", "valid"], pairs().wild),
                    dilation=pairs(OMIT, 1, 2))
    w = [draw(conv_window(k, n)) for k, n in zip(ks, sizes)]
    if len(w) == 1:
        return dict(stride=w[0][0], padding=w[0][1], dilation=w[0][2])
    return dict(stride=(w[0][0], w[1][0]), padding=(w[0][1], w[1][1]), dilation=(w[0][2], w[1][2]))


@st.composite
def d_conv2d(draw):
    N, C, O, H, W = draw(dims(0, 3)), draw(dims(1, 4)), draw(dims(1, 4)), draw(dims(0, 6)), draw(dims(0, 6))
    g = draw(st.sampled_from([1, 1, 1, C]))
    kh, kw = draw(dims(0, 3)), draw(dims(0, 3))
    layout = draw(st.sampled_from(["NCHW", "NCHW", "NHWC"]))
    xs = (N, C, H, W) if layout == "NCHW" else (N, H, W, C)
    ws = (O * g, C // g, kh, kw) if layout == "NCHW" else (O * g, kh, kw, C // g)
    dt = draw(st.sampled_from([["<f4", ">f4"]] * 4 + [WRONG]))
    x = draw(arrays(st.one_of(st.just(xs), st.just(xs), ANY_SHAPE), dt, huge_axes=(0, 1, 2, 3)))
    w = draw(arrays(st.one_of(st.just(ws), st.just(ws), ANY_SHAPE), ["<f4"], huge_axes=(0, 1, 2, 3)))
    b = draw(st.one_of(st.just(None), arrays(st.just((O * g,)), ["<f4"])))
    return call(draw, "conv2d", x, w, b, **conv_params(draw, (kh, kw), (H, W)), groups=ints(g), layout=choice(layout),
                activation=choice(OMIT, None, "relu", junk=("gelu", 1, "RELU")))


@st.composite
def d_conv1d(draw):
    N, C, O, L, k = draw(dims(0, 3)), draw(dims(1, 4)), draw(dims(1, 4)), draw(dims(0, 8)), draw(dims(0, 3))
    x = draw(arrays(st.one_of(st.just((N, C, L)), st.just((N, C, L)), ANY_SHAPE), ["<f4", ">f4"], huge_axes=(0, 1, 2)))
    w = draw(arrays(st.one_of(st.just((O, C, k)), st.just((O, C, k)), ANY_SHAPE), ["<f4"], huge_axes=(0, 1, 2)))
    return call(draw, "conv1d", x, w, None, **conv_params(draw, (k,), (L,)), groups=ints(OMIT, 1),
                activation=choice(OMIT, None, "relu"))


def qscale():
    return P([0.05, 0.5, 1.0, 2.0, 0.25], st.one_of(reals().wild, st.sampled_from(
        [big_endian(0.5, ">f4"), big_endian([0.5], ">f8"), Code(np.float32(0.25), "np.float32(0.25)"),
         Code(np.float32(1e-40), "np.float32(1e-40)")])))


def qzp(*typical):
    return P(typical, st.one_of(WILD_INTS, st.sampled_from(
        [big_endian(3, ">i4"), big_endian(-2, ">i2"), big_endian([1], ">i8"), big_endian(200, ">u2"),
         big_endian(2**64 - 128, ">u8"), big_endian(2**63, "<u8")])))


@st.composite
def d_quant_params(draw):
    # no huge views: a reduction without a kernel has no size limit, and NumPy's own max over 2**40
    # elements takes hours
    x = draw(arrays(st.one_of(X4N, st.just(())), fdtypes(draw), EDGE(draw)))
    if draw(st.integers(0, 3)) == 3:
        x = draw(arrays(st.sampled_from([(2,), (2, 3)]), ["<f8"], values=[1e300, -1e300, 1e-300, 3e38, 4e38, -2.0, 0.0]))
    return call(draw, "quant_params", x, axis=ints(OMIT, None, 0, 1, -1), symmetric=flag(),
                dtype=choice(OMIT, "int8", "uint8", junk=("int32", None, np.int8, "INT8")))


@st.composite
def d_quantize(draw):
    x = draw(arrays(st.one_of(X4N, st.just(()), nd(1, 0, 6)), fdtypes(draw), EDGE(draw), huge_axes=(0, 1, 2, 3)))
    dt = draw(st.sampled_from(["int8", "uint8"]))
    z = (0, 1, -3) if dt == "int8" else (0, 1, 128)
    return call(draw, "quantize", x, qscale(), qzp(*z), axis=ints(OMIT, None), dtype=choice(dt, junk=("int4", None)))


@st.composite
def d_dequantize(draw):
    dt = draw(st.sampled_from(["<i1", "<u1", "<i1", "<u1", "<i4", ">i4", "<f4"]))
    q = draw(arrays(st.one_of(X4N, st.just(()), nd(1, 0, 6)), [dt], huge_axes=(0, 1, 2, 3)))
    z = (0, 1, 128) if dt == "<u1" else (0, 1, -3)
    return call(draw, "dequantize", q, qscale(), qzp(*z), axis=ints(OMIT, None))


@st.composite
def d_int8_gemm(draw):
    M, N, K = draw(dims(0, 7)), draw(dims(0, 7)), draw(dims(0, 9))
    da, db = draw(st.sampled_from(["<i1", "<u1"])), draw(st.sampled_from(["<i1", "<u1"]))
    if draw(st.integers(0, 4)) == 4:  # a huge K shared by both operands, through broadcast views
        K = draw(st.sampled_from(HUGE))
        a = draw(arrays(st.just((M, 1)), [da], force={1: K}))
        b = draw(arrays(st.just((1, N)), [db], force={0: K}))
    else:
        a = draw(arrays(st.one_of(st.just((M, K)), st.just((M, K)), nd(2, 0, 5), ANY_SHAPE), [da], huge_axes=(0, 1)))
        b = draw(arrays(st.one_of(st.just((K, N)), st.just((K, N)), nd(2, 0, 5)), [db], huge_axes=(0, 1)))
    bz = P([OMIT, 0, 3, draw(arrays(st.just((N,)), [db], views=False))], qzp().wild)
    return call(draw, "int8_gemm", a, b, a_zero_point=qzp(OMIT, 0, 3 if da == "<i1" else 200), b_zero_point=bz,
                variant=choice(OMIT, "auto", *po.int8_gemm_variants()))


@st.composite
def d_qlinear(draw):
    M, N, K = draw(dims(0, 6)), draw(dims(0, 6)), draw(dims(0, 8))
    a = draw(arrays(st.one_of(st.just((M, K)), st.just((M, K)), nd(2, 0, 5)), ["<i1"], huge_axes=(0, 1)))
    b = draw(arrays(st.one_of(st.just((K, N)), st.just((K, N)), nd(2, 0, 5)), ["<i1"], huge_axes=(0, 1)))
    return call(draw, "qlinear_matmul", a, qscale(), qzp(0, 2), b, qscale(), qzp(0, -1), qscale(), qzp(0, -1, 5),
                out_dtype=choice(OMIT, "int8", "uint8"))


@st.composite
def d_qconv(draw):
    N, C, O, H, W = draw(dims(0, 2)), draw(dims(1, 3)), draw(dims(1, 3)), draw(dims(0, 6)), draw(dims(0, 6))
    kh, kw = draw(dims(0, 3)), draw(dims(0, 3))
    layout = draw(st.sampled_from(["NCHW", "NCHW", "NHWC"]))
    xs = (N, C, H, W) if layout == "NCHW" else (N, H, W, C)
    ws = (O, C, kh, kw) if layout == "NCHW" else (O, kh, kw, C)
    x = draw(arrays(st.one_of(st.just(xs), st.just(xs), ANY_SHAPE), ["<i1", "<u1"], huge_axes=(0, 1, 2, 3)))
    w = draw(arrays(st.one_of(st.just(ws), st.just(ws), ANY_SHAPE), ["<i1"], huge_axes=(0, 1, 2, 3)))
    return call(draw, "qconv2d", x, qscale(), qzp(0, 3), w, qscale(), qzp(0), qscale(), qzp(0, 5), None,
                **conv_params(draw, (kh, kw), (H, W)), groups=ints(OMIT, 1), layout=choice(layout), activation=choice(OMIT, None, "relu"),
                out_dtype=choice(OMIT, None, "int8", "uint8"))


# The emulator under a tiny timeout, on a fresh thread: a KernelError (or a correct result), never a crash.
def _with_timeout(inner: str, t: float):
    def fn(*args, backend, **kwargs):
        from pygpu_ops._runtime import emulator as emu
        box = {}

        def body():
            prev = emu.get_timeout()
            emu.set_timeout(t)
            try:
                box["r"] = getattr(po, inner)(*args, backend=backend, **kwargs)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                box["e"] = e
            finally:
                emu.set_timeout(prev)
        th = threading.Thread(target=body)
        th.start()
        th.join()
        if "e" in box:
            e = box["e"]
            if isinstance(e, emu.KernelError):
                return "KernelError"
            raise e
        return box["r"]
    return fn


@st.composite
def d_timeout(draw):
    t = draw(st.sampled_from([1e-6, 1e-9, 1e-6, 1e-4]))
    inner = draw(st.sampled_from(["relu", "relu", "softmax", "gemm"]))
    n = draw(st.sampled_from([4, 64, 1000]))
    if inner == "gemm":
        args = (Code(np.ones((n // 4, 8), np.float32), f"np.ones(({n // 4}, 8), np.float32)"),
                Code(np.ones((8, 4), np.float32), "np.ones((8, 4), np.float32)"))
    else:
        args = (Code(np.ones(n, np.float32), f"np.ones({n}, np.float32)"),)
    c = Call("emulator_timeout", args, {}, _with_timeout(inner, t))
    c.code = lambda backend="emulator", c=c, inner=inner, t=t: (  # type: ignore[method-assign]
        f"threading.Thread(target=lambda: (emu.set_timeout({t!r}), "
        f"po.{inner}({', '.join(code_of(a) for a in c.args)}, backend={backend!r}))).start()")
    return c


OPS: Dict[str, Op] = {
    "emulator_timeout": Op(d_timeout, backends=("emulator",)),
    "relu": Op(d_relu, ref_relu, exact=True),
    "leaky_relu": Op(d_leaky, ref_leaky, exact=True),
    "gemm": Op(d_gemm, ref_gemm_like, rtol=1e-4),
    "matmul": Op(d_matmul, ref_gemm_like, rtol=1e-4),
    "softmax": Op(d_softmax, ref_softmax, rtol=1e-5),
    "max_pool2d": Op(d_max_pool, lambda c: ref_pool(c, False), exact=True),
    "avg_pool2d": Op(d_avg_pool, lambda c: ref_pool(c, True), rtol=1e-5),
    "global_avg_pool2d": Op(d_global_avg, ref_global_avg, rtol=1e-5),
    "nchw_to_nhwc": Op(d_transpose, ref_transpose, exact=True),
    "im2col": Op(d_im2col, lambda c: ref_conv(c, 2), exact=True),
    "conv2d": Op(d_conv2d, lambda c: ref_conv(c, 2), rtol=1e-4),
    "conv1d": Op(d_conv1d, lambda c: ref_conv(c, 1), rtol=1e-4),
    "quant_params": Op(d_quant_params, ref_quant_params, exact=True),
    "quantize": Op(d_quantize, ref_quantize, exact=True),
    "dequantize": Op(d_dequantize, ref_dequantize, exact=True),
    "int8_gemm": Op(d_int8_gemm, ref_int8_gemm, exact=True),
    "qlinear_matmul": Op(d_qlinear, None, exact=True),
    "qconv2d": Op(d_qconv, lambda c: ref_conv(c, 2), exact=True),
}


def _selftest_ops() -> Dict[str, Op]:
    """Faulty fake ops that tests/test_bad_inputs.py uses to check the harness itself."""
    import ctypes
    leaks = [0]

    def crash(x, backend):
        ctypes.string_at(0)

    def hang(x, backend):
        time.sleep(3600)

    def memory(x, backend):
        return np.ones(MEM_CAP, np.uint8)[:1].copy()

    def disagree(x, backend):
        return x * (2 if backend == "emulator" else 1)

    def leak(x, backend):
        leaks[0] += 1
        if leaks[0] % 2:
            raise OverflowError("Python int too large to convert to C long")
        raise ValueError("The truth value of an array with more than one element is ambiguous")

    def fine(x, backend):
        return x + 1

    def entry(name, fn):
        @st.composite
        def d(draw):
            return Call(name, (draw(arrays(st.just((3,)), ["<f4"], FLOAT_MODERATE, views=False)),), {}, fn)
        return Op(d)
    return {n: entry(n, f) for n, f in [("_crash", crash), ("_hang", hang), ("_memory", memory),
                                        ("_disagree", disagree), ("_leak", leak), ("_fine", fine)]}


if os.environ.get("PYGPU_OPS_FUZZ_SELFTEST"):
    OPS.update(_selftest_ops())


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------
CALL_LIMIT = 3.0  # seconds per call and backend (set by --call-limit)
INTERRUPT_S = 10.0  # a call still running after this long is interrupted (SIGALRM, at the next bytecode)


class CallTimeout(BaseException):
    """Raised in the main thread by SIGALRM: the call took far too long."""


def _alarm(signum, frame):
    raise CallTimeout(f"interrupted after {INTERRUPT_S:.0f} s")
MEM_CAP = 512 << 20  # bytes above the warmed-up process (set by --mem-mb)


def run_timed(c: Call, backend: str) -> Outcome:
    t0 = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, INTERRUPT_S)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            r = c.run(backend)
        return Outcome(result=r, seconds=time.perf_counter() - t0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every other exception is judged below
        return Outcome(error=e, seconds=time.perf_counter() - t0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:200]}"


def arrays_in(c: Call):
    for v in list(c.args) + list(c.kwargs.values()):
        v = value_of(v)
        if isinstance(v, np.ndarray):
            yield v


def leaves(r):
    if isinstance(r, tuple):
        for e in r:
            yield from leaves(e)
    else:
        yield r


def compare(a, b, exact: bool, rtol: float, where: str = "result") -> Optional[str]:
    """Whether two backends' results agree (type, shape, dtype, values); a message if not."""
    if type(a) is not type(b):
        return f"{where}: types differ: {type(a).__module__}.{type(a).__name__} vs {type(b).__module__}.{type(b).__name__}"
    if isinstance(a, tuple):
        if len(a) != len(b):
            return f"{where}: tuples of {len(a)} and {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            m = compare(x, y, exact, rtol, f"{where}[{i}]")
            if m:
                return m
        return None
    if not isinstance(a, (np.ndarray, np.generic)):
        return None if a == b else f"{where}: {a!r} vs {b!r}"
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{where}: shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype.kind != "f":
        if not np.array_equal(x, y):
            i = np.flatnonzero(x.ravel() != y.ravel())[0]
            return f"{where}: values differ at flat index {i}: {x.ravel()[i]!r} vs {y.ravel()[i]!r}"
        return None
    xn, yn = np.isnan(x), np.isnan(y)
    if (xn != yn).any():
        i = np.flatnonzero((xn != yn).ravel())[0]
        return f"{where}: NaN positions differ, first at flat index {i}: {x.ravel()[i]!r} vs {y.ravel()[i]!r}"
    xf, yf = np.where(xn, 0, x).astype(np.float64), np.where(yn, 0, y).astype(np.float64)
    if exact:
        bad = (xf != yf) | (np.signbit(xf) != np.signbit(yf))
    else:
        inf = np.isinf(xf) | np.isinf(yf)
        fin = np.abs(np.where(inf, 0, xf)).max(initial=0)
        with np.errstate(all="ignore"):
            bad = np.where(inf, xf != yf, np.abs(xf - yf) > rtol * (np.maximum(np.abs(xf), np.abs(yf)) + fin) + 1e-30)
    if bad.any():
        i = np.flatnonzero(bad.ravel())[0]
        return (f"{where}: values differ at flat index {i}: {x.ravel()[i]!r} vs {y.ravel()[i]!r}"
                f" ({int(bad.sum())} of {bad.size})")
    return None


def check_ref(ref: Ref, r, backend: str) -> Optional[str]:
    if ref.reject:
        return f"{backend} returned a result for {ref.reject} (expected ValueError/TypeError)"
    first = r[0] if isinstance(r, tuple) else r
    got = np.asarray(first)
    if ref.shape is not None and tuple(got.shape) != tuple(ref.shape):
        return f"{backend} result shape {tuple(got.shape)}, the reference gives {tuple(ref.shape)}"
    if ref.value is not None:
        want = np.asarray(ref.value, np.float64)
        g = got.astype(np.float64)
        gn, wn = np.isnan(g), np.isnan(want)
        if (gn != wn).any():
            i = np.flatnonzero((gn != wn).ravel())[0]
            return f"{backend}: NaN at flat index {i}: got {g.ravel()[i]!r}, the reference gives {want.ravel()[i]!r}"
        with np.errstate(all="ignore"):
            gi, wi = np.where(gn, 0, g), np.where(wn, 0, want)
            inf = np.isinf(gi) | np.isinf(wi)
            bad = np.where(inf, gi != wi, np.abs(gi - wi) > ref.rtol * np.abs(wi) + ref.atol)
        if bad.any():
            i = np.flatnonzero(bad.ravel())[0]
            return f"{backend}: value at flat index {i} is {g.ravel()[i]!r}; the reference gives {want.ravel()[i]!r}"
    if ref.finite and got.dtype.kind == "f" and not np.isfinite(got).all():
        return f"{backend}: non-finite result where the reference is finite: {got.ravel()[~np.isfinite(got.ravel())][:4]}"
    for fn in ref.extra:
        m = fn(r)
        if m:
            return f"{backend}: {m}"
    return None


def check_call(entry: Op, c: Call) -> List[tuple]:
    """Run ``c`` on each backend and return the failures as (kind, message) pairs."""
    fails = []
    before = [(a, a.copy()) for a in arrays_in(c) if a.size <= 10**6]
    outcomes: Dict[str, Outcome] = {}
    for b in entry.backends or BACKENDS:
        oc = run_timed(c, b)
        if isinstance(oc.error, CallTimeout):
            fails.append(("slow", f"{b}: {oc.error} (limit {CALL_LIMIT} s)"))
            outcomes[b] = Outcome(error=oc.error, seconds=oc.seconds)
            continue
        if oc.seconds > CALL_LIMIT:  # again, in case the first run built a kernel module
            oc2 = run_timed(c, b)
            if oc2.seconds > CALL_LIMIT:
                fails.append(("slow", f"{b}: {oc.seconds:.1f} s, then {oc2.seconds:.1f} s (limit {CALL_LIMIT} s)"))
        outcomes[b] = oc
    for a, copy in before:
        if not np.array_equal(a, copy, equal_nan=a.dtype.kind in "fc"):
            fails.append(("mutates input", "an input array was modified"))
    ref = None
    if entry.ref is not None:
        try:
            ref = entry.ref(c)
        except Exception as e:  # noqa: BLE001 - a reference that cannot judge this call has no opinion
            ref = None
            out(f"NOTE reference of {c.op} failed: {describe(e)}")
    huge_result = expected_bytes(c, ref) > MEM_CAP // 4
    prefix = c.op + ":"
    for b, oc in outcomes.items():
        e = oc.error
        if e is None:
            r = oc.result
            for leaf in leaves(r):
                if isinstance(leaf, np.ndarray) and not leaf.flags.c_contiguous:
                    fails.append(("not C-contiguous", f"{b}: result of shape {leaf.shape} is not C-contiguous"))
                if isinstance(leaf, np.ndarray) and leaf.size and any(np.may_share_memory(leaf, a) for a in arrays_in(c)):
                    fails.append(("shares memory", f"{b}: the result shares memory with an input"))
            if c.reject:
                fails.append(("accepted a non-bool flag", f"{b} returned a result for {c.reject}"))
            if ref is not None and c.op != "emulator_timeout":
                m = check_ref(ref, r, b)
                if m:
                    fails.append(("reference: refusal expected" if ref.reject else "reference: mismatch", m))
        elif isinstance(e, CallTimeout):
            pass  # reported above
        elif isinstance(e, MemoryError):
            if not huge_result:
                fails.append(("MemoryError", f"{b}: MemoryError (address space capped {MEM_CAP >> 20} MiB above the baseline)"))
        elif c.op == "emulator_timeout":
            fails.append((f"raised {type(e).__name__}", f"{b}: {describe(e)} (expected KernelError)"))
        elif type(e) in (ValueError, TypeError) or isinstance(e, (ValueError, TypeError)) and type(e).__module__ == "builtins":
            if not str(e).startswith(prefix):
                fails.append((f"{type(e).__name__} not from the op's checks",
                              f"{b}: {describe(e)} (the message does not start with {prefix!r})"))
        else:
            fails.append((f"raised {type(e).__name__}", f"{b}: {describe(e)}"))
    if c.op == "emulator_timeout":
        r = outcomes["emulator"].result
        if r is not None and not (isinstance(r, str) or isinstance(r, np.ndarray)):
            fails.append(("timeout", f"unexpected result {r!r}"))
    if len(outcomes) == 2:
        (na, oa), (nb, ob) = outcomes.items()
        ea, eb = oa.error, ob.error
        if any(isinstance(e, (MemoryError, CallTimeout)) for e in (ea, eb)):
            pass
        elif (ea is None) != (eb is None):
            er, good = (ea, nb) if ea is not None else (eb, na)
            fails.append(("backends disagree: one raises",
                          f"{good} returned, the other raised {describe(er)}"))
        elif ea is not None and type(ea) is not type(eb):
            fails.append(("backends disagree: error class", f"{na}: {describe(ea)}; {nb}: {describe(eb)}"))
        elif ea is None:
            m = compare(oa.result, ob.result, entry.exact, entry.rtol)
            if m:
                fails.append((f"backends disagree: {m.split(':')[1].strip().split(' ')[0]}", f"{na} vs {nb}: {m}"))
    return fails


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def cap_memory(extra: int) -> None:
    """Cap this process's address space ``extra`` bytes above now; children (g++ building a kernel
    module) get the limit lifted again before they exec."""
    soft = vm_bytes() + extra
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    def lift():
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))

    class Popen(subprocess.Popen):
        def __init__(self, *a, **k):
            k.setdefault("preexec_fn", lift)
            super().__init__(*a, **k)
    subprocess.Popen = Popen  # type: ignore[misc]


def warm_up(name: str) -> None:
    """Build the kernel modules of an op before the memory cap and the clock apply."""
    x4 = np.ones((1, 2, 4, 4), np.float32)
    m = np.ones((4, 4), np.float32)
    q = np.ones((4, 4), np.int8)
    calls = {
        "relu": lambda b: [po.relu(m, backend=b), po.relu(m.astype(np.float64), backend=b)],
        "leaky_relu": lambda b: [po.leaky_relu(m, backend=b), po.leaky_relu(m.astype(np.float64), backend=b)],
        "gemm": lambda b: [po.gemm(m, m, backend=b), po.gemm(m.astype(np.float64), m.astype(np.float64), backend=b)],
        "matmul": lambda b: [po.matmul(m[None], m, backend=b)],
        "softmax": lambda b: [po.softmax(x4, backend=b), po.log_softmax(x4, axis=1, backend=b)],
        "max_pool2d": lambda b: [po.max_pool2d(x4, 2, backend=b), po.max_pool2d(x4, 2, layout="NHWC", backend=b)],
        "avg_pool2d": lambda b: [po.avg_pool2d(x4, 2, backend=b), po.avg_pool2d(x4, 2, layout="NHWC", backend=b)],
        "global_avg_pool2d": lambda b: [po.global_avg_pool2d(x4, backend=b)],
        "nchw_to_nhwc": lambda b: [po.nchw_to_nhwc(x4, backend=b), po.nhwc_to_nchw(x4, backend=b)],
        "im2col": lambda b: [po.im2col(x4, 2, backend=b), po.im2col(x4, 2, layout="NHWC", backend=b)],
        "conv2d": lambda b: [po.conv2d(x4, np.ones((2, 2, 2, 2), np.float32), backend=b)],
        "conv1d": lambda b: [po.conv1d(x4[0], np.ones((2, 4, 2), np.float32), backend=b)],
        "quantize": lambda b: [po.quantize(m, 0.5, backend=b)],
        "dequantize": lambda b: [po.dequantize(q, 0.5, backend=b)],
        "int8_gemm": lambda b: [po.int8_gemm(q, q, backend=b)],
        "qlinear_matmul": lambda b: [po.qlinear_matmul(q, 0.5, 0, q, 0.5, 0, 1.0, 0, backend=b)],
        "qconv2d": lambda b: [po.qconv2d(np.ones((1, 2, 4, 4), np.int8), 0.5, 0, np.ones((2, 2, 2, 2), np.int8), 0.5, 0,
                                         1.0, 0, backend=b)],
    }
    for b in BACKENDS:
        if name in calls:
            try:
                calls[name](b)
            except Exception as e:  # noqa: BLE001 - the fuzzing reports what is wrong
                out(f"NOTE warm-up of {name} on {b}: {describe(e)}")


def fuzz(name: str, examples: int, seed: int, seconds: float) -> int:
    entry = OPS[name]
    if entry.backends and not set(entry.backends) <= set(BACKENDS):
        out(f"END {name} 0 examples: needs {entry.backends}, present {BACKENDS}")
        return 0
    deadline = time.monotonic() + seconds
    counter = [0]
    seen: Dict[str, int] = {}

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(c=entry.draw())
    def run(c):
        if time.monotonic() > deadline:
            return
        counter[0] += 1
        out(f"CALL {name} #{counter[0]}: {c.code()}")
        for kind, msg in check_call(entry, c):
            key = f"{c.op}: {kind}"
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 1:
                out(f"FAIL {key} :: {msg} :: {c.code()}  [example {counter[0]}, "
                    f"{time.monotonic() - deadline + seconds:.1f} s into {name}]")

    run()
    for key, n in seen.items():
        if n > 1:
            out(f"NOTE {key}: {n} examples in all")
    out(f"END {name} {counter[0]} examples {time.monotonic() - deadline + seconds:.1f} s")
    return len(seen)


def main(argv=None) -> int:
    global CALL_LIMIT, MEM_CAP
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--examples", type=int, default=40, help="examples per op")
    p.add_argument("--budget", type=float, default=45.0, help="seconds for all ops (split evenly)")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated entries of OPS, run in this order")
    p.add_argument("--mem-mb", type=int, default=512)
    p.add_argument("--call-limit", type=float, default=CALL_LIMIT)
    a = p.parse_args(argv)
    CALL_LIMIT, MEM_CAP = a.call_limit, a.mem_mb << 20
    names = [n for n in a.ops.split(",") if n]
    unknown = [n for n in names if n not in OPS]
    if unknown:
        p.error(f"unknown ops {unknown}; known: {sorted(OPS)}")
    out(f"START backends={BACKENDS} seed={a.seed} examples={a.examples} budget={a.budget}")
    failed = 0
    t_end = time.monotonic() + a.budget
    for i, name in enumerate(names):
        out(f"BEGIN {name}")
        if name != "emulator_timeout":  # its first launch is meant to be the first in the process
            warm_up(name)
        if not getattr(cap_memory, "done", False):
            cap_memory(MEM_CAP)
            cap_memory.done = True
        share = max(0.5, (t_end - time.monotonic()) / (len(names) - i))
        failed += fuzz(name, a.examples, a.seed, share)
    out(f"ALLDONE {failed} failure kinds")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
