"""A stand-in for the ``cupy`` module, backed by the emulator, so the CUDA backend's own code
(dispatch, CudaDevice, module memoization per device, launch checks, the op's device path) runs on
a machine without a GPU. Arrays are an ndarray subclass whose ``__module__`` is ``cupy``, living in
the emulator's guarded device memory."""
from __future__ import annotations

import types

import numpy as np

from pygpu_ops._runtime import emulator


class ndarray(np.ndarray):
    def get(self):
        return np.array(self)


ndarray.__module__ = "cupy"


def _wrap(x):
    return x.view(ndarray)


def make(device_count: int = 1):
    mod = types.ModuleType("cupy")
    mod.__version__ = "fake"
    mod.ndarray = ndarray
    state = {"device": 0, "modules_built": []}
    mod._state = state

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

    def RawModule(code, options=(), name_expressions=()):
        state["modules_built"].append((state["device"], tuple(name_expressions)))
        return emulator.RawModule(code=code, options=options, name_expressions=name_expressions)

    mod.RawModule = RawModule

    class Device:
        def __init__(self, i=None):
            self.id = state["device"] if i is None else i

    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: device_count,
        cudaDevAttrMaxSharedMemoryPerBlockOptin=97,
        deviceGetAttribute=lambda attr, dev: 227 * 1024,
    )
    mod.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)
    return mod
