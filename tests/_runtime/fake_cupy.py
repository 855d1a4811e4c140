"""A stand-in for the ``cupy`` module, backed by the emulator, so the CUDA backend's own code
(dispatch, CudaDevice, module memoization per device, launch checks, the op's device path) runs on
a machine without a GPU. Arrays are an ndarray subclass whose ``__module__`` is ``cupy``, living in
the emulator's guarded device memory."""
from __future__ import annotations

import time
import types

import numpy as np

from pygpu_ops._runtime import emulator


class ndarray(np.ndarray):
    """Device memory of the fake; ``device`` is the GPU it was made on (views inherit it)."""

    _dev = 0
    _module = None

    def __array_finalize__(self, obj):
        if isinstance(obj, ndarray):
            self._dev, self._module = obj._dev, obj._module

    @property
    def device(self):
        return self._module.cuda.Device(self._dev)

    def get(self):
        _refuse_during_capture(self._module, "ndarray.get")
        return np.array(self)

    # CuPy runs an assignment, a fill or an in-place add as a kernel on the current stream, so a
    # capture records it; here too, so a graph replay sees writes in launch order (the recurrent
    # layers add b_hh into the projection bias in place before the GEMM reads it). Other array
    # arithmetic still runs at once: a replay that depends on it gives wrong numbers, which a test
    # notices.
    def __setitem__(self, key, value):
        _ordered(self._module, np.ndarray.__setitem__, self, key, value)

    def fill(self, value):
        _ordered(self._module, np.ndarray.fill, self, value)

    def __iadd__(self, other):
        _ordered(self._module, np.ndarray.__iadd__, self, other)
        return self


ndarray.__module__ = "cupy"
_current = {}


def _wrap(x):
    arr = x.view(ndarray)
    mod = _current["module"]
    arr._dev, arr._module = mod._state["device"], mod
    return arr


def make(device_count: int = 1):
    mod = types.ModuleType("cupy")
    mod.__version__ = "fake"
    mod.ndarray = ndarray
    state = {"device": 0, "modules_built": [], "entered": []}
    mod._state = state
    _current["module"] = mod

    mod.empty = lambda shape, dtype=np.float64: _wrap(emulator.empty(shape, dtype))

    def asarray(x):
        return x if isinstance(x, ndarray) else _wrap(emulator.to_device(np.asarray(x)))

    def ascontiguousarray(x):
        x = asarray(x)
        return x if x.flags.c_contiguous else _wrap(emulator.to_device(np.ascontiguousarray(x)))

    mod.asarray = asarray
    mod.ascontiguousarray = ascontiguousarray
    mod.from_dlpack = asarray
    mod.broadcast_to = lambda x, shape: np.broadcast_to(x, shape, subok=True)
    mod.asnumpy = lambda x: np.array(x)
    # Enough of the rest of CuPy for the benchmark's GPU path (timings here mean nothing).
    mod.ones = lambda shape, dtype=np.float64: _wrap(emulator.to_device(np.ones(shape, dtype)))
    mod.empty_like = lambda x: mod.empty(x.shape, x.dtype)
    mod.copyto = np.copyto
    mod.matmul = lambda a, b, out=None: np.matmul(a, b, out=out)
    mod.abs, mod.max, mod.exp = np.abs, np.max, np.exp

    class Device:
        def __init__(self, i=None):
            self.id = state["device"] if i is None else i

        def synchronize(self):
            pass

        def __enter__(self):
            self._prev = state["device"]
            state["device"] = self.id
            state["entered"].append(self.id)
            return self

        def __exit__(self, *exc):
            state["device"] = self._prev

    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: device_count,
        cudaDevAttrMaxSharedMemoryPerBlockOptin=97,
        cudaDevAttrL2CacheSize=38,
        deviceGetAttribute=lambda attr, dev: {97: 227 * 1024, 38: 1 << 16}[attr],
        getDeviceProperties=lambda dev: {"name": b"Fake GPU (emulator)", "major": 9, "minor": 0,
                                         "multiProcessorCount": 132, "clockRate": 1980000},
    )
    mod.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)
    _install_dlpack(mod, state)
    _install_compiler(mod, state)
    _install_call_log(mod, state)
    _install_streams(mod)
    return mod


# ---------------------------------------------------------------------------------------------
# Compiling and loading modules: RawModule(code=...) / RawModule(path=...), and the CuPy
# internals pygpu_ops' cubin cache compiles with (cupy._core.core.assemble_cupy_compiler_options,
# cupy.cuda.compiler: _get_arch, _get_arch_for_options_for_nvrtc, _get_nvrtc_version,
# compile_using_nvrtc). The fake NVRTC's "cubin" is a small text file holding the source,
# options and name expressions; RawModule(path=...) reads it back and builds the emulator
# module from it, exposing the kernels under their fake lowered names only (as a real cubin
# has only mangled symbols). state["nvrtc"] (version) and state["arch"] can be changed by tests.
# ---------------------------------------------------------------------------------------------
FAKE_CUBIN_MAGIC = b"FAKE-CUBIN 1\n"


