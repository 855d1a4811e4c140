"""The NumPy fallback's thread pool: sizing, PYGPU_OPS_NUM_THREADS, chunk coverage, errors, and
the pool of one running inline on the caller's thread."""
import os
import threading

import numpy as np
import pytest

from pygpu_ops._runtime import native, npfast, threads


def test_default_size_is_the_affinity_mask(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    want = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert threads.default_threads() == want
    assert threads.num_threads() == want


@pytest.mark.parametrize("value, want", [("1", 1), ("3", 3), (" 7 ", 7), ("", None)])
def test_env_var_sets_the_size(monkeypatch, value, want):
    monkeypatch.setenv(threads.ENV_VAR, value)
    assert threads.num_threads() == (threads.default_threads() if want is None else want)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "0x4"])
def test_env_var_rejects_bad_values(monkeypatch, value):
    monkeypatch.setenv(threads.ENV_VAR, value)
    with pytest.raises(ValueError, match=threads.ENV_VAR) as info:
        threads.num_threads()
    assert repr(value) in str(info.value)
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        threads.parallel_for(3, lambda i: None)


@pytest.mark.parametrize("n_chunks, nthreads", [(0, 2), (1, 2), (2, 2), (7, 3), (100, 4), (5, 1)])
def test_every_chunk_runs_exactly_once(n_chunks, nthreads):
    seen = []
    lock = threading.Lock()

    def fn(i):
        with lock:
            seen.append(i)
    threads.parallel_for(n_chunks, fn, threads=nthreads)
    assert sorted(seen) == list(range(n_chunks))


def test_chunks_run_on_several_threads():
    # each chunk waits for all the others to start: only possible with 3 threads at once
    barrier = threading.Barrier(3, timeout=20)
    names = set()

    def fn(i):
        names.add(threading.current_thread().name)
        barrier.wait()
    threads.parallel_for(3, fn, threads=3)
    assert len(names) == 3


def test_pool_of_one_runs_inline_in_order(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "1")
    before = threading.active_count()
    order, who = [], set()

    def fn(i):
        order.append(i)
        who.add(threading.get_ident())
    threads.parallel_for(6, fn)
    assert order == list(range(6))
    assert who == {threading.get_ident()}
    assert threading.active_count() == before


def test_first_error_propagates_and_later_chunks_are_skipped():
    ran = []

    def fn(i):
        ran.append(i)
        if i == 1:
            raise KeyError("chunk 1")
    with pytest.raises(KeyError, match="chunk 1"):
        threads.parallel_for(50, fn, threads=2)
    assert len(ran) < 50


