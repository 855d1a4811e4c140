"""Guarded "device" memory for the emulator.

Each buffer is its own mmap'd region: a PROT_NONE guard page, the data
(placed so that it ends as close to the next guard page as 256-byte
alignment allows), and a guard page after it.  Slack bytes between the
guard pages and the data hold a canary that is checked after every launch.
New buffers are filled with 0xFF bytes (a NaN pattern for float types), so
output a kernel forgot to write is visible.  The numpy arrays returned keep
the mapping alive through their ``base``; it is unmapped when the last array
using it goes away.
"""

import ctypes
import weakref

import numpy as np

from . import _build

__all__ = ["empty", "zeros", "to_device", "is_device_array", "live_buffer_count"]


class _DeviceAllocation:
    """Owner of one guarded mapping; exposes it as a 1-D uint8 array."""

    __slots__ = ("ptr", "nbytes", "desc", "__array_interface__", "_finalizer", "__weakref__")

    def __init__(self, nbytes, desc):
        rt = _build.runtime()
        ptr = rt.pygpuemu_alloc(nbytes, desc.encode())
        if not ptr:
            raise MemoryError(f"emulator: could not allocate {nbytes} bytes for {desc}")
        self.ptr = ptr
        self.nbytes = nbytes
        self.desc = desc
        self.__array_interface__ = {
            "shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 3,
        }
        self._finalizer = weakref.finalize(self, rt.pygpuemu_free, ptr)


def _describe(shape, dtype):
    return f"{dtype.name}[{', '.join(str(s) for s in shape)}]"


def _normalize_shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimensions are not allowed: {shape}")
    return shape


def empty(shape, dtype=np.float64):
    """A C-contiguous ndarray in guarded device memory, filled with 0xFF bytes."""
    shape = _normalize_shape(shape)
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError("device arrays cannot hold Python objects")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    alloc = _DeviceAllocation(nbytes, _describe(shape, dtype))
    raw = np.asarray(alloc)
    return raw.view(dtype).reshape(shape)


def zeros(shape, dtype=np.float64):
    """Like :func:`empty` but zero-filled."""
    a = empty(shape, dtype)
    ctypes.memset(a.ctypes.data, 0, a.nbytes)
    return a


def to_device(array):
    """C-contiguous copy of ``array`` in guarded device memory."""
    a = np.asarray(array)
    out = empty(a.shape, a.dtype)
    np.copyto(out, a, casting="no")
    return out


def _extent(a):
    """(lowest address, number of bytes) spanned by the elements of ``a``."""
    if a.size == 0:
        return a.ctypes.data, 0
    lo = hi = 0
    for n, s in zip(a.shape, a.strides):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    return a.ctypes.data + lo, hi - lo + a.itemsize


def is_device_array(a):
    """True for arrays created by :func:`empty` / :func:`to_device` and for
    views of them."""
    if not isinstance(a, np.ndarray):
        return False
    # By address, so that any view (even np.frombuffer of a device array) counts.
    start, n = _extent(a)
    return bool(_build.runtime().pygpuemu_is_device_ptr(start, n))


def live_buffer_count():
    """Number of device buffers currently mapped (for leak checks in tests)."""
    return int(_build.runtime().pygpuemu_live_buffers())
