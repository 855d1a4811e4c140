"""Native loops for the numpy backend: the C++ of ``cpu_src/`` compiled for this machine and called
through ctypes, where NumPy alone cannot come near PyTorch on the CPU.

Why: an op NumPy computes in several passes (softmax: max, subtract, exp, sum, divide; a pool:
one strided slice per window tap) reads and writes memory once per pass, and its float32 ``exp``
is a library call per pass; PyTorch's CPU kernels make one or two fused, vectorized passes, and
NumPy has no integer GEMM at all. The loops in ``cpu_src/`` make the fused passes (and an
AVX-512 SGEMM and an AVX512-VNNI int8 GEMM). A caller makes one ctypes call (which releases the
GIL); the loop splits its work over OpenMP threads, as many as `threads_for` says. Why not the
Python pool (`threads`): handing a piece to a Python thread measured 30-90 us here, as much as a
whole softmax at the bench's size, where OpenMP's spinning team takes it in microseconds.

How: every ``cpu_src/*.cpp`` file, its quoted includes inlined (`sources.expand_files`), is one
translation unit compiled once with the C++ compiler the emulator uses (``PYGPU_OPS_EMU_CXX``,
``CXX`` or g++) with `FLAGS`: ``-O3 -march=native -fopenmp``, no ``-ffast-math`` (IEEE
comparisons, NaN and signed zeros as written) and ``-ffp-contract=off`` (no product and sum fused
unless the source asks for an FMA), and cached on disk next to the emulator's builds
(``~/.cache/pygpu_ops/native``, keyed on the text, flags, compiler version and this CPU's model
and flags). The first use in a fresh cache compiles for several seconds.

Where there is no compiler, the build fails, or ``PYGPU_OPS_NATIVE=0`` is set, `lib` returns
None and every caller keeps its NumPy route (`problem` says why); a failed build warns once.
The two routes give the same bits where the op is exact (relu, leaky_relu, clip, pooling, the
transposes, row gathers, the int8 GEMM); softmax, sigmoid and the LSTM cell round their own
``exp`` (within 1 ulp) and ``tanh`` (within 3 ulp), and the SGEMM sums in its own order, all
within the ops' documented error bounds, not bitwise equal to the NumPy route.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
import warnings
from typing import Optional

from . import envvars, sources, threads

ENV_VAR = "PYGPU_OPS_NATIVE"
FLAGS = ("-std=c++17", "-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC",
         "-shared", "-fvisibility=hidden", "-fno-math-errno", "-ffp-contract=off", "-fdiagnostics-color=never")

_addressof, _char_from_buffer = ctypes.addressof, ctypes.c_char.from_buffer
F32, F64, I64, I32, P = ctypes.c_float, ctypes.c_double, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
#: The exported functions and their argument types (pointers are passed as ints).
SIGNATURES = {       # the loops take the thread count last (`threads_for`); exp_f32 and tanh_f32
                     # are the accuracy tests' hooks, the *_info / *_avx512 ones say what was built
    "relu_f32": (P, P, I64, I32), "relu_f64": (P, P, I64, I32),
    "leaky_relu_f32": (P, P, I64, F32, I32), "leaky_relu_f64": (P, P, I64, F64, I32),
    "clip_f32": (P, P, I64, F32, F32, I32), "clip_f64": (P, P, I64, F64, F64, I32),
    "sigmoid_f32": (P, P, I64, I32), "exp_f32": (P, P, I64),
    "softmax_rows_f32": (P, P, I64, I64, I32, I32),
    # pooling.cpp
    "max_pool_nhwc_f32": (P, P) + (I64,) * 5 + (I32,) * 8 + (I64, I32),
    "avg_pool_nhwc_f32": (P, P) + (I64,) * 5 + (I32,) * 9 + (I64, I32),
    "avg_pool_nchw_f32": (P, P) + (I64,) * 4 + (I32,) * 9 + (I64, I32),
    # gather.cpp (returns the first bad id's position, or -1)
    "gather_rows_i32": (P, P, I64, I64, I64, P, I32), "gather_rows_i64": (P, P, I64, I64, I64, P, I32),
    # rnn.cpp
    "lstm_cell_f32": (P, I64, P, P, P, P, P, P, I64, I64, I32), "tanh_f32": (P, P, I64),
    # transpose.cpp
    **{f"transpose_u{8 * size}": (P, P, I64, I64, I64, I32) for size in (1, 2, 4, 8)},
    # int8_gemm.cpp
    "int8_gemm_info": (P,),
    "int8_gemm": (P, P, P, P),
    # sgemm.cpp
    "sgemm_f32": (P, I64, P, I64, I64, P, I64, I64, P, I32, F32, P, I64, I32),
    "conv_nhwc_f32": (P, I64, I64, I64, I64, I64, I64, I64, I64, I64, I64, I64, P, I64,
                      P, P, I64, I64, P, I64, P, I64, P, I32, F32, P, I64, I32),
    "sgemm_f32_avx512": (P,),
}

#: The functions that return a value (the others return nothing).
RESTYPES = {"gather_rows_i32": I64, "gather_rows_i64": I64}

#: Work (bytes read) under which a native loop runs on the calling thread alone.
PARALLEL_MIN_BYTES = 256 << 10

_lock = threading.Lock()
_state: dict = {}       # "lib": the CDLL, or "problem": why there is none
_forked = False         # this process is a fork child of one that ran a parallel region


def _after_fork() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def threads_for(nbytes: int) -> int:
    """The thread count to pass a native loop that reads ``nbytes``: `threads.num_threads`
    (``PYGPU_OPS_NUM_THREADS``), or 1 below `PARALLEL_MIN_BYTES`, inside a chunk of the Python
    pool (no nested fan-out), and in a forked child: libgomp's thread team does not survive
    ``fork``, and a child that enters a parallel region hangs (PyTorch runs single-threaded in
    such a child for the same reason)."""
    if nbytes < PARALLEL_MIN_BYTES or _forked or threads.inside_chunk():
        return 1
    return threads.num_threads()


def enabled() -> bool:
    """False when ``PYGPU_OPS_NATIVE`` is ``0`` (read on every call, so tests can switch it)."""
    return (envvars.get(ENV_VAR) or "").strip() != "0"


@functools.lru_cache(maxsize=None)
def _cpu_id() -> str:
    """This CPU's model and feature flags (``-march=native`` compiles for them)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _sources():
    folder = sources.src_dir("cpu_src")
    return sorted(folder.glob("*.cpp"))


