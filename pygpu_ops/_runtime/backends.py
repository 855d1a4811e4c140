"""Backend selection: which of numpy / emulator / cuda runs an op call, as API.md specifies.

Nothing here imports CuPy until a CUDA array is seen or the CUDA backend is asked for.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import sys
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from . import envvars

BACKENDS: Tuple[str, ...] = ("numpy", "emulator", "cuda")
ENV_VAR = "PYGPU_OPS_BACKEND"

_default: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("pygpu_ops_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine; the message says what to install."""


_WITH_AUTO = BACKENDS + ("auto",)


def _check_name(name: object, what: str, allow_auto: bool = False) -> str:
    names = _WITH_AUTO if allow_auto else BACKENDS
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"{what} must be one of {', '.join(repr(n) for n in names)}; got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Within the block, NumPy inputs run on ``name`` (``"auto"`` restores the process default)."""
    _check_name(name, "use_backend(name)", allow_auto=True)
    token = _default.set(None if name == "auto" else name)
    try:
        yield
    finally:
        _default.reset(token)


def default_backend() -> str:
    """The backend NumPy inputs run on: `use_backend`, else ``$PYGPU_OPS_BACKEND``, else numpy."""
    name = _default.get()
    if name is not None:
        return name
    env = (envvars.get(ENV_VAR) or "").strip()
    if not env or env == "auto":
        return "numpy"
    return _check_name(env, f"the environment variable {ENV_VAR}")


# ---------------------------------------------------------------------------------------------
# Array kinds
# ---------------------------------------------------------------------------------------------
_DLPACK_CUDA = (2, 13)  # kDLCUDA, kDLCUDAManaged


def array_kind(x: object) -> Optional[str]:
    """``"numpy"``, ``"cuda"`` (CuPy, or a CUDA tensor via CAI / DLPack), or None."""
    if type(x) is np.ndarray:         # the common case first, without the module-name test
        return "numpy"
    if type(x).__module__.split(".")[0] == "cupy":
        return "cuda"
    if isinstance(x, np.ndarray):
        return "numpy"
    try:
        if getattr(x, "__cuda_array_interface__", None) is not None:
            return "cuda"
    except Exception:  # torch raises for CPU tensors when asked
        pass
    dev = getattr(x, "__dlpack_device__", None)
    if callable(dev):
        try:
            if dev()[0] in _DLPACK_CUDA:
                return "cuda"
        except Exception:
            pass
    return None


def _describe(x: object) -> str:
    t = type(x)
    return f"{t.__module__}.{t.__qualname__}"


def resolve(op: str, backend: str, arrays: Dict[str, object]) -> str:
    """The backend name an op call runs on; ``arrays`` maps argument names to arrays (or None)."""
    _check_name(backend, f"{op}: backend", allow_auto=True)
    kind, mixed = None, False
    for name, x in arrays.items():
        if x is None:
            continue
        k = array_kind(x)
        if k is None:
            hint = ""
            if hasattr(x, "__dlpack__") or type(x).__module__.split(".")[0] == "torch":
                hint = " (a CPU tensor: pass tensor.numpy(), or move it to the GPU with tensor.cuda())"
            elif isinstance(x, (list, tuple, int, float)):
                hint = " (wrap it with numpy.asarray first)"
            raise TypeError(
                f"{op}: argument {name!r} must be a numpy.ndarray, a cupy.ndarray or a CUDA tensor; "
                f"got {_describe(x)}{hint}"
            )
        mixed |= kind is not None and k != kind
        kind = k
    if mixed:
        kinds = {n: array_kind(v) for n, v in arrays.items() if v is not None}
        detail = ", ".join(f"{n!r} is {'a NumPy array' if k == 'numpy' else 'on the GPU'}" for n, k in kinds.items())
        raise TypeError(
            f"{op}: arrays of mixed kinds in one call ({detail}); move them all to the GPU "
            f"(cupy.asarray) or all to the host (cupy.asnumpy)"
        )
    kind = kind or "numpy"
    if backend == "auto":
        backend = "cuda" if kind == "cuda" else default_backend()
    if backend == "cuda" and kind == "numpy":
        raise TypeError(
            f"{op}: backend 'cuda' needs GPU arrays, but the inputs are NumPy arrays; move them with "
            f"cupy.asarray(x) (results come back as CuPy arrays), or use backend='numpy' or 'emulator'"
        )
    if backend != "cuda" and kind == "cuda":
        raise TypeError(
            f"{op}: backend {backend!r} runs on host memory, but the inputs are GPU arrays; copy them "
            f"with cupy.asnumpy(x) (tensor.cpu().numpy() for PyTorch), or use backend='cuda'"
        )
    require(backend)
    return backend


# ---------------------------------------------------------------------------------------------
# Availability
# ---------------------------------------------------------------------------------------------
def _emulator_problem() -> Optional[str]:
    if not sys.platform.startswith("linux"):
        return f"the emulator runs on Linux only (this is {sys.platform})"
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler {cxx!r} on the PATH (install g++, e.g. apt-get install g++, or set $CXX)"
    return None


def _cuda_problem() -> Optional[str]:
    try:
        import cupy
    except ImportError:
        return (
            "CuPy is not installed: pip install 'pygpu_ops[cuda12]' (CUDA 12) or "
            "'pygpu_ops[cuda13]' (CUDA 13)"
        )
    except Exception as exc:  # a broken CuPy install
        return f"CuPy failed to import: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no usable CUDA driver or device ({type(exc).__name__}: {exc})"
    if count < 1:
        return "no CUDA device is present"
    return None


_PROBES = {"numpy": lambda: None, "emulator": _emulator_problem, "cuda": _cuda_problem}
_problems: Dict[str, Optional[str]] = {}


def problem(name: str) -> Optional[str]:
    """Why backend ``name`` is unavailable here, or None when it is available (cached)."""
    if name not in _problems:
        _problems[name] = _PROBES[name]()
    return _problems[name]


def require(name: str) -> None:
    why = problem(name)
    if why is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available here: {why}")


def available_backends() -> Tuple[str, ...]:
    """The backends usable on this machine, in the order numpy, emulator, cuda."""
    return tuple(name for name in BACKENDS if problem(name) is None)
