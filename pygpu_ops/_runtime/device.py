"""The two kernel-running backends behind one interface: CUDA (CuPy) and the CPU emulator.

Op code is written once against `Device`: it allocates with `empty`, brings inputs in with
`asarray` / `contiguous`, and launches a registered `Kernel` with a `Launch` computed by the op's
single launch-configuration function. The emulator's `RawModule` stands in for CuPy's, so the
grid, shared memory and argument packing that run on the CPU are the ones the GPU gets.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import os
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from . import backends, cubin_cache, sources
from .kernels import Kernel, module_name_expressions

#: Shared memory (static + dynamic) a block may use without opting in (CUDA's default limit).
DEFAULT_DYNAMIC_SMEM = 48 * 1024


_PAD = ((1, 1, 1), (1, 1), (1,), ())


def _dims(d) -> Tuple[int, int, int]:
    t = tuple(map(int, d)) if isinstance(d, tuple) else (int(d),)
    return t + _PAD[len(t)]


@dataclass(frozen=True)
class Launch:
    """Grid, block and dynamic shared memory (bytes) of one kernel launch."""

    grid: Tuple[int, ...]
    block: Tuple[int, ...]
    shared_mem: int = 0


def extra_options() -> Tuple[str, ...]:
    """Options from the environment: ``PYGPU_OPS_LINEINFO=1`` adds ``-lineinfo`` (Nsight source view)."""
    return ("-lineinfo",) if os.environ.get("PYGPU_OPS_LINEINFO", "") not in ("", "0") else ()


class LoadedKernel:
    """A kernel's function on one device with the attributes the launch checks need, read once
    (each read is a driver call in CuPy). ``max_dynamic_smem`` follows what we set."""

    __slots__ = ("fn", "max_threads", "static_smem", "max_dynamic_smem")

    def __init__(self, fn) -> None:
        attrs = fn.attributes
        self.fn = fn
        self.max_threads = int(attrs["max_threads_per_block"])
        self.static_smem = int(attrs.get("shared_size_bytes", 0))
        self.max_dynamic_smem = int(attrs["max_dynamic_shared_size_bytes"])


class Device:
    """Base: module and function memoization per device, launch checks. Subclasses provide the
    module type and arrays.

    The first launch of a kernel on a device builds (or loads) its module, looks the function up
    and reads its attributes; later launches find all of that in ``_kernels`` and make no module,
    function or attribute call: a launch is the kernel call itself."""

    name = ""
    xp = np

    def __init__(self) -> None:
        self._modules: Dict[tuple, object] = {}
        self._kernels: Dict[tuple, LoadedKernel] = {}
        self._optin: Dict[int, int] = {}
        self._constants: "collections.OrderedDict[tuple, object]" = collections.OrderedDict()
        self._lock = threading.Lock()

    # -- modules ----------------------------------------------------------------------------
    def _device_id(self) -> int:
        return 0

    def _raw_module(self, code: str, options: Tuple[str, ...], names: Tuple[str, ...], label: str):
        raise NotImplementedError

    def loaded(self, kernel: Kernel, device: Optional[int] = None) -> LoadedKernel:
        """``kernel`` on ``device`` (default: the current one), memoized per (kernel, device,
        extra options)."""
        key = (kernel, self._device_id() if device is None else device, extra_options())
        k = self._kernels.get(key)
        if k is None:
            with self._lock:
                k = self._kernels.get(key)
                if k is None:
                    k = self._kernels[key] = LoadedKernel(self._module(kernel, key[1], key[2])
                                                          .get_function(kernel.name_expression))
        return k

    def _module(self, kernel: Kernel, device: int, extra: Tuple[str, ...]):
        opts = kernel.options(extra)
        key = (device, kernel.module_key, opts)
        mod = self._modules.get(key)
        if mod is None:
            names = module_name_expressions(kernel)
            mod = self._modules[key] = self._raw_module(sources.expand(kernel.source), opts, names,
                                                        kernel.source)
        return mod

    def function(self, kernel: Kernel):
        return self.loaded(kernel).fn

    def max_shared_optin(self, device: Optional[int] = None) -> int:
        """Shared memory one block may opt in to on ``device`` (default: the current one),
        memoized per device."""
        dev = self._device_id() if device is None else device
        limit = self._optin.get(dev)
        if limit is None:
            limit = self._optin[dev] = int(self._query_max_shared_optin(dev))
        return limit

    def _query_max_shared_optin(self, device: int) -> int:
        raise NotImplementedError

    # -- launch -----------------------------------------------------------------------------
    def launch(self, kernel: Kernel, launch: Launch, args: tuple) -> None:
        dev = self._device_id()
        k = self.loaded(kernel, dev)
        block = _dims(launch.block)
        threads = block[0] * block[1] * block[2]
        if threads > k.max_threads:
            raise ValueError(
                f"{kernel.name_expression}: block {launch.block} has {threads} threads, "
                f"more than the kernel's limit of {k.max_threads}"
            )
        smem = int(launch.shared_mem)
        if smem:
            # The 48 KiB a block may use without opting in count static + dynamic shared memory:
            # beyond them the launch fails (CUDA_ERROR_INVALID_VALUE) unless the kernel's
            # max_dynamic_shared_size_bytes was raised, to at most the device's opt-in limit
            # minus the static part.
            static = k.static_smem
            if static + smem > DEFAULT_DYNAMIC_SMEM:
                limit = self.max_shared_optin(dev)
                if static + smem > limit:
                    raise ValueError(
                        f"{kernel.name_expression}: {smem} bytes of dynamic + {static} static shared "
                        f"memory exceed the device's {limit} bytes per block"
                    )
                if k.max_dynamic_smem < smem:
                    k.fn.max_dynamic_shared_size_bytes = smem
                    k.max_dynamic_smem = smem
        grid = _dims(launch.grid)
        if grid[0] == 0 or grid[1] == 0 or grid[2] == 0:
            return
        k.fn(grid, block, args, shared_mem=smem)

    # -- arrays -----------------------------------------------------------------------------
    def empty(self, shape, dtype):
        raise NotImplementedError

    def asarray(self, x):
        """``x`` as an array this backend's kernels can read (any strides)."""
        raise NotImplementedError

    def view(self, x):
        """``x`` as an array of this backend's array module, sharing its memory (no copy)."""
        return x

    def contiguous(self, x):
        """A C-contiguous array of this backend holding ``x`` (``x`` itself when it already is)."""
        raise NotImplementedError

    def result(self, x):
        """What the caller gets back."""
        return x

    def addressable(self, x) -> bool:
        """Whether a kernel may be handed ``x``'s pointer as it is."""
        raise NotImplementedError

    def upload(self, host: np.ndarray):
        """A C-contiguous device copy of a NumPy array (0-d stays 0-d)."""
        raise NotImplementedError

    #: `constant` keeps this many small arrays per Device (least recently used dropped first).
    CONSTANT_ENTRIES = 128
    CONSTANT_MAX_BYTES = 64 * 1024

    def constant(self, host):
        """A device copy of a small read-only parameter array (scales, zero points, requantize
        multipliers), kept per device and content: a repeated call makes no host-to-device copy,
        which on a GPU is a synchronous cudaMemcpy and is refused while a CUDA graph is being
        captured. Kernels must only read what this returns. Arrays above ``CONSTANT_MAX_BYTES``
        are uploaded each time."""
        host = np.array(host, order="C")
        if host.nbytes > self.CONSTANT_MAX_BYTES:
            return self.upload(host)
        key = (self._device_id(), host.dtype.str, host.shape, host.tobytes())
        with self._lock:
            arr = self._constants.get(key)
            if arr is not None:
                self._constants.move_to_end(key)
                return arr
        arr = self.upload(host)
        with self._lock:
            self._constants[key] = arr
            while len(self._constants) > self.CONSTANT_ENTRIES:
                self._constants.popitem(last=False)
        return arr

    @staticmethod
    def rowmajor_layout(x):
        """``(usable, row stride, batch stride)`` in elements for a (rows, cols) or
        (batch, rows, cols) array that kernels walk row by row: usable when its columns are
        unit-stride and its row and batch strides are non-negative whole elements."""
        item = x.dtype.itemsize
        rows, cols = x.shape[-2:]
        sr, sc = x.strides[-2:]
        sb = x.strides[0] if x.ndim == 3 else 0
        ok = ((cols <= 1 or sc == item) and sr % item == 0 and sb % item == 0 and sr >= 0 and sb >= 0
              and (rows <= 1 or sr >= cols * item) and sr // item < 2**31)
        ld = sr // item if rows > 1 else max(cols, 1)
        return ok, ld, (sb // item if x.ndim == 3 and x.shape[0] > 1 else 0)

    def rowmajor(self, x):
        """``(x, row stride, batch stride)``: ``x`` itself when kernels can walk it row by row as
        it is (see `rowmajor_layout`), else a C-contiguous copy."""
        ok, ld, sb = self.rowmajor_layout(x)
        if not ok or not self.addressable(x):
            x = self.contiguous(x)
            _, ld, sb = self.rowmajor_layout(x)
        return x, ld, sb


class CudaDevice(Device):
    name = "cuda"

    def __init__(self) -> None:
        super().__init__()
        import cupy

        self.cupy = self.xp = cupy
        self._cc: Dict[int, Tuple[int, int]] = {}

    def compute_capability(self, device: Optional[int] = None) -> Tuple[int, int]:
        """(major, minor) of ``device`` (default: the current one), read once per device."""
        dev = self._device_id() if device is None else device
        cc = self._cc.get(dev)
        if cc is None:
            props = self.cupy.cuda.runtime.getDeviceProperties(dev)
            cc = self._cc[dev] = (int(props["major"]), int(props["minor"]))
        return cc

    def _device_id(self) -> int:
        # Inside an op, device_scope has made the arrays' GPU current and recorded its id.
        current = _CURRENT_GPU.get()
        return self.cupy.cuda.Device().id if current is None else current

    def _raw_module(self, code, options, names, label):
        return cubin_cache.load_module(self.cupy, code, options, names, label)

    def _query_max_shared_optin(self, device: int) -> int:
        rt = self.cupy.cuda.runtime
        return rt.deviceGetAttribute(rt.cudaDevAttrMaxSharedMemoryPerBlockOptin, device)

    def empty(self, shape, dtype):
        return self.cupy.empty(shape, dtype=dtype)

    def asarray(self, x):
        if isinstance(x, self.cupy.ndarray):
            return x
        if getattr(x, "__cuda_array_interface__", None) is not None:
            return self.cupy.asarray(x)  # zero-copy view of a CUDA tensor
        return self.cupy.from_dlpack(x)

    def view(self, x):
        return self.asarray(x)

    def contiguous(self, x):
        x = self.asarray(x)
        return x if x.flags.c_contiguous else self.cupy.ascontiguousarray(x)

    def addressable(self, x) -> bool:
        return isinstance(x, self.cupy.ndarray)

    def upload(self, host):
        return self.cupy.asarray(np.array(host, order="C"))


class EmulatorDevice(Device):
    name = "emulator"

    def __init__(self) -> None:
        super().__init__()
        from . import emulator

        self.emu = emulator

    def _raw_module(self, code, options, names, label):
        return self.emu.RawModule(code=code, options=options, name_expressions=names, name=label)

    def _query_max_shared_optin(self, device: int) -> int:
        return 227 * 1024

    def empty(self, shape, dtype):
        return self.emu.empty(shape, dtype)

    def asarray(self, x):
        if self.emu.is_device_array(x):
            return x
        x = np.asarray(x)
        # Only the data behind x goes to the device: dimensions x broadcasts (stride 0) stay
        # broadcast, as in a CuPy view of a broadcast array, so a huge broadcast view costs its data.
        bcast = tuple(n > 1 and s == 0 for n, s in zip(x.shape, x.strides))
        if not any(bcast):
            return self.emu.to_device(x)
        base = x[tuple(slice(0, 1) if b else slice(None) for b in bcast)]
        return np.broadcast_to(self.emu.to_device(base), x.shape)

    def contiguous(self, x):
        if self.emu.is_device_array(x) and x.flags.c_contiguous:
            return x
        return self.emu.to_device(np.ascontiguousarray(x))

    def result(self, x):
        # Hand back ordinary NumPy memory; the guarded buffer is released with its last view.
        return np.array(x, copy=True)

    def addressable(self, x) -> bool:
        return self.emu.is_device_array(x)

    def upload(self, host):
        return self.emu.to_device(np.array(host, order="C"))


_DEVICES = {"cuda": CudaDevice, "emulator": EmulatorDevice}


#: The GPU an op's device_scope made current (None outside one): saves a cudaGetDevice per launch.
_CURRENT_GPU: contextvars.ContextVar = contextvars.ContextVar("pygpu_ops_current_gpu", default=None)


class _OnGpu:
    """``with cupy.cuda.Device(gpu)``, recording ``gpu`` for `CudaDevice._device_id`."""

    __slots__ = ("device", "gpu", "token")

    def __init__(self, device, gpu: int) -> None:
        self.device, self.gpu = device, gpu

    def __enter__(self):
        self.device.__enter__()
        self.token = _CURRENT_GPU.set(self.gpu)
        return self.device

    def __exit__(self, *exc):
        _CURRENT_GPU.reset(self.token)
        return self.device.__exit__(*exc)


def _gpu_of(cupy, x) -> int:
    """The GPU holding ``x``: a CuPy array's device, a DLPack tensor's ``__dlpack_device__``
    (no conversion: an object that exposes only DLPack never meets ``cupy.asarray``), else the
    device of the ``__cuda_array_interface__`` view."""
    if isinstance(x, cupy.ndarray):
        return x.device.id
    dl = getattr(x, "__dlpack_device__", None)
    if callable(dl):
        return int(dl()[1])
    return get_device("cuda").asarray(x).device.id


def device_scope(op: str, backend: str, arrays: Dict[str, object]):
    """Context in which an op's device work runs: for ``cuda``, the GPU that holds its arrays
    (so arrays on a second device run there, with that device's modules), else nothing.
    Arrays on different GPUs are a ``ValueError`` naming them."""
    if backend != "cuda":
        return contextlib.nullcontext()
    cupy = get_device("cuda").cupy
    where = {name: _gpu_of(cupy, x) for name, x in arrays.items() if x is not None}
    ids = set(where.values())
    if len(ids) > 1:
        detail = ", ".join(f"{n!r} on GPU {i}" for n, i in where.items())
        raise ValueError(f"{op}: arrays on different devices ({detail}); move them to one GPU")
    if not ids:
        return contextlib.nullcontext()
    gpu = ids.pop()
    return _OnGpu(cupy.cuda.Device(gpu), gpu)


@functools.lru_cache(maxsize=None)
def get_device(name: str) -> Device:
    return _DEVICES[name]()


def to_host(x) -> np.ndarray:
    """A NumPy array of ``x``: a device-to-host copy of a GPU array (CuPy, or a CUDA tensor through
    CAI / DLPack), ``np.asarray(x)`` of anything on the host."""
    if backends.array_kind(x) == "cuda":
        return get_device("cuda").asarray(x).get()
    return np.asarray(x)