def test_error_with_a_pool_of_one(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "1")
    with pytest.raises(ZeroDivisionError):
        threads.parallel_for(3, lambda i: 1 // (i - 2))


def test_nested_parallel_for_runs_inline():
    out = np.zeros((4, 4), int)

    def outer(i):
        threads.parallel_for(4, lambda j: out.__setitem__((i, j), i * 4 + j), threads=2)
    threads.parallel_for(4, outer, threads=2)
    assert (out.ravel() == np.arange(16)).all()


def test_caller_errstate_holds_in_the_chunks():
    import warnings

    x = np.zeros(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(divide="ignore"):
            threads.parallel_for(4, lambda i: np.log(x), threads=2)
        with pytest.raises(FloatingPointError):
            with np.errstate(divide="raise"):
                threads.parallel_for(4, lambda i: np.log(x), threads=2)


def test_bad_threads_argument():
    with pytest.raises(ValueError, match="threads"):
        threads.parallel_for(2, lambda i: None, threads=0)


@pytest.mark.parametrize("total, min_chunk, nthreads, per", [(0, 1, 2, 1), (1, 1, 2, 1), (10, 1, 3, 1),
                                                             (10, 4, 8, 1), (1000, 7, 2, 8), (5, 10, 4, 2)])
def test_split_covers_the_range(total, min_chunk, nthreads, per):
    r = threads.split(total, min_chunk, threads=nthreads, per_thread=per)
    flat = [i for a, b in r for i in range(a, b)]
    assert flat == list(range(total))
    assert len(r) <= max(1, nthreads * per)
    if len(r) > 1:
        assert min(b - a for a, b in r) >= min_chunk
        assert max(b - a for a, b in r) - min(b - a for a, b in r) <= 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_select_is_bit_exact(dtype):
    uint = np.dtype(f"u{np.dtype(dtype).itemsize}")
    rng = np.random.default_rng(0)
    a = rng.standard_normal(1001).astype(dtype)
    b = rng.standard_normal(1001).astype(dtype)
    a[::7], b[::5] = -0.0, np.nan
    cond = rng.random(1001) < 0.5
    want = np.where(cond, a, b)
    got = npfast.select(cond, a, b, np.empty_like(a))
    assert (got.view(uint) == want.view(uint)).all()
    got = npfast.select(cond, dtype(-0.0), b, b.copy())
    assert (got.view(uint) == np.where(cond, dtype(-0.0), b).view(uint)).all()


@pytest.mark.parametrize("nthreads", ["1", "2", "3"])
def test_blocked_ops_match_the_plain_expressions(monkeypatch, nthreads):
    """The NumPy route (native loops off): same bits as the whole-array NumPy expressions,
    whatever the thread count; the sizes straddle the block and the parallel threshold. The
    native route is tests/_runtime/test_native.py."""
    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    monkeypatch.setenv(native.ENV_VAR, "0")
    rng = np.random.default_rng(1)
    for n in (1, 17, npfast.BLOCK_BYTES // 4 + 3, 3 * npfast.PARALLEL_MIN_BYTES // 4 + 5):
        x = (rng.standard_normal(n) * 30).astype(np.float32)
        x[::11] = -0.0
        with np.errstate(all="ignore"):
            assert np.array_equal(npfast.relu(x).view(np.uint32), np.where(x < 0, np.float32(0), x).view(np.uint32))
            want = np.where(x < 0, x * np.float32(0.2), x)
            assert np.array_equal(npfast.leaky_relu(x, np.float32(0.2)).view(np.uint32), want.view(np.uint32))
            e = np.exp(-np.abs(x))
            want = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
            assert np.array_equal(npfast.sigmoid(x), want)
            assert np.array_equal(npfast.clip(x, np.float32(-3), np.float32(2)), np.clip(x, -3, 2))
        rows = max(1, n // 64)
        x2 = x[:rows * 64].reshape(rows, 64) if n >= 64 else x.reshape(1, n)
        z = x2 - x2.max(axis=1, keepdims=True)
        assert np.array_equal(npfast.softmax_rows(x2, False), np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))
        assert np.array_equal(npfast.softmax_rows(x2, True), z - np.log(np.exp(z).sum(axis=1, keepdims=True)))


@pytest.mark.parametrize("qdtype, zp", [(np.int8, 0), (np.int8, -7), (np.uint8, 128), (np.int32, 2**31 - 70000)])
@pytest.mark.parametrize("nthreads", ["1", "2"])
def test_quantize_tensor_matches_the_plain_steps(monkeypatch, qdtype, zp, nthreads):
    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    tiny = np.float32(2.0 ** -126)
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(3 * npfast.PARALLEL_MIN_BYTES // 4 + 9) * 200).astype(np.float32)
    x[::13] = np.nan
    x[1::13] = np.inf
    x[2::13] = -np.inf
    x[3::13] = -0.0
    x[4::13] = tiny / 4          # denormals: flushed to zero before the division
    x[5::13] = -tiny / 3
    x[6::13] = 0.5 * 0.05        # a tie: rint rounds half to even
    # 8-bit: 0.05 and 4 * tiny take the five-pass float32 route, 2 * tiny the general one (there
    # a denormal's quotient can round to +-1, so the flush matters)
    scales = [tiny * 8] if qdtype == np.int32 else [np.float32(0.05), tiny * 4, tiny * 2]
    for scale in scales:
        with np.errstate(all="ignore"):
            xf = np.where(np.abs(x) < tiny, np.float32(0), x)
            r = np.rint(xf / scale)
            r = np.where(np.isnan(r), np.float32(0), r)
            r = np.clip(r, -65536, 65536).astype(np.int64) + zp
            info = np.iinfo(qdtype)
            want = np.clip(r, info.min, info.max).astype(qdtype)
            got = npfast.quantize_tensor(x, scale, zp, qdtype, tiny)
        assert got.dtype == qdtype and np.array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_without_the_maximum_shortcut(monkeypatch, dtype):
    """The path for a NumPy build whose maximum does not keep -0.0 / NaN payloads: same bits."""
    monkeypatch.setenv(native.ENV_VAR, "0")
    monkeypatch.setattr(npfast, "maximum_is_relu", lambda dt: False)
    uint = np.dtype(f"u{np.dtype(dtype).itemsize}")
    x = np.random.default_rng(3).standard_normal(3 * npfast.PARALLEL_MIN_BYTES // 4 + 1).astype(dtype)
    x[::7] = -0.0
    x[1::7] = np.nan
    want = np.where(x < 0, dtype(0), x)
    assert np.array_equal(npfast.relu(x).view(uint), want.view(uint))


@pytest.mark.parametrize("nthreads", ["1", "2", "3"])
def test_per_batch_joins_the_images_in_order(monkeypatch, nthreads):
    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    x = np.random.default_rng(4).standard_normal((5, 3, 96, 64))       # 720 KiB: over the threshold

    def fn(xb):
        return xb.max(axis=(2, 3)), None, (xb.sum(axis=1) > 0).astype(np.int64)
    got = npfast.per_batch(fn, x)
    want = fn(x)
    assert got[1] is None
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[2], want[2])
    assert np.array_equal(npfast.per_batch(lambda xb: xb * 2, x), x * 2)
    assert npfast.per_batch(lambda xb: xb[:, :0], x).shape == (5, 0, 96, 64)


@pytest.mark.parametrize("qdtype, zp", [(np.int8, 0), (np.int8, -128), (np.uint8, 255), (np.uint8, 3)])
@pytest.mark.parametrize("nthreads", ["1", "2"])
def test_dequantize_tensor_matches_the_int64_route(monkeypatch, qdtype, zp, nthreads):
    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    info = np.iinfo(qdtype)
    q = np.random.default_rng(5).integers(info.min, info.max + 1, 3 * npfast.PARALLEL_MIN_BYTES + 7).astype(qdtype)
    for scale in (np.float32(0.05), np.float32(3.1e38), np.float32(2.0 ** -126)):
        with np.errstate(over="ignore"):
            want = (q.astype(np.int64) - zp).astype(np.float32) * scale
            got = npfast.dequantize_tensor(q, scale, zp)
        assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_without_the_numpy_clip_shortcut(monkeypatch, dtype):
    """Both clip paths (numpy.clip where `clip_is_select` holds, two selects otherwise) give the
    select semantics bit for bit: -0.0 against a 0.0 bound keeps its sign, NaN its payload."""
    monkeypatch.setenv(native.ENV_VAR, "0")
    uint = np.dtype(f"u{np.dtype(dtype).itemsize}")
    x = np.random.default_rng(6).standard_normal(3 * npfast.PARALLEL_MIN_BYTES // 4 + 1).astype(dtype)
    x[::7] = -0.0
    x[1::7] = 0.0
    x[2::7] = np.nan
    for lo, hi in ((0.0, 1.0), (-1.0, -0.0), (0.5, -0.5)):
        lo, hi = dtype(lo), dtype(hi)
        r = np.where(x < lo, lo, x)
        want = np.where(r > hi, hi, r)
        assert np.array_equal(npfast.clip(x, lo, hi).view(uint), want.view(uint))
        with monkeypatch.context() as m:
            m.setattr(npfast, "clip_is_select", lambda dt: False)
            assert np.array_equal(npfast.clip(x, lo, hi).view(uint), want.view(uint))
