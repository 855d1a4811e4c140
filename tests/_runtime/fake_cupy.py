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

    class Event:
        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: device_count,
        cudaDevAttrMaxSharedMemoryPerBlockOptin=97,
        cudaDevAttrL2CacheSize=38,
        deviceGetAttribute=lambda attr, dev: {97: 227 * 1024, 38: 1 << 16}[attr],
        getDeviceProperties=lambda dev: {"name": b"Fake GPU (emulator)", "major": 9, "minor": 0,
                                         "multiProcessorCount": 132, "clockRate": 1980000},
    )
    mod.cuda = types.SimpleNamespace(Device=Device, runtime=runtime, Event=Event,
                                     get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3)
    return mod