def lowered_name(expression: str) -> str:
    """The fake NVRTC's lowered (mangled) name of a name expression."""
    import hashlib

    return "_Z_fake_" + hashlib.sha1(expression.encode()).hexdigest()[:16]


def _install_compiler(mod, state):
    import json

    state.setdefault("modules_built", [])
    state["nvrtc"] = (12, 9)
    state["arch"] = "90"
    state["nvrtc_compiles"] = []    # (options, name_expressions) of each fake NVRTC compile
    state["path_loads"] = []        # paths given to RawModule(path=...)
    state["code_modules"] = []      # name_expressions of each RawModule(code=...)

    class Function:
        """A kernel of a fake module: the emulator's Function, with every attribute read, set
        and launch logged to state["calls"] (CuPy's RawKernel reads attributes from the driver
        each time)."""

        def __init__(self, fn, name):
            self._fn, self._name = fn, name

        def __call__(self, grid, block, args, **kw):
            state["calls"].append("launch")
            if state.get("noop_launch"):
                return None
            return self._fn(grid, block, args, **kw)

        @property
        def attributes(self):
            state["calls"].append("Function.attributes")
            return self._fn.attributes

        @property
        def max_threads_per_block(self):
            state["calls"].append("Function.max_threads_per_block")
            return self._fn.max_threads_per_block

        @property
        def max_dynamic_shared_size_bytes(self):
            state["calls"].append("Function.max_dynamic_shared_size_bytes")
            return self._fn.max_dynamic_shared_size_bytes

        @max_dynamic_shared_size_bytes.setter
        def max_dynamic_shared_size_bytes(self, value):
            state["calls"].append("Function.max_dynamic_shared_size_bytes=")
            self._fn.max_dynamic_shared_size_bytes = value

    class RawModule:
        def __init__(self, *, code=None, path=None, options=(), name_expressions=None, **kw):
            state["calls"].append("RawModule")
            if (code is None) == (path is None):
                raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
            if path is not None:
                if name_expressions is not None:
                    raise ValueError("need CUDA C++ code for the requested kernels")
                state["path_loads"].append(str(path))
                with open(path, "rb") as f:
                    blob = f.read()
                if not blob.startswith(FAKE_CUBIN_MAGIC):
                    raise RuntimeError(f"CUDA_ERROR_INVALID_IMAGE: {path} is not a (fake) cubin")
                meta = json.loads(blob[len(FAKE_CUBIN_MAGIC):].decode())
                code, options, names = meta["code"], tuple(meta["options"]), tuple(meta["names"])
                self._names = {lowered_name(n): n for n in names}
            else:
                names = tuple(name_expressions or ())
                state["code_modules"].append(names)
                self._names = {n: n for n in names}
            state["modules_built"].append((state["device"], names))
            # The emulator gets the package's own options (-std=, -D, -U), not what CuPy adds.
            # Built on the first get_function, as CuPy compiles or loads lazily.
            defines = tuple(o for o in options if o.startswith(("-D", "-U", "-std=")))
            self._build = lambda: emulator.RawModule(code=code, options=defines, name_expressions=names)
            self._mod = None

        def get_function(self, name):
            state["calls"].append("RawModule.get_function")
            if name not in self._names:
                raise KeyError(f"fake module has no kernel {name!r} (a path-loaded module knows "
                               f"only lowered names)")
            if self._mod is None:
                self._mod = self._build()
            return Function(self._mod.get_function(self._names[name]), name)

    mod.RawModule = RawModule

    def assemble_cupy_compiler_options(options):
        opts = tuple(options)
        if not any("-std=c++" in o for o in opts):
            opts += ("--std=c++17",)
        return opts + ("-I/fake/cupy/include",)

    def compile_using_nvrtc(source, options=(), arch=None, filename="kern.cu", name_expressions=None,
                            log_stream=None, cache_in_memory=False, jitify=False):
        arch_opt, method = compiler._get_arch_for_options_for_nvrtc(arch)
        options = tuple(options) + (arch_opt, "--device-as-default-execution-space")
        names = tuple(name_expressions or ())
        state["nvrtc_compiles"].append((options, names))
        blob = FAKE_CUBIN_MAGIC + json.dumps({"code": source, "options": list(options),
                                              "names": list(names)}).encode()
        return blob, {n: lowered_name(n) for n in names}

    compiler = types.SimpleNamespace(
        _get_nvrtc_version=lambda: state["nvrtc"],
        _get_arch=lambda: state["arch"],
        _get_arch_for_options_for_nvrtc=lambda arch=None: (f"-arch=sm_{arch or state['arch']}", "cubin"),
        compile_using_nvrtc=compile_using_nvrtc,
    )
    mod.cuda.compiler = compiler
    mod._core = types.SimpleNamespace(core=types.SimpleNamespace(
        assemble_cupy_compiler_options=assemble_cupy_compiler_options))


