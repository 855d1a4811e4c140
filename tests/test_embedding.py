"""embedding / gather on every backend against a reference written here with Python loops over the
ids (no numpy.take, which the numpy backend uses), compared bit for bit: a gather moves bits."""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops as po
from conftest import Arrays
from pygpu_ops import indexing as emb
from pygpu_ops._runtime.device import get_device


def ref_gather(data, ids, axis=0):
    """out[a..., i..., b...] = data[a..., wrap(ids[i...]), b...], one row at a time."""
    data, ids = np.asarray(data), np.asarray(ids)
    n = data.shape[axis]
    moved = np.moveaxis(data, axis, 0)                     # (n, a..., b...)
    out = np.empty(ids.shape + moved.shape[1:], data.dtype)
    for pos in np.ndindex(*ids.shape):
        i = int(ids[pos])
        out[pos] = moved[i + n if i < 0 else i]
    # (i..., a..., b...) -> (a..., i..., b...)
    k = ids.ndim
    return np.moveaxis(out, list(range(k)), list(range(axis, axis + k))) if axis else out


def bits(x):
    """The raw bytes of ``x`` as unsigned ints of its size, so NaN payloads and -0.0 compare."""
    x = np.ascontiguousarray(x)
    return x.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64, 16: np.uint64}[x.dtype.itemsize])


def assert_same(got, want):
    got = np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    np.testing.assert_array_equal(bits(got), bits(want))


def table_of(vocab, d, dtype, seed=0):
    """Distinct values per element plus NaN with a payload and -0.0, which a copy must keep."""
    t = np.random.default_rng(seed).standard_normal((vocab, d)).astype(dtype)
    if t.size >= 2 and dtype in (np.float32, np.float64):
        flat = t.reshape(-1)
        flat[0] = -0.0
        flat[1] = np.frombuffer(np.array([0x7FF0000000000123 if dtype == np.float64 else 0x7FC00123],
                                         np.uint64 if dtype == np.float64 else np.uint32).tobytes(), dtype)[0]
    return t


def ids_of(shape, vocab, dtype, seed=1):
    """Ids over the whole valid range, negatives included (and both ends when there is room)."""
    ids = np.random.default_rng(seed).integers(-vocab, vocab, size=shape).astype(dtype)
    if ids.size >= 2:
        ids.reshape(-1)[:2] = (vocab - 1, -vocab)
    return ids


ID_SHAPES = [(), (0,), (7,), (2, 3, 4)]
ROW_LENGTHS = [1, 3, 4, 5, 1024]


@pytest.mark.parametrize("ids_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", ROW_LENGTHS)
@pytest.mark.parametrize("ids_shape", ID_SHAPES, ids=str)
def test_embedding_shapes(backend, to, ids_shape, d, dtype, ids_dtype):
    vocab = 11
    table = table_of(vocab, d, dtype, seed=d)
    ids = ids_of(ids_shape, vocab, ids_dtype, seed=d + len(ids_shape))
    got = to.host(po.embedding(to(ids), to(table), backend=backend))
    assert_same(got, ref_gather(table, ids))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("ids_shape", [(), (5,), (2, 3)], ids=str)
def test_gather_axes(backend, to, axis, ids_shape):
    data = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6) * 1.5 - 7
    n = data.shape[axis]
    ids = ids_of(ids_shape, n, np.int64, seed=axis + 7)
    got = to.host(po.gather(to(data), to(ids), axis, backend=backend))
    assert_same(got, ref_gather(data, ids, axis % 3))


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.float16, np.uint16, np.int32, np.int64, np.uint64,
                                   np.complex64, np.complex128])
def test_gather_moves_bits_of_any_dtype(backend, to, dtype):
    raw = np.random.default_rng(3).integers(0, 256, size=(6, 3, 5, np.dtype(dtype).itemsize), dtype=np.uint8)
    data = raw.view(dtype).reshape(6, 3, 5)
    for ids, axis in ((np.array([[2, -3], [0, 2]], np.int32), 1), (np.array([[5, -6], [0, 2]], np.int32), 0)):
        assert_same(to.host(po.gather(to(data), to(ids), axis, backend=backend)), ref_gather(data, ids, axis))


