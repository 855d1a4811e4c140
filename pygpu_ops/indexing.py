"""Token embedding and ONNX Gather: ``embedding(ids, table)`` and ``gather(data, indices, axis)``.

One kernel, ``cuda_src/embedding/gather_rows.cu``. ``gather`` views ``data`` as
(outer, dim, inner), with ``dim`` the gathered axis, and copies one row of ``inner`` elements per
(outer slice, index): ``out[o, j, :] = data[o, indices[j], :]``. ``embedding`` is the case
``axis=0`` of a 2-D (vocab, d) table (outer = 1). The result has shape
``data.shape[:axis] + indices.shape + data.shape[axis + 1:]`` and the dtype of ``data``.

Copies move bits: ``data`` may have any boolean / integer / floating / complex dtype (NaN payloads
and ``-0.0`` survive). The kernel copies a row in the widest chunk (16, 8, 4, 2 or 1 bytes; see
`chunk_bytes`) that divides the row's byte length and to which the device pointers of ``data`` and
the output are aligned, so a (32000, 512) float32 table moves 128-bit vectors; a row of 3 float32
goes as 4-byte words. One instantiation per (chunk, index dtype).

Index semantics are ONNX's: int32 or int64 ``indices`` of any shape (0-d, empty, N-d), and a
negative index counts from the end (``-1`` is the last row), so ``-dim <= i < dim`` is valid.
``torch.nn.functional.embedding`` refuses negative ids (an IndexError on CPU); here they wrap. An
index outside the range is a ``ValueError`` naming the argument (``ids`` / ``indices``), the value
and its position, on every backend, and nothing out of bounds is read. On the NumPy backend
``numpy.take(mode="raise")`` checks in the same pass, and its IndexError is rebuilt with the first
bad position; on the emulator and the GPU the kernel skips such a row and records the smallest bad
position in a device word (``atomicMin``), which the launcher reads back after the kernel and turns
into the same error (the first bad position in C order, as on NumPy).
That read-back is a device-to-host copy, so on CUDA each call synchronizes with the GPU.

Limits: ``data`` is made C-contiguous first (one copy for a strided view); ``padding_idx``,
``max_norm`` and the sparse gradient of PyTorch's embedding are not provided (inference only).
"""
from __future__ import annotations

import numpy as np

from ._runtime import backends, native, validate
from ._runtime.device import Launch, device_scope, get_device, to_host
from ._runtime.kernels import Kernel, ceil_div, register
from ._runtime.nvtx import op_range

_SOURCE = "embedding/gather_rows.cu"
#: Chunk size in bytes -> the C type the kernel copies a row in.
_CHUNK = {16: "uint4", 8: "uint2", 4: "unsigned int", 2: "unsigned short", 1: "unsigned char"}
_INDEX = {np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}

GATHER_ROWS = {(c, dt): register(Kernel(source=_SOURCE, symbol="gather_rows", template_args=(ct, it), no_spill=True))
               for c, ct in _CHUNK.items() for dt, it in _INDEX.items()}

#: Kernel variant label (NVTX ranges, benchmarks).
VARIANT = "gather_rows"

#: The device word's value when every index was in range (the kernel lowers it with atomicMin).
_NO_BAD = np.uint64(2**64 - 1)
_BLOCK = 256
_MAX_GRID_X = 1 << 16
_MAX_GRID_YZ = 65535
#: dtype kinds whose elements are plain bits (bool, ints, unsigned, floats, complex).
_BITS_KINDS = "biufc"


def chunk_bytes(row_bytes: int, *addresses: int) -> int:
    """The widest copy unit (16, 8, 4, 2 or 1 bytes) that divides ``row_bytes`` and every address:
    then each row of the table and of the output starts on a chunk boundary."""
    for c in _CHUNK:
        if row_bytes % c == 0 and all(a % c == 0 for a in addresses):
            return c
    return 1


