"""``RawModule`` / ``Function``: the CuPy-compatible front end."""

import contextlib
import ctypes
import os
import re
import struct
import threading
from pathlib import Path

import numpy as np

from . import _build, _counters, _elf, _memory, _source
from ._errors import (CompileError, DeadlockError, EmulatorError, KernelError,
                      KernelNotFoundError, LaunchError, OutOfBoundsError)

__all__ = ["RawModule", "RawKernel", "Function", "set_seed", "get_seed", "seed", "set_timeout",
           "get_timeout"]

# ---------------------------------------------------------------------------
# Scheduling seed.


def _env_seed():
    v = os.environ.get("PYGPU_OPS_EMU_SEED", "").strip()
    if not v:
        return 0
    try:
        return int(v, 0)
    except ValueError:
        raise ValueError(f"PYGPU_OPS_EMU_SEED must be an integer, got {v!r}") from None


_seed = _env_seed()


def set_seed(n):
    """Sets the seed of the order in which the threads of a block are run."""
    global _seed
    _seed = int(n) & 0xFFFFFFFFFFFFFFFF


def get_seed():
    return _seed


def _check_timeout(seconds, what):
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer,
                                                             np.floating)):
        raise TypeError(f"{what} must be a number of seconds or None, got "
                        f"{type(seconds).__name__}")
    seconds = float(seconds)
    if not (0 < seconds < float("inf")):
        raise ValueError(f"{what} must be a finite number of seconds > 0 (or None for no "
                         f"limit), got {seconds!r}")
    return seconds


def _env_timeout():
    v = os.environ.get("PYGPU_OPS_EMU_TIMEOUT", "").strip()
    if not v:
        return None
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"PYGPU_OPS_EMU_TIMEOUT must be a number of seconds, got {v!r}") \
            from None
    return _check_timeout(f, "PYGPU_OPS_EMU_TIMEOUT")


_timeout = _env_timeout()


def set_timeout(seconds):
    """Makes a launch that runs longer than ``seconds`` fail with a
    ``KernelError`` (None: no limit, the default; env ``PYGPU_OPS_EMU_TIMEOUT``).
    A launch that hangs is interrupted; one that ends after the deadline fails
    too, so the outcome does not depend on when the timer signal arrives."""
    global _timeout
    _timeout = _check_timeout(seconds, "timeout")


def get_timeout():
    return _timeout


@contextlib.contextmanager
def seed(n):
    """Context manager: run launches inside the block under seed ``n``."""
    old = _seed
    set_seed(n)
    try:
        yield
    finally:
        set_seed(old)


# ---------------------------------------------------------------------------
# Parameter type codes (mirror pygpuemu_detail::TypeCode in the prelude).
T_OTHER, T_VOID, T_BOOL, T_I8, T_U8, T_I16, T_U16, T_I32, T_U32, T_I64, T_U64, T_F32, T_F64, \
    T_CHAR, T_PTRVAL = range(15)
T_POINTER = 0x100

_SCALAR_DTYPES = {
    T_BOOL: np.dtype(np.bool_), T_I8: np.dtype(np.int8), T_U8: np.dtype(np.uint8),
    T_I16: np.dtype(np.int16), T_U16: np.dtype(np.uint16), T_I32: np.dtype(np.int32),
    T_U32: np.dtype(np.uint32), T_I64: np.dtype(np.int64), T_U64: np.dtype(np.uint64),
    T_F32: np.dtype(np.float32), T_F64: np.dtype(np.float64), T_CHAR: np.dtype(np.int8),
}
_POINTEE_DTYPES = {code: (dt,) for code, dt in _SCALAR_DTYPES.items()}
_POINTEE_DTYPES[T_CHAR] = (np.dtype(np.int8), np.dtype(np.uint8))
_POINTEE_DTYPES[T_PTRVAL] = (np.dtype(np.uint64), np.dtype(np.int64))

_ERR_CLASSES = {1: DeadlockError, 2: OutOfBoundsError, 3: KernelError, 4: LaunchError,
                5: EmulatorError, 6: KernelError}

