"""Argument checks shared by the ops: each error names the argument, what was expected and what came."""
from __future__ import annotations

import functools
import numbers
from typing import Sequence

import numpy as np


def dtype_of(x) -> np.dtype:
    dt = getattr(x, "dtype", None)
    if isinstance(dt, np.dtype):      # NumPy and CuPy arrays
        return dt
    if dt is None:
        raise TypeError(f"expected an array with a dtype; got {type(x).__name__}")
    try:
        return np.dtype(dt)
    except TypeError:
        # torch dtypes: torch.float32 -> "float32"
        return np.dtype(str(dt).rsplit(".", 1)[-1])


@functools.lru_cache(maxsize=256)
def _dtypes(allowed: tuple) -> tuple:
    return tuple(np.dtype(a) for a in allowed)


def check_dtype(op: str, name: str, x, allowed: Sequence) -> np.dtype:
    dt = dtype_of(x)
    allowed = _dtypes(tuple(allowed))
    if dt not in allowed:
        raise TypeError(
            f"{op}: {name} has dtype {dt}; expected {' or '.join(str(a) for a in allowed)}"
        )
    return dt


def check_same_dtype(op: str, ref_name: str, ref: np.dtype, **others) -> None:
    for name, x in others.items():
        if x is None:
            continue
        dt = dtype_of(x)
        if dt != ref:
            raise TypeError(f"{op}: {name} has dtype {dt}; expected {ref}, the dtype of {ref_name}")


def check_ndim(op: str, name: str, x, ndim: int, layout: str = "") -> None:
    if len(x.shape) != ndim:
        what = f"{ndim}-D" + (f" {layout}" if layout else "")
        raise ValueError(f"{op}: {name} must be {what}; got shape {tuple(x.shape)}")


def check_real(op: str, name: str, v) -> float:
    """``v`` as a float64: a real number (not bool) within float64's range; NaN and +-Inf pass,
    for parameters where IEEE special values mean something (gemm's alpha / beta, leaky_relu's
    slope). A value too large for a float64 (``10**400``) is a ``ValueError``, never an
    ``OverflowError``."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number; got {type(v).__name__} {v!r}")
    try:
        return float(v)
    except OverflowError:
        raise ValueError(f"{op}: {name} must be a real number within float64's range; got {short_repr(v)}") from None


def check_choice(op: str, name: str, v, choices: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{op}: {name} must be one of {', '.join(repr(c) for c in choices)}; got {v!r}")
    return v


# ---------------------------------------------------------------------------------------------
# Scalar parameters: one check per C type the kernels receive. Values are checked, not bit
# patterns: numpy.uint64(2**64 - 1) is 18446744073709551615, never -1.
# ---------------------------------------------------------------------------------------------
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: The largest bound of a kernel loop whose int counter steps past it by up to 4096 (a block
#: stride): softmax's axis, global_avg_pool2d's H * W and C.
INT32_LOOP_MAX = INT32_MAX - 4096


def short_repr(v) -> str:
    """``repr(v)``, cut in the middle when very long (10**400 has 401 digits)."""
    r = repr(v)
    return r if len(r) <= 40 else f"{r[:18]}...{r[-12:]} ({len(r)} characters)"


def check_int(op: str, name: str, v, *, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int:
    """``v`` as a Python int: an integer (Python or NumPy, any width or byte order; not bool)
    with ``lo <= v <= hi``. The default range is the C ``int`` most kernels take."""
    if type(v) is int and lo <= v <= hi:      # the common case (shapes), without the ABC checks
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int; got {type(v).__name__} {v!r}")
    i = int(v)
    if not lo <= i <= hi:
        raise ValueError(f"{op}: {name} must be between {lo} and {hi}; got {short_repr(i)}")
    return i


def check_finite(op: str, name: str, v) -> float:
    """A real number (`check_real`) that is also finite and fits a float64."""
    try:
        f = check_real(op, name, v)
    except ValueError:
        raise ValueError(f"{op}: {name} must be a finite number; got {short_repr(v)}, beyond float64's range") from None
    if not np.isfinite(f):
        raise ValueError(f"{op}: {name} must be a finite number; got {f!r}")
    return f


def check_bool(op: str, name: str, v) -> bool:
    """``v`` as a bool: only ``True``/``False`` (``numpy.bool_`` too); strings, ints and arrays
    are refused, so ``trans_a="False"`` cannot mean True."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool; got {type(v).__name__} {v!r}")
    return bool(v)