# ---------------------------------------------------------------------------------------------
# The call log: every call the package makes into the fake's API (module functions, cuda.*,
# runtime.*, RawModule, a kernel's attributes and launches) appends its name to state["calls"].
# A Device made with an id is a plain object (no CUDA call in CuPy); Device() asks the driver
# for the current device, and entering one switches the device: those two are logged.
# ---------------------------------------------------------------------------------------------
def _install_call_log(mod, state):
    calls = state.setdefault("calls", [])

    def logged(name, f):
        def call(*args, **kwargs):
            calls.append(name)
            return f(*args, **kwargs)

        return call

    for name in ("empty", "asarray", "ascontiguousarray", "from_dlpack", "broadcast_to", "asnumpy",
                 "ones", "empty_like", "copyto", "matmul"):
        setattr(mod, name, logged(name, getattr(mod, name)))
    rt = mod.cuda.runtime
    rt.getDevice = lambda: state["device"]
    for name, f in list(vars(rt).items()):
        if callable(f):
            setattr(rt, name, logged(f"runtime.{name}", f))

    base = mod.cuda.Device

    class Device(base):
        def __init__(self, i=None):
            if i is None:
                calls.append("cuda.Device()")
            super().__init__(i)

        def __enter__(self):
            calls.append("cuda.Device.__enter__")
            return super().__enter__()

    mod.cuda.Device = Device


# ---------------------------------------------------------------------------------------------
# DLPack: cupy.from_dlpack takes any object with __dlpack__/__dlpack_device__ on a CUDA device;
# cupy.asarray does not (CuPy's asarray knows CuPy arrays, __cuda_array_interface__ and host
# data; anything else becomes a NumPy object array, which CuPy refuses).
# ---------------------------------------------------------------------------------------------
class DLPackOnly:
    """A GPU tensor that exposes only DLPack (like a JAX array): shape, dtype, ``__dlpack__``
    and ``__dlpack_device__`` reporting CUDA, no ``__cuda_array_interface__``, no buffer."""

    def __init__(self, arr):
        self._arr = arr
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __dlpack__(self, stream=None, **kwargs):
        return _Capsule(self._arr)

    def __dlpack_device__(self):
        return (2, int(self._arr._dev))  # kDLCUDA


class _Capsule:
    def __init__(self, arr):
        self.arr = arr


def _install_dlpack(mod, state):
    plain_asarray = mod.asarray

    def asarray(x):
        if not isinstance(x, (np.ndarray, list, tuple, int, float, complex, np.generic)):
            raise ValueError(f"Unsupported dtype object (cupy.asarray of {type(x).__name__})")
        return plain_asarray(x)

    def from_dlpack(x):
        if isinstance(x, ndarray):
            return x
        dev = getattr(x, "__dlpack_device__", None)
        if dev is None or dev()[0] not in (2, 13):
            raise TypeError(f"from_dlpack: {type(x).__name__} is not a CUDA DLPack tensor")
        return x.__dlpack__().arr

    mod.asarray = asarray
    mod.from_dlpack = from_dlpack


# -- streams, events and CUDA graphs (what the benchmark's timer uses) ----------------------------
# Launches go to the current stream (``with stream:``). While a stream captures, kernel launches
# and the stream-ordered library calls (matmul, copyto) are recorded instead of run, and
# ``Graph.launch`` replays them. As in CuPy, a device-to-host or host-to-device copy during a
# capture raises RuntimeError (the capture stays valid); a device, stream or event synchronize
# raises and invalidates the capture, so ``end_capture`` raises too (cudaErrorStreamCaptureInvalidated).
class _Stream:
    _next_ptr = [16]

    def __init__(self, mod, null=False, non_blocking=False, ptds=False, priority=0):
        self._mod = mod
        if null:
            self.ptr = 0
        else:
            self.ptr = _Stream._next_ptr[0]
            _Stream._next_ptr[0] += 16
        self.non_blocking = non_blocking
        self._captured = None       # the calls recorded while capturing, else None
        self._invalidated = None    # why the capture was invalidated

    def __enter__(self):
        self._mod._state["streams"].append(self)
        return self

    def __exit__(self, *exc):
        self._mod._state["streams"].pop()

    def use(self):
        self._mod._state["streams"][:] = [self]
        return self

    def synchronize(self):
        _invalidating_sync(self._mod, "cudaStreamSynchronize")

    def record(self, event=None):
        event = event if event is not None else self._mod.cuda.Event()
        event.record(self)
        return event

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if self._captured is not None:
            raise RuntimeError("cudaErrorIllegalState: the stream is already capturing")
        self._captured, self._invalidated = [], None
        self._mod._state["captures"] += 1

    def end_capture(self):
        if self._captured is None:
            raise RuntimeError("cudaErrorIllegalState: the stream is not capturing")
        calls, why = self._captured, self._invalidated
        self._captured = self._invalidated = None
        if why is not None:
            raise RuntimeError(f"cudaErrorStreamCaptureInvalidated: {why}")
        return _Graph(self._mod, calls)

    def is_capturing(self):
        return self._captured is not None