#: Shared memory (static + dynamic) a block may use without opting in, on every GPU since
#: compute capability 2.0; also the most static shared memory a kernel may declare (ptxas).
DEFAULT_SHARED_PER_BLOCK = 48 * 1024
#: The most shared memory (static + dynamic) a block may use after opting in
#: (cudaDevAttrMaxSharedMemoryPerBlockOptin of sm_90 and sm_100: 227 KiB).
MAX_OPTIN_SMEM = 227 * 1024

_launch_lock = threading.RLock()


class _KernelEntry(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("tramp", ctypes.c_void_p),
        ("nparams", ctypes.c_int),
        ("codes", ctypes.POINTER(ctypes.c_int)),
        ("sizes", ctypes.POINTER(ctypes.c_int)),
        ("type_names", ctypes.POINTER(ctypes.c_char_p)),
        ("launch_bounds", ctypes.c_int),
        ("kernel", ctypes.c_void_p),
    ]


def _type_name(pretty):
    m = re.search(r"\[with T = (.*)\]$", pretty)
    return m.group(1) if m else pretty


class _Kernel:
    """A kernel of a loaded module (shared by all ``Function`` objects for it,
    like a CUfunction)."""

    def __init__(self, module, e, shared_size_bytes):
        self.module = module
        self.name = e.name.decode()
        self.tramp = e.tramp
        n = e.nparams
        self.codes = [e.codes[i] for i in range(n)]
        self.sizes = [e.sizes[i] for i in range(n)]
        self.type_names = [_type_name(e.type_names[i].decode()) for i in range(n)]
        lb = e.launch_bounds
        self.launch_bounds = lb if 0 < lb <= 1024 else None
        self.shared_size_bytes = shared_size_bytes
        # CUDA's default: whatever the static shared memory leaves of the 48 KiB (a launch with
        # more dynamic shared memory fails until the kernel opts in to more).
        self.max_dynamic_shared_size_bytes = max(0, DEFAULT_SHARED_PER_BLOCK - shared_size_bytes)
        self.name_bytes = self.name.encode()


class _LoadedModule:
    def __init__(self, path, load_args, counting):
        self.path = path
        self._load_args = load_args
        self.counting = counting
        self._twin = None
        self.lib = ctypes.CDLL(str(path), mode=os.RTLD_NOW | os.RTLD_LOCAL)
        self.lib.pygpuemu_module_tls_anchor.restype = ctypes.c_void_p
        self.lib.pygpuemu_module_tls_anchor.argtypes = []
        get = self.lib.pygpuemu_module_kernels
        get.restype = ctypes.c_int
        get.argtypes = [ctypes.POINTER(ctypes.POINTER(_KernelEntry))]
        arr = ctypes.POINTER(_KernelEntry)()
        n = get(ctypes.byref(arr))
        entries = [arr[i] for i in range(n)]
        try:
            by_function = _build.analysis(path)
            names = _elf.symbol_names_at(path, {e.name.decode(): e.kernel for e in entries},
                                         "pygpuemu_module_kernels",
                                         ctypes.cast(get, ctypes.c_void_p).value)
        except (OSError, ValueError) as exc:
            raise EmulatorError(f"cannot measure the static shared memory of the kernels in "
                                f"{path}: {exc}") from None
        # Identical code folding may give one address several names; only the kernel's own
        # name reaches its shared variables (code using other variables is not identical).
        static = {k: max(by_function.get(name, 0) for name in ns) for k, ns in names.items()}
        self.kernels = {}
        for e in entries:
            k = _Kernel(self, e, static[e.name.decode()])
            self.kernels[k.name] = k

    def counting_twin(self):
        """The same module built for counting memory accesses (built on first use)."""
        if self.counting:
            return self
        if self._twin is None:
            self._twin = _load(*self._load_args, counting=True)
        return self._twin


_modules = {}            # cache key -> _LoadedModule
_modules_lock = threading.Lock()