def _build() -> ctypes.CDLL:
    from .emulator import _build as b

    text = sources.expand_files(_sources())
    key = b.digest(text, FLAGS, b.compiler_version(), _cpu_id())
    so = b.build("native", key, text, FLAGS, "the numpy backend's native loops (cpu_src/)", folder="native")
    return bind(ctypes.CDLL(str(so)))


def bind(dll: ctypes.CDLL, names=None) -> ctypes.CDLL:
    """Sets the argument and result types of `SIGNATURES` (or of ``names`` only: a library built
    from some of the files, as the tests' portable builds are) on ``dll``; returns it."""
    for name in SIGNATURES if names is None else names:
        fn = getattr(dll, name)
        fn.argtypes, fn.restype = SIGNATURES[name], RESTYPES.get(name)
    return dll


def lib() -> Optional[ctypes.CDLL]:
    """The compiled loops, or None (off, or not buildable here: `problem`)."""
    if not enabled():
        return None
    got = _state.get("lib")
    if got is not None or "problem" in _state:
        return got
    with _lock:
        if "lib" not in _state and "problem" not in _state:
            try:
                _state["lib"] = _build()
            except Exception as exc:          # no compiler, a failed build: NumPy routes
                _state["problem"] = f"{type(exc).__name__}: {exc}"
                if "not found" not in str(exc):
                    warnings.warn(f"pygpu_ops: the numpy backend's native loops did not build; using "
                                  f"NumPy alone (slower): {_state['problem']}", RuntimeWarning, stacklevel=3)
        return _state.get("lib")


def problem() -> Optional[str]:
    """Why `lib` is None, or None when the loops are in use."""
    if not enabled():
        return f"{ENV_VAR}=0"
    lib()
    return _state.get("problem")


def ptr(a) -> int:
    """The address of a NumPy array's first element. A writable C-contiguous non-empty array (what
    the ops allocate, and most inputs) through its buffer: 0.2 us here, against 0.9-1.1 for
    ``a.ctypes.data`` (a Python helper object per call) and 0.9-1.6 for ``__array_interface__``
    (a dict of the shape, strides and type), which serve the others."""
    f = a.flags
    if f.writeable and f.c_contiguous and a.nbytes:
        return _addressof(_char_from_buffer(a))
    return a.ctypes.data