def test_chunk_bytes():
    assert emb.chunk_bytes(2048, 0, 4096) == 16
    assert emb.chunk_bytes(12, 0, 64) == 4          # 3 float32
    assert emb.chunk_bytes(24, 0, 64) == 8          # 6 float32
    assert emb.chunk_bytes(40, 0, 64) == 8          # 5 float64
    assert emb.chunk_bytes(16, 4, 64) == 4          # 4 float32 at an address 4 bytes past 16
    assert emb.chunk_bytes(6, 0, 0) == 2            # 3 float16
    assert emb.chunk_bytes(3, 0, 0) == 1
    assert emb.chunk_bytes(0, 8, 16) == 8           # empty rows: any chunk the addresses allow


def _launched(monkeypatch, backend):
    """Record the name of every kernel ``backend``'s device launches."""
    dev = get_device(backend)
    names = []
    real = dev.launch

    def spy(kernel, launch, args):
        names.append(kernel.name_expression)
        return real(kernel, launch, args)

    monkeypatch.setattr(dev, "launch", spy)
    return names


@pytest.mark.parametrize("d, dtype, chunk", [(1024, np.float32, "uint4"), (4, np.float32, "uint4"),
                                             (2, np.float64, "uint4"), (6, np.float32, "uint2"),
                                             (5, np.float64, "uint2"), (3, np.float32, "unsigned int"),
                                             (1, np.float32, "unsigned int"), (3, np.float16, "unsigned short")])
def test_vector_path_where_rows_allow(device_backend, monkeypatch, d, dtype, chunk):
    """Rows whose byte length is a multiple of 16 (fresh, aligned buffers) go as 128-bit vectors."""
    to = Arrays(device_backend)
    names = _launched(monkeypatch, device_backend)
    table = table_of(9, d, dtype)
    ids = np.array([[8, 0, -1]], np.int64)
    got = to.host(po.embedding(to(ids), to(table), backend=device_backend))
    assert names == [f"gather_rows<{chunk}, long long>"]
    assert_same(got, ref_gather(table, ids))


def _device_view(backend, to, host, offset):
    """A C-contiguous device array holding ``host`` whose first element sits ``offset`` elements
    past the start of its allocation (so a 16-byte-aligned allocation gives a 4-byte-aligned view)."""
    flat = np.concatenate([np.zeros(offset, host.dtype), host.reshape(-1)])
    if backend == "emulator":
        from pygpu_ops._runtime import emulator

        dev = emulator.to_device(flat)
    else:
        dev = to(flat)
    return dev[offset:].reshape(host.shape)


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_unaligned_table(device_backend, monkeypatch, offset):
    """A table view that starts off a 16-byte boundary still gives the right rows, in smaller chunks."""
    to = Arrays(device_backend)
    table = table_of(13, 1024, np.float32, seed=offset)
    view = _device_view(device_backend, to, table, offset)
    names = _launched(monkeypatch, device_backend)
    ids = ids_of((3, 5), 13, np.int64)
    got = to.host(po.embedding(to(ids), view, backend=device_backend))
    assert names == [f"gather_rows<{'uint2' if offset == 2 else 'unsigned int'}, long long>"]
    assert_same(got, ref_gather(table, ids))


def test_unaligned_ids(device_backend):
    to = Arrays(device_backend)
    ids = ids_of((9,), 7, np.int32)
    view = _device_view(device_backend, to, ids, 1)
    table = table_of(7, 8, np.float32)
    assert_same(to.host(po.embedding(view, to(table), backend=device_backend)), ref_gather(table, ids))


def test_strided_inputs(backend, to):
    """Non-contiguous table and ids (a column slice, a transpose) give the same rows."""
    big = table_of(10, 12, np.float64)
    table = big[:, ::3]
    ids = ids_of((4, 3), 10, np.int64).T
    got = to.host(po.embedding(to(np.ascontiguousarray(ids.T)).T, to(big)[:, ::3], backend=backend))
    assert_same(got, ref_gather(np.ascontiguousarray(table), ids))