def launch_config(outer: int, n_ids: int, row_chunks: int) -> Launch:
    """The one place gather_rows is configured: ``bx`` threads (the power of two >= row_chunks, at
    most 256) along a row, ``256 / bx`` ids per block; grid (chunks, ids, outer slices), each axis
    capped (the kernel strides over the rest). At least one block along every axis, so the ids are
    checked even when there is nothing to copy (outer == 0 or empty rows)."""
    bx = min(_BLOCK, 1 << max(0, int(row_chunks) - 1).bit_length())
    by = _BLOCK // bx
    return Launch(grid=(max(1, min(ceil_div(row_chunks, bx), _MAX_GRID_X)),
                        max(1, min(ceil_div(n_ids, by), _MAX_GRID_YZ)), max(1, min(outer, _MAX_GRID_YZ))),
                  block=(bx, by))


def _address(x) -> int:
    """The device address of ``x``'s first element (CuPy: ``data.ptr``; emulator: host memory)."""
    data = getattr(x, "data", None)
    ptr = getattr(data, "ptr", None)
    return int(ptr) if ptr is not None else int(x.ctypes.data)


def _range_error(op: str, name: str, ids_shape, pos: int, value: int, dim: int, axis: int) -> ValueError:
    where = np.unravel_index(pos, ids_shape) if ids_shape else ()
    valid = f"{-dim} to {dim - 1}" if dim else "none: the axis is empty"
    return ValueError(f"{op}: {name} holds {value} at position {tuple(int(i) for i in where)}, out of range for "
                      f"axis {axis} of size {dim} (valid: {valid}; negative values count from the end)")


def _check_on_host(op: str, name: str, ids: np.ndarray, dim: int, axis: int) -> None:
    bad = (ids < -dim) | (ids >= dim)
    if bad.any():
        pos = int(np.argmax(bad.reshape(-1)))
        raise _range_error(op, name, ids.shape, pos, int(ids.reshape(-1)[pos]), dim, axis)


def _gather(op: str, data, ids, axis, names, backend: str, table_2d: bool = False):
    data_name, ids_name = names
    name = backends.resolve(op, backend, {data_name: data, ids_name: ids})
    if table_2d:
        validate.check_ndim(op, data_name, data, 2, "(vocab, dim)")
    dtype = validate.dtype_of(data)
    if dtype.kind not in _BITS_KINDS:
        raise TypeError(f"{op}: {data_name} has dtype {dtype}; expected a boolean, integer, floating or complex dtype")
    idt = validate.dtype_of(ids)
    if idt not in _INDEX:
        raise TypeError(f"{op}: {ids_name} has dtype {idt}; expected int32 or int64 (integer indices)")
    rank = len(data.shape)
    if rank == 0:
        raise ValueError(f"{op}: {data_name} must have at least 1 dimension; got a 0-d array")
    axis = validate.check_int(op, "axis", axis)
    if not -rank <= axis < rank:
        raise ValueError(f"{op}: axis must be between {-rank} and {rank - 1} for {data_name} of shape "
                         f"{tuple(data.shape)}; got {axis}")
    axis %= rank
    shape = tuple(int(d) for d in data.shape)
    ids_shape = tuple(int(d) for d in ids.shape)
    outer, dim = int(np.prod(shape[:axis], dtype=np.int64)), shape[axis]
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    out_shape = shape[:axis] + ids_shape + shape[axis + 1:]
    label = "numpy" if name == "numpy" else f"{op}_{VARIANT}"
    with op_range(op, label), device_scope(op, name, {data_name: data, ids_name: ids}):
        if name == "numpy":
            ids = np.asarray(ids)
            if outer * inner == 0:
                # an empty result: numpy.take may check nothing (it skips an empty outer part)
                _check_on_host(op, ids_name, ids, dim, axis)
            lib = native.lib() if axis == 0 and not dtype.hasobject else None
            if lib is not None:
                return _take_rows_native(op, ids_name, np.asarray(data), ids, out_shape, axis, lib)
            try:
                # mode="raise" takes -dim <= i < dim, ONNX's range, so the ids are checked in the
                # same pass; np.asarray: a 0-d take of a 1-D array is a NumPy scalar.
                return np.asarray(np.take(np.asarray(data), ids, axis=axis, mode="raise"), order="C")
            except IndexError:
                _check_on_host(op, ids_name, ids, dim, axis)
                raise
        dev = get_device(name)
        out = dev.empty(out_shape, dtype)
        n_ids = int(np.prod(ids_shape, dtype=np.int64))
        if n_ids == 0:
            return dev.result(out)
        src = dev.contiguous(data)
        idx = dev.contiguous(ids).reshape(-1)
        row_bytes = inner * dtype.itemsize
        chunk = chunk_bytes(row_bytes, _address(src), _address(out))
        row_chunks = row_bytes // chunk
        bad = dev.upload(np.array([_NO_BAD]))
        # reads n_ids indices and outer * n_ids * row_bytes table bytes; writes as many
        dev.launch(GATHER_ROWS[(chunk, idt)], launch_config(outer, n_ids, row_chunks),
                   (src.reshape(-1).view(np.uint8), idx, out.reshape(-1).view(np.uint8), np.int64(outer),
                    np.int64(n_ids), np.int64(dim), np.int64(row_chunks), bad))
        first = int(to_host(bad)[0])
        if first != int(_NO_BAD):
            value = int(to_host(idx[first:first + 1])[0])
            raise _range_error(op, ids_name, ids_shape, first, value, dim, axis)
        return dev.result(out)


