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

    def RawModule(code, options=(), name_expressions=()):
        state["modules_built"].append((state["device"], tuple(name_expressions)))
        return emulator.RawModule(code=code, options=options, name_expressions=name_expressions)

    mod.RawModule = RawModule

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
    _install_streams(mod)
    return mod


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