def _parse_options(options):
    """-> (std, defines, include_dirs).  Options the emulator does not know
    (NVRTC/NVCC code generation flags) are ignored."""
    if isinstance(options, str):
        options = (options,)
    std = "c++17"
    defines, includes = [], []
    opts = list(options or ())
    i = 0
    while i < len(opts):
        o = str(opts[i])
        nxt = str(opts[i + 1]) if i + 1 < len(opts) else None
        if o in ("-D", "--define-macro") and nxt is not None:
            defines.append("-D" + nxt)
            i += 2
            continue
        if o in ("-U", "--undefine-macro") and nxt is not None:
            defines.append("-U" + nxt)
            i += 2
            continue
        if o in ("-I", "--include-path") and nxt is not None:
            includes.append(nxt)
            i += 2
            continue
        if o.startswith("--define-macro="):
            defines.append("-D" + o.split("=", 1)[1])
        elif o.startswith("--undefine-macro="):
            defines.append("-U" + o.split("=", 1)[1])
        elif o.startswith("-D") or o.startswith("-U"):
            defines.append(o)
        elif o.startswith("--include-path="):
            includes.append(o.split("=", 1)[1])
        elif o.startswith("-I"):
            includes.append(o[2:])
        elif o.startswith("-std=") or o.startswith("--std="):
            v = o.split("=", 1)[1]
            m = re.fullmatch(r"(?:c|gnu)\+\+(\d\d)", v)
            if m and m.group(1) in ("20", "2a", "23", "2b"):
                std = v.replace("gnu", "c")
        i += 1
    return std, defines, includes


_QUOTED_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def _quoted_include_digests(code, include_dirs):
    """Contents of files the code still includes with quotes (searched in the
    -I directories and the current directory), for the cache key."""
    parts = []
    seen = set()
    todo = list(_QUOTED_INCLUDE.findall(_source.strip_comments(code)))
    while todo:
        inc = todo.pop()
        if inc in seen:
            continue
        seen.add(inc)
        for d in [*include_dirs, "."]:
            p = Path(d) / inc
            if p.is_file():
                text = p.read_text(errors="replace")
                parts.append(f"{inc}\n{p.resolve()}\n{text}")
                todo.extend(_QUOTED_INCLUDE.findall(_source.strip_comments(text)))
                break
        else:
            parts.append(f"{inc}\n<not found>")
    return parts


def _load(code, options, name_expressions, file_name, counting=False):
    """The loaded module for this source (built if needed); with ``counting``, its twin built
    for counting memory accesses (see :mod:`._counters`)."""
    std, defines, includes = _parse_options(options)
    flags = _build.module_flags(std, defines, includes)
    extra = _build.COUNTING_FLAGS if counting else ()
    tu, _names = _source.make_translation_unit(code, name_expressions, file_name)
    key = _build.digest("module", tu, flags, extra, "debug-prefix-map=cwd" if counting else "", _quoted_include_digests(code, includes),
                        _build.emulator_sources_digest(), _build.compiler_version())
    with _modules_lock:
        mod = _modules.get(key)
    if mod is not None:
        return mod
    _build.runtime()  # must be loaded (RTLD_GLOBAL) before any module
    if counting:
        # file names of the line table as written in #line (relative ones stay relative), so
        # that the cached module does not depend on the directory it was built from
        extra = (*extra, f"-fdebug-prefix-map={os.getcwd()}=.")
    path = _build.build("mod", key, tu, flags, f"module {file_name!r}",
                        analyze=_elf.function_shared_sizes, compile_only=extra)
    with _modules_lock:
        mod = _modules.get(key)
        if mod is None:
            mod = _modules[key] = _LoadedModule(path, (code, options, name_expressions,
                                                       file_name), counting)
    return mod