def test_grid_strides(device_backend, monkeypatch):
    """Capped grids (one block along each axis) still cover every chunk, id and outer slice."""
    to = Arrays(device_backend)
    monkeypatch.setattr(emb, "_MAX_GRID_X", 1)
    monkeypatch.setattr(emb, "_MAX_GRID_YZ", 1)
    data = np.random.default_rng(0).standard_normal((3, 5, 2048)).astype(np.float32)   # 512 uint4 per row
    ids = ids_of((300,), 5, np.int64)        # more ids than one block's 1 row
    got = to.host(po.gather(to(data), to(ids), 1, backend=device_backend))
    assert_same(got, ref_gather(data, ids, 1))


# ---------------------------------------------------------------------------------------------
# Out of range: a ValueError naming the argument, the first bad value and its position
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ids_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("bad", ["vocab", "below", "huge", "min"])
def test_ids_out_of_range(backend, to, ids_dtype, bad):
    vocab = 6
    value = {"vocab": vocab, "below": -vocab - 1, "huge": np.iinfo(ids_dtype).max,
             "min": np.iinfo(ids_dtype).min}[bad]
    ids = ids_of((2, 3, 4), vocab, ids_dtype)
    ids[1, 2, 0] = value
    ids[1, 2, 3] = vocab + 5            # a later bad id: the first in C order is the one reported
    table = table_of(vocab, 4, np.float32)
    with pytest.raises(ValueError, match=rf"^embedding: ids holds {value} at position \(1, 2, 0\), out of range "
                                         rf"for axis 0 of size 6 \(valid: -6 to 5"):
        po.embedding(to(ids), to(table), backend=backend)


def test_gather_out_of_range_names_indices(backend, to):
    data = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"^gather: indices holds -4 at position \(1,\), out of range for axis 1 "
                                         r"of size 3"):
        po.gather(to(data), to(np.array([2, -4, 1], np.int64)), 1, backend=backend)
    with pytest.raises(ValueError, match=r"^gather: indices holds 3 at position \(\), out of range"):
        po.gather(to(data), to(np.array(3, np.int32)), 1, backend=backend)


def test_empty_axes(backend, to):
    """An empty vocabulary has no valid id; an empty id array is fine; rows of zero elements and an
    empty outer part still have their ids checked."""
    empty_vocab = np.zeros((0, 4), np.float32)
    got = to.host(po.embedding(to(np.zeros((2, 0), np.int64)), to(empty_vocab), backend=backend))
    assert got.shape == (2, 0, 4) and got.dtype == np.float32
    with pytest.raises(ValueError, match=r"embedding: ids holds 0 at position \(0,\), out of range for axis 0 of "
                                         r"size 0 \(valid: none: the axis is empty"):
        po.embedding(to(np.array([0], np.int64)), to(empty_vocab), backend=backend)
    zero_rows = np.zeros((5, 0), np.float64)
    got = to.host(po.embedding(to(np.array([4, -5], np.int64)), to(zero_rows), backend=backend))
    assert got.shape == (2, 0)
    with pytest.raises(ValueError, match=r"embedding: ids holds 5 at position \(1,\)"):
        po.embedding(to(np.array([4, 5], np.int64)), to(zero_rows), backend=backend)
    no_outer = np.zeros((0, 5), np.float32)
    got = to.host(po.gather(to(no_outer), to(np.array([4, -1], np.int64)), 1, backend=backend))
    assert got.shape == (0, 2)
    with pytest.raises(ValueError, match=r"gather: indices holds 7 at position \(1,\)"):
        po.gather(to(no_outer), to(np.array([1, 7], np.int64)), 1, backend=backend)


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ids_dtype", [np.float32, np.int16, np.uint32, np.bool_])
def test_ids_dtype_refused(backend, to, ids_dtype):
    with pytest.raises(TypeError, match=rf"embedding: ids has dtype {np.dtype(ids_dtype)}; expected int32 or int64"):
        po.embedding(to(np.zeros(3, ids_dtype)), to(np.zeros((4, 2), np.float32)), backend=backend)


