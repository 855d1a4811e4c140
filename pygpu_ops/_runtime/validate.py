"""Argument checks shared by the ops: each error names the argument, what was expected and what came."""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np


def dtype_of(x) -> np.dtype:
    dt = getattr(x, "dtype", None)
    if dt is None:
        raise TypeError(f"expected an array with a dtype; got {type(x).__name__}")
    try:
        return np.dtype(dt)
    except TypeError:
        # torch dtypes: torch.float32 -> "float32"
        return np.dtype(str(dt).rsplit(".", 1)[-1])


def check_dtype(op: str, name: str, x, allowed: Sequence) -> np.dtype:
    dt = dtype_of(x)
    allowed = [np.dtype(a) for a in allowed]
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
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number; got {type(v).__name__} {v!r}")
    return float(v)


def check_choice(op: str, name: str, v, choices: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{op}: {name} must be one of {', '.join(repr(c) for c in choices)}; got {v!r}")
    return v