class RawModule:
    """Stand-in for ``cupy.RawModule``: compiles CUDA C++ source for the CPU.

    ``code``: the source (``#line`` directives are honoured in messages);
    ``options``: ``-D``/``-U``/``-I``/``-std=`` are used, other NVRTC/NVCC
    options ignored; ``name_expressions``: kernel names (template
    instantiations such as ``"k<float, 4>"``) to make available through
    :meth:`get_function`; every ``extern "C" __global__`` kernel is available
    as well.  ``name`` labels the source in messages.  Raises
    :class:`CompileError` with g++'s diagnostics if the source does not
    compile.
    """

    def __init__(self, code=None, *, path=None, options=(), name_expressions=None, name=None,
                 backend=None, translate_cucomplex=False, enable_cooperative_groups=False,
                 jitify=False):
        if code is None and path is None:
            raise TypeError("RawModule needs code= or path=")
        if code is not None and path is not None:
            raise TypeError("RawModule takes code= or path=, not both")
        if path is not None:
            code = Path(path).read_text()
            name = name or str(path)
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if isinstance(name_expressions, str):
            name_expressions = [name_expressions]
        self.code = code
        self.name = name or "kernel.cu"
        self.options = tuple(options or ())
        self.name_expressions = tuple(name_expressions or ())
        self._module = _load(code, self.options, self.name_expressions, self.name)
        for k in self._module.kernels.values():
            if k.shared_size_bytes > DEFAULT_SHARED_PER_BLOCK:
                # ptxas: "Entry function ... uses too much shared data (... 0xc000 max)"
                raise CompileError(
                    f"module {self.name!r}: kernel {k.name!r} declares {k.shared_size_bytes} "
                    f"bytes of static shared memory, more than the {DEFAULT_SHARED_PER_BLOCK} "
                    "(48 KiB) a kernel may declare (ptxas rejects it: 'uses too much shared "
                    "data'); put the excess in dynamic shared memory (extern __shared__) and "
                    "opt in with max_dynamic_shared_size_bytes")

    def get_function(self, name):
        k = self._module.kernels.get(name)
        if k is None:
            avail = ", ".join(repr(n) for n in self._module.kernels) or "none"
            raise KernelNotFoundError(
                f"module {self.name!r} has no kernel {name!r}; available: {avail} (templates "
                "and non-extern-\"C\" kernels must be listed in name_expressions)")
        return Function(k)

    def __repr__(self):
        return f"<emulator.RawModule {self.name!r} kernels={list(self._module.kernels)}>"