def test_bad_arguments(host_backend):
    b = host_backend
    ids = np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match=r"embedding: table must be 2-D \(vocab, dim\); got shape \(4,\)"):
        po.embedding(ids, np.zeros(4, np.float32), backend=b)
    with pytest.raises(ValueError, match=r"embedding: table must be 2-D \(vocab, dim\); got shape \(4, 2, 2\)"):
        po.embedding(ids, np.zeros((4, 2, 2), np.float32), backend=b)
    with pytest.raises(TypeError, match=r"embedding: table has dtype object"):
        po.embedding(ids, np.zeros((4, 2), object), backend=b)
    with pytest.raises(TypeError, match=r"embedding: argument 'ids' must be a numpy.ndarray.*numpy.asarray"):
        po.embedding([0, 1], np.zeros((4, 2), np.float32), backend=b)
    with pytest.raises(ValueError, match=r"gather: data must have at least 1 dimension"):
        po.gather(np.ones((), np.float32), ids, backend=b)
    with pytest.raises(ValueError, match=r"gather: axis must be between -2 and 1 for data of shape \(3, 4\); got 2"):
        po.gather(np.zeros((3, 4)), ids, 2, backend=b)
    with pytest.raises(TypeError, match=r"gather: axis must be an int; got bool"):
        po.gather(np.zeros((3, 4)), ids, True, backend=b)
    with pytest.raises(TypeError, match=r"gather: data has dtype <U1"):
        po.gather(np.array(["a", "b"]), ids, backend=b)


# ---------------------------------------------------------------------------------------------
# Against PyTorch
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_embedding(host_backend, dtype):
    torch = pytest.importorskip("torch")
    table = table_of(50, 24, dtype, seed=4)
    ids = np.random.default_rng(5).integers(0, 50, size=(3, 7)).astype(np.int64)   # torch refuses negatives
    want = torch.nn.functional.embedding(torch.from_numpy(ids), torch.from_numpy(table)).numpy()
    assert_same(po.embedding(ids, table, backend=host_backend), want)


@pytest.mark.parametrize("nthreads", ["1", "2", "3"])
@pytest.mark.parametrize("ids_dtype", [np.int32, np.int64])
def test_large_results_split_over_the_threads(monkeypatch, nthreads, ids_dtype):
    """Results over npfast.PARALLEL_MIN_BYTES take the rows in pieces on the thread pool: the same
    rows as numpy.take, negative ids counted from the end, and a bad id still named by its
    first position."""
    from pygpu_ops._runtime import npfast, threads

    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    rng = np.random.default_rng(7)
    table = rng.standard_normal((1000, 96)).astype(np.float32)
    n = npfast.PARALLEL_MIN_BYTES // (96 * 4) * 3 + 5
    ids = rng.integers(-1000, 1000, (n // 5, 5)).astype(ids_dtype)
    got = po.embedding(ids, table, backend="numpy")
    assert got.shape == (n // 5, 5, 96) and got.flags.c_contiguous
    assert np.array_equal(got, table[ids])
    got = po.gather(table.T.copy().T, ids.reshape(-1), 0, backend="numpy")     # a Fortran-order table
    assert np.array_equal(got, table[ids.reshape(-1)])
    bad = ids.copy()
    bad.reshape(-1)[[4000, 4050]] = [1000, -1001]
    with pytest.raises(ValueError, match=r"^embedding: ids holds 1000 at position \(800, 0\), out of range"):
        po.embedding(bad, table, backend="numpy")


@pytest.mark.parametrize("ids_dtype", [np.int32, np.int64])
def test_rows_of_any_byte_order_are_copied_as_they_are(ids_dtype):
    """The host loop copies row bytes: a big-endian table comes back big-endian, values intact."""
    table = np.arange(60, dtype=">f4").reshape(20, 3)
    ids = np.array([[3, -1], [19, 0]], dtype=ids_dtype)
    got = po.embedding(ids, table, backend="numpy")
    assert got.dtype == table.dtype and np.array_equal(got, table[ids])