def _take_rows_native(op, ids_name, data, ids, out_shape, axis, lib):
    """Rows of data (axis 0) by cpu_src/gather.cpp: the ids checked first (nothing is copied when
    one is out of range; the error names the first), then one memcpy per row, the ids split over
    the loop's threads."""
    data = np.ascontiguousarray(data)
    flat = np.ascontiguousarray(ids).reshape(-1)       # int32 or int64, native order (_gather checked)
    out = np.empty(out_shape, data.dtype)
    row_bytes = data[:1].nbytes if data.shape[0] else int(np.prod(data.shape[1:], dtype=np.int64)) * data.itemsize
    fn = lib.gather_rows_i64 if flat.dtype == np.int64 else lib.gather_rows_i32
    bad = fn(native.ptr(data), native.ptr(flat), flat.size, data.shape[0], row_bytes, native.ptr(out),
             native.threads_for(out.nbytes))
    if bad >= 0:
        _check_on_host(op, ids_name, ids, data.shape[0], axis)     # raises, naming the first bad id
    return out


def gather(data, indices, axis=0, *, backend="auto"):
    """ONNX Gather: ``numpy.take(data, indices, axis)`` with ONNX's index rules (module docstring).

    ``data``: any shape of rank >= 1, any boolean / integer / floating / complex dtype.
    ``indices``: int32 or int64, any shape; ``-n <= i < n`` for the axis size ``n``, negative values
    counting from the end; anything else is a ``ValueError`` naming ``indices``.
    Returns ``data.shape[:axis] + indices.shape + data.shape[axis + 1:]``, the dtype of ``data``.
    """
    return _gather("gather", data, indices, axis, ("data", "indices"), backend)


def embedding(ids, table, *, backend="auto"):
    """Token embedding: ``table[ids]``, one row of the (vocab, d) ``table`` per id.

    As ``torch.nn.functional.embedding(ids, table)`` (same argument order), except that a negative id
    counts from the end of the vocabulary (ONNX Gather's rule) where PyTorch refuses it. ``ids``:
    int32 or int64 of any shape; an id outside ``-vocab <= id < vocab`` is a ``ValueError`` naming
    ``ids``. ``table``: 2-D, any boolean / integer / floating / complex dtype. Returns
    ``ids.shape + (d,)`` with the table's dtype.
    """
    return _gather("embedding", table, ids, 0, ("table", "ids"), backend, table_2d=True)