def _dim3(v, what, kernel):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        t = (int(v),)
    elif isinstance(v, (tuple, list)) and 1 <= len(v) <= 3 and all(
            isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
        t = tuple(int(x) for x in v)
    else:
        raise TypeError(f"kernel {kernel!r}: {what} must be an int or a tuple of 1 to 3 ints, "
                        f"got {v!r}")
    t = t + (1,) * (3 - len(t))
    if any(x < 1 for x in t):
        raise LaunchError(f"kernel {kernel!r}: {what} {t} has a dimension < 1 (CUDA fails such "
                          "a launch with 'invalid configuration argument')")
    return t


def _describe_value(v):
    if isinstance(v, np.ndarray):
        where = "device" if _memory.is_device_array(v) else "host (numpy)"
        return f"{where} array of dtype {v.dtype} shape {v.shape}"
    if isinstance(v, np.generic):
        return f"numpy.{type(v).__name__} scalar {v!r}"
    return f"Python {type(v).__name__} {v!r}"


class Function:
    """Stand-in for ``cupy.RawKernel``/``Function``: ``fn(grid, block, args,
    shared_mem=0)``."""

    def __init__(self, kernel):
        self._k = kernel

    @property
    def kernel_name(self):
        return self._k.name

    @property
    def max_threads_per_block(self):
        return self._k.launch_bounds or 1024

    @property
    def shared_size_bytes(self):
        """Static shared memory of the kernel in bytes (its ``__shared__`` variables, laid out
        as ptxas does), as ``CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES``."""
        return self._k.shared_size_bytes

    @property
    def max_dynamic_shared_size_bytes(self):
        """Most dynamic shared memory a launch may ask for; by default what the static shared
        memory leaves of 48 KiB, as CUDA reports. Settable (the opt-in), up to what the static
        shared memory leaves of the 227 KiB per block."""
        return self._k.max_dynamic_shared_size_bytes

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value):
        k = self._k
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"kernel {k.name!r}: max_dynamic_shared_size_bytes must be an int, "
                            f"got {type(value).__name__}")
        value = int(value)
        limit = MAX_OPTIN_SMEM - k.shared_size_bytes
        if not 0 <= value <= limit:
            # cuFuncSetAttribute fails with CUDA_ERROR_INVALID_VALUE
            raise LaunchError(
                f"kernel {k.name!r}: max_dynamic_shared_size_bytes={value} is outside [0, {limit}]"
                f": its {k.shared_size_bytes} bytes of static shared memory plus the dynamic "
                f"maximum may not exceed the device's {MAX_OPTIN_SMEM} bytes (227 KiB) per block")
        k.max_dynamic_shared_size_bytes = value

    @property
    def attributes(self):
        return {
            "max_threads_per_block": self.max_threads_per_block,
            "shared_size_bytes": self.shared_size_bytes,
            "const_size_bytes": 0,
            "local_size_bytes": 0,
            "num_regs": 0,
            "max_dynamic_shared_size_bytes": self.max_dynamic_shared_size_bytes,
            "ptx_version": 0,
            "binary_version": 0,
            "cache_mode_ca": 0,
            "preferred_shared_memory_carveout": -1,
        }

    # -- argument marshalling -------------------------------------------------
    def _arg_error(self, i, expected, got):
        k = self._k
        return TypeError(f"kernel {k.name!r}: argument {i} (C type '{k.type_names[i]}'): "
                         f"expected {expected}, got {got}")

    def _pack(self, args):
        k = self._k
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"kernel {k.name!r}: args must be a tuple, got {type(args).__name__}")
        n = len(k.codes)
        if len(args) != n:
            sig = ", ".join(k.type_names)
            raise TypeError(f"kernel {k.name!r} takes {n} argument(s) ({sig}), got {len(args)}")
        offsets, chunks, size = [], [], 0
        for i, (a, code, csize) in enumerate(zip(args, k.codes, k.sizes)):
            if code & T_POINTER:
                pointee = code & 0xFF
                if not isinstance(a, np.ndarray):
                    raise self._arg_error(i, "a device ndarray (emulator.empty/to_device)",
                                          _describe_value(a))
                if not _memory.is_device_array(a):
                    raise self._arg_error(
                        i, "a device ndarray (emulator.empty/to_device)", _describe_value(a) +
                        " that is not in emulator device memory")
                ok = _POINTEE_DTYPES.get(pointee)
                if ok is not None and a.dtype not in ok:
                    exp = " or ".join(str(d) for d in ok)
                    raise self._arg_error(i, f"a device array of dtype {exp}",
                                          _describe_value(a))
                b = struct.pack("<Q", a.ctypes.data)
            elif code in _SCALAR_DTYPES:
                dt = _SCALAR_DTYPES[code]
                if not isinstance(a, np.generic) or a.dtype != dt:
                    # size_t / unsigned long long parameters also take a
                    # non-negative numpy.int64 (as most host code computes sizes)
                    if not (code == T_U64 and isinstance(a, np.generic)
                            and a.dtype == np.int64 and a >= 0):
                        exp = (f"a numpy.{dt.type.__name__} scalar" if code != T_U64 else
                               "a numpy.uint64 (or non-negative numpy.int64) scalar")
                        raise self._arg_error(i, exp, _describe_value(a))
                b = a.tobytes()
            else:  # struct / vector type passed by value
                if isinstance(a, (bytes, bytearray, memoryview)):
                    b = bytes(a)
                elif isinstance(a, np.generic) or (isinstance(a, np.ndarray) and a.ndim == 0
                                                   and not _memory.is_device_array(a)):
                    b = a.tobytes()
                elif isinstance(a, (ctypes.Structure, ctypes.Union, ctypes.Array)):
                    b = bytes(a)
                else:
                    raise self._arg_error(i, f"{csize} bytes (bytes, ctypes.Structure or numpy "
                                          "structured scalar)", _describe_value(a))
                if len(b) != csize:
                    raise self._arg_error(i, f"a value of {csize} bytes",
                                          f"{len(b)} bytes ({_describe_value(a)})")
            offsets.append(size)
            chunks.append(b)
            size += (len(b) + 15) // 16 * 16 or 16
        blob = ctypes.create_string_buffer(b"".join(
            c + b"\0" * (((len(c) + 15) // 16 * 16 or 16) - len(c)) for c in chunks) or b"\0")
        base = ctypes.addressof(blob)
        ptrs = (ctypes.c_void_p * max(n, 1))(*[base + o for o in offsets])
        return blob, ptrs

    # -- launch ---------------------------------------------------------------
    def __call__(self, grid, block, args, *, shared_mem=0, stream=None,
                 enable_cooperative_groups=False):
        k = self._k
        g = _dim3(grid, "grid", k.name)
        b = _dim3(block, "block", k.name)
        nthreads = b[0] * b[1] * b[2]
        limit = self.max_threads_per_block
        if nthreads > limit:
            why = (f"its __launch_bounds__ ({limit})" if k.launch_bounds
                   else "the limit of 1024 threads per block")
            raise LaunchError(f"kernel {k.name!r}: block {b} has {nthreads} threads, more than "
                              f"{why}")
        if b[0] > 1024 or b[1] > 1024 or b[2] > 64:
            raise LaunchError(f"kernel {k.name!r}: block {b} exceeds the maximum block "
                              "dimensions (1024, 1024, 64)")
        if g[0] > 2 ** 31 - 1 or g[1] > 65535 or g[2] > 65535:
            raise LaunchError(f"kernel {k.name!r}: grid {g} exceeds the maximum grid "
                              "dimensions (2**31-1, 65535, 65535)")
        if not isinstance(shared_mem, (int, np.integer)) or shared_mem < 0:
            raise LaunchError(f"kernel {k.name!r}: shared_mem must be a non-negative int, "
                              f"got {shared_mem!r}")
        shared_mem = int(shared_mem)
        if shared_mem > k.max_dynamic_shared_size_bytes:
            static = k.shared_size_bytes
            raise LaunchError(
                f"kernel {k.name!r}: shared_mem={shared_mem} bytes of dynamic shared memory "
                f"exceeds the kernel's max_dynamic_shared_size_bytes "
                f"({k.max_dynamic_shared_size_bytes}); with its {static} bytes of static shared "
                f"memory that makes {static + shared_mem} bytes per block, more than "
                + (f"the {DEFAULT_SHARED_PER_BLOCK} (48 KiB) a block may use without opting in: "
                   f"set fn.max_dynamic_shared_size_bytes (at most {MAX_OPTIN_SMEM - static}) "
                   "before launching, as on a GPU (which fails such a launch with "
                   "CUDA_ERROR_INVALID_VALUE)"
                   if k.max_dynamic_shared_size_bytes == max(0, DEFAULT_SHARED_PER_BLOCK - static)
                   else "the kernel opted in to"))
        blob, ptrs = self._pack(args)
        rt = _build.runtime()
        recording = _counters.current()
        run = k
        if recording is not None:
            run = k.module.counting_twin().kernels[k.name]
        desc = _build.LaunchDesc()
        desc.tramp = run.tramp
        desc.args = ctypes.addressof(ptrs)
        desc.grid[:] = g
        desc.block[:] = b
        desc.dyn_smem = shared_mem
        desc.seed = _seed
        desc.kernel = k.name_bytes
        desc.timeout_s = _timeout or 0.0
        if recording is not None:
            desc.count = 1
            desc.sample_blocks = recording.sample_blocks or 0
        msg = ctypes.create_string_buffer(8192)
        with _launch_lock:
            # The TLS anchor must be taken in the OS thread that runs the launch.
            desc.tls_anchor = run.module.lib.pygpuemu_module_tls_anchor()
            rc = rt.pygpuemu_launch(ctypes.byref(desc), msg, len(msg))
            if recording is not None and not rc:
                recording.add(_counters.take(rt, run, g, b, shared_mem))
        del blob, args
        if rc:
            cls = _ERR_CLASSES.get(rc, EmulatorError)
            raise cls(msg.value.decode(errors="replace"))

    def __repr__(self):
        return f"<emulator.Function {self._k.name!r}>"


class RawKernel(Function):
    """Stand-in for ``cupy.RawKernel(code, name, options=...)``: a module with
    one kernel, callable directly."""

    def __init__(self, code, name, options=(), *, name_expressions=None, file_name=None,
                 **kwargs):
        exprs = list(name_expressions or ())
        if name not in exprs:
            exprs.append(name)
        self.module = RawModule(code=code, options=options, name_expressions=exprs,
                                name=file_name, **kwargs)
        super().__init__(self.module.get_function(name)._k)