class _Graph:
    def __init__(self, mod, calls):
        self._mod, self._calls = mod, calls

    def launch(self, stream=None):
        self._mod._state["graph_launches"] += 1
        for call in self._calls:
            call()

    def upload(self, stream=None):
        pass


class _Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def _current_stream(mod):
    streams = mod._state["streams"]
    return streams[-1] if streams else mod._state["null_stream"]


def _refuse_during_capture(mod, what):
    if mod is not None and _current_stream(mod).is_capturing():
        raise RuntimeError(f"{what}: the current stream is capturing, so synchronous API calls are disallowed")


def _invalidating_sync(mod, what):
    capturing = [s for s in mod._state["all_streams"] if s.is_capturing()]
    for s in capturing:
        s._invalidated = f"{what} during the capture"
    if capturing:
        raise RuntimeError(f"cudaErrorStreamCaptureUnsupported: {what}: operation not permitted when stream is capturing")


def _ordered(mod, fn, *args):
    """``fn(*args)`` now, or recorded when ``mod``'s current stream captures."""
    stream = _current_stream(mod) if mod is not None and "streams" in mod._state else None
    if stream is not None and stream.is_capturing():
        stream._captured.append(lambda: fn(*args))
    else:
        fn(*args)


def _stream_ordered(mod, fn):
    """``fn`` runs now, or is recorded when the current stream captures."""
    def call(*args, **kwargs):
        stream = _current_stream(mod)
        if stream.is_capturing():
            stream._captured.append(lambda: fn(*args, **kwargs))
            return None
        return fn(*args, **kwargs)

    return call


class _CapturingFunction:
    """A kernel of the emulator's RawModule whose launches go through the current stream."""

    def __init__(self, mod, fn):
        object.__setattr__(self, "_mod", mod)
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_launch", _stream_ordered(mod, self._run))

    def _run(self, *args, **kwargs):
        self._mod._state["kernels_run"] += 1     # counted when it runs (at a replay if captured)
        return self._fn(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._launch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._fn, name)

    def __setattr__(self, name, value):
        setattr(self._fn, name, value)


class _CapturingModule:
    def __init__(self, mod, inner):
        self._mod, self._inner = mod, inner

    def get_function(self, name):
        return _CapturingFunction(self._mod, self._inner.get_function(name))

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _install_streams(mod):
    state = mod._state
    state.update(streams=[], captures=0, graph_launches=0, kernels_run=0, all_streams=[])
    state["null_stream"] = _Stream(mod, null=True)

    def Stream(null=False, non_blocking=False, ptds=False, priority=0):
        s = _Stream(mod, null=null, non_blocking=non_blocking, ptds=ptds, priority=priority)
        state["all_streams"].append(s)
        return s

    class Device(mod.cuda.Device):
        def synchronize(self):
            _invalidating_sync(mod, "cudaDeviceSynchronize")
            super().synchronize()

    raw_module = mod.RawModule
    mod.RawModule = lambda *args, **kwargs: _CapturingModule(mod, raw_module(*args, **kwargs))
    ordered_matmul = _stream_ordered(mod, mod.matmul)

    def matmul(a, b, out=None):
        if out is None and _current_stream(mod).is_capturing():
            shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
            out = mod.empty(shape, np.result_type(a, b))   # allocated now, written at each replay
        result = ordered_matmul(a, b, out=out)
        return out if result is None else result

    mod.matmul = matmul
    mod.copyto = _stream_ordered(mod, mod.copyto)
    host_asarray = mod.asarray

    def asarray(x):
        if not isinstance(x, ndarray):
            _refuse_during_capture(mod, "a host-to-device copy (cupy.asarray)")
        return host_asarray(x)

    mod.asarray = asarray
    asnumpy = mod.asnumpy

    def checked_asnumpy(x):
        _refuse_during_capture(mod, "cupy.asnumpy")
        return asnumpy(x)

    mod.asnumpy = checked_asnumpy
    mod.cuda.Device = Device
    mod.cuda.Stream = Stream
    mod.cuda.Event = _Event
    mod.cuda.Graph = _Graph
    mod.cuda.get_current_stream = lambda device_id=-1: _current_stream(mod)
    mod.cuda.get_elapsed_time = lambda start, end: (end.t - start.t) * 1e3
