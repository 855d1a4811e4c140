"""The numpy backend's native loops (cpu_src/, pygpu_ops/_runtime/native.py): the same bits as
the NumPy route where the op is exact, within the stated bounds where it rounds an exp, and a
clean fallback to NumPy where they cannot be built."""
import os

import numpy as np
import pytest

from pygpu_ops import relu, leaky_relu, sigmoid, clip, softmax, log_softmax
from pygpu_ops._runtime import native, npfast, threads

pytestmark = pytest.mark.skipif(native.lib() is None, reason=f"native loops unavailable: {native.problem()}")

LENGTHS = [1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 129, 257]


def _run(fn, x):
    y = np.empty_like(x)
    fn(native.ptr(x), native.ptr(y), x.size)
    return y


def _ulps(got, want64):
    """|got - want| in units of the float32 spacing at want (the denormal spacing below 2**-126)."""
    want32 = want64.astype(np.float32)
    return np.abs(got.astype(np.float64) - want64) / np.spacing(np.abs(want32)).astype(np.float64)


def test_exp_within_one_ulp():
    lib = native.lib()
    # every 1021st float32 bit pattern from -104 to 89: both signs, all binades, denormal results
    pos = np.arange(0, np.float32(89).view(np.uint32), 1021, dtype=np.uint32).view(np.float32)
    neg = -np.arange(0, np.float32(104).view(np.uint32), 1021, dtype=np.uint32).view(np.float32)
    x = np.concatenate([pos, neg, np.float32([88.72283, 88.72284, -87.33655, -103.27893, -103.97208])])
    got = _run(lib.exp_f32, x)
    want = np.exp(x.astype(np.float64))
    small = want < 2.0 ** -126        # a denormal (or zero) result: one rounding at the denormal spacing
    assert _ulps(got[~small & (want < 3.4e38)], want[~small & (want < 3.4e38)]).max() <= 1.0
    assert np.abs(got[small] - want[small]).max() <= 2.0 ** -149
    assert np.isinf(got[want > np.finfo(np.float32).max * (1 + 2 ** -25)]).all()
    special = np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30])
    assert np.array_equal(_run(lib.exp_f32, special), np.float32([np.nan, np.inf, 0, 1, 1, np.inf, 0]),
                          equal_nan=True)


def _specials(dtype):
    return npfast._specials(np.dtype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_ops_give_the_numpy_routes_bits(monkeypatch, dtype):
    """relu, leaky_relu and clip: each special value (-0.0, NaN payloads, infinities, denormals)
    in every lane of the vector loop and the scalar tail, at four alignments."""
    uint = np.dtype(f"u{np.dtype(dtype).itemsize}")
    ops = [lambda x: npfast.relu(x), lambda x: npfast.leaky_relu(x, dtype(0.2)),
           lambda x: npfast.leaky_relu(x, dtype(-np.inf))]
    ops += [lambda x, lo=lo, hi=hi: npfast.clip(x, dtype(lo), dtype(hi)) for lo, hi in npfast._CLIP_BOUNDS]
    for e in _specials(dtype):
        buf = np.concatenate([np.full(300, e), np.linspace(-3, 3, 300, dtype=dtype)])
        for op in ops:
            with np.errstate(all="ignore"):
                got = op(buf)
                with monkeypatch.context() as m:
                    m.setenv(native.ENV_VAR, "0")
                    want = op(buf)
                    assert native.lib() is None
            assert np.array_equal(got.view(uint), want.view(uint))
            for off in range(4):
                for n in LENGTHS:
                    with np.errstate(all="ignore"):
                        part = op(buf[off:off + n])
                    assert np.array_equal(part.view(uint), want[off:off + n].view(uint))


@pytest.mark.parametrize("nthreads", ["1", "2", "3"])
def test_pieces_per_thread_cover_the_array(monkeypatch, nthreads):
    """Over the parallel threshold the array is cut into one piece per thread; every element is
    computed once, in place."""
    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    n = 3 * npfast.PARALLEL_MIN_BYTES // 4 + 5
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    x[::9] = -0.0
    assert np.array_equal(relu(x, backend="numpy").view(np.uint32), np.where(x < 0, np.float32(0), x).view(np.uint32))
    assert np.array_equal(clip(x, -0.5, 0.5, backend="numpy"), np.clip(x, np.float32(-0.5), np.float32(0.5)))
    y = sigmoid(x, backend="numpy")
    assert _ulps(y, 1 / (1 + np.exp(-x.astype(np.float64)))).max() <= 3
    x2 = x[: (n // 100) * 100].reshape(-1, 100)
    z = x2.astype(np.float64) - x2.max(axis=1, keepdims=True)
    want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax(x2, backend="numpy"), want, rtol=2e-6, atol=0)
    np.testing.assert_allclose(log_softmax(x2, backend="numpy"), np.log(want), rtol=0, atol=2e-6)


def test_sigmoid_within_three_ulps():
    x = np.concatenate([np.linspace(-110, 110, 400_001, dtype=np.float32), _specials(np.float32)])
    got = sigmoid(x, backend="numpy")
    with np.errstate(over="ignore"):
        want = 1 / (1 + np.exp(-x.astype(np.float64)))
    fin = np.isfinite(x)
    assert _ulps(got[fin], want[fin]).max() <= 3
    assert np.array_equal(got[~fin], want[~fin].astype(np.float32), equal_nan=True)
    assert got[x == 0].tolist() == [0.5] * int((x == 0).sum())


@pytest.mark.parametrize("L", [1, 2, 15, 16, 17, 33, 1000])
def test_softmax_rows_edge_cases_as_the_numpy_route(monkeypatch, L):
    """NaN, +-inf and all -inf rows: the same NaN pattern and zeros as the NumPy route, the
    finite values within a few float32 ulps of it."""
    rng = np.random.default_rng(L)
    x = rng.standard_normal((8, L)).astype(np.float32) * 20
    x[1, L // 2] = np.nan
    x[2, :] = -np.inf
    x[3, L // 3] = np.inf
    x[4, ::2] = -np.inf
    x[5, :] = 1e30
    x[6, 0] = -1e30
    for op in (softmax, log_softmax):
        with np.errstate(all="ignore"):
            got = op(x, backend="numpy")
            monkeypatch.setenv(native.ENV_VAR, "0")
            want = op(x, backend="numpy")
            monkeypatch.delenv(native.ENV_VAR)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert np.array_equal(np.isinf(got), np.isinf(want)) and np.array_equal(got == 0, want == 0)
        ok = np.isfinite(want) & (want != 0)
        np.testing.assert_allclose(got[ok], want[ok], rtol=4e-6, atol=4e-6 if op is log_softmax else 0)


def test_off_switch_and_a_failed_build_fall_back_to_numpy(monkeypatch, tmp_path):
    monkeypatch.setenv(native.ENV_VAR, "0")
    assert native.lib() is None and native.problem() == f"{native.ENV_VAR}=0"
    monkeypatch.delenv(native.ENV_VAR)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("PYGPU_OPS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PYGPU_OPS_EMU_CXX", str(tmp_path / "no-such-compiler"))
    assert native.lib() is None
    assert "no-such-compiler" in native.problem()
    x = np.float32([-1.0, 2.0, np.nan])
    assert np.array_equal(relu(x, backend="numpy"), np.float32([0, 2, np.nan]), equal_nan=True)
    assert leaky_relu(x, 0.5, backend="numpy")[0] == -0.5


def _both_routes(monkeypatch, fn):
    got = fn()
    with monkeypatch.context() as m:
        m.setenv(native.ENV_VAR, "0")
        want = fn()
    return got, want


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_pools_give_the_numpy_routes_bits(monkeypatch, seed, layout):
    """Random window geometry (asymmetric pads, dilation, ceil_mode, count_include_pad), channel
    counts around the 16-channel vector, and NaN / inf / -0.0 / ties in the data. (NCHW: avg
    only is native; max is checked too, on the NumPy route both times.)"""
    from pygpu_ops import avg_pool2d, max_pool2d

    rng = np.random.default_rng(seed)
    N, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
    C = int(rng.choice([1, 3, 16, 63, 64, 65, 130]))
    x = rng.integers(-3, 4, (N, H, W, C)).astype(np.float32)      # small integers: many ties
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    flat = x.reshape(-1)
    for v, step in ((np.nan, 17), (np.inf, 23), (-np.inf, 29), (-0.0, 5)):
        flat[int(rng.integers(0, 7))::step] = v
    k = (int(rng.integers(1, min(H, 4) + 1)), int(rng.integers(1, min(W, 4) + 1)))
    s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    pads = tuple((int(rng.integers(0, k[i] // 2 + 1)), int(rng.integers(0, k[i] // 2 + 1))) for i in range(2))
    ceil = bool(rng.integers(0, 2))
    def same(got, want):     # bit for bit; a NaN's sign and payload (inf + -inf) are not compared
        return ((got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))).all()
    for cip in (True, False):
        with np.errstate(invalid="ignore"):
            got, want = _both_routes(monkeypatch, lambda: avg_pool2d(
                x, k, s, pads, ceil_mode=ceil, count_include_pad=cip, layout=layout, backend="numpy"))
        assert same(got, want), (k, s, pads, ceil, cip)
    sym = (pads[0][0], pads[1][0])
    d = tuple(2 if 2 * (k[i] - 1) + 1 <= (H, W)[i] + 2 * sym[i] and rng.integers(0, 2) else 1 for i in range(2))
    if all(sym[i] <= (d[i] * (k[i] - 1) + 1) // 2 for i in range(2)):
        got, want = _both_routes(monkeypatch, lambda: max_pool2d(
            x, k, s, sym, d, ceil_mode=ceil, layout=layout, backend="numpy"))
        assert same(got, want), (k, s, sym, d, ceil)


@pytest.mark.parametrize("nthreads", ["1", "2", "3"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32, np.int64])
def test_layout_transposes_move_every_element(monkeypatch, nthreads, dtype):
    """nchw_to_nhwc / nhwc_to_nchw through cpu_src/transpose.cpp: tile edges (sizes around 16),
    a result large enough to be split over the threads, and a non-contiguous input."""
    from pygpu_ops import nchw_to_nhwc, nhwc_to_nchw

    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    rng = np.random.default_rng(3)
    shapes = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 17, 4, 4), (3, 16, 1, 33), (2, 15, 17, 1)]
    shapes.append((2, 40, 96, npfast.PARALLEL_MIN_BYTES // (40 * 96 * np.dtype(dtype).itemsize) + 3))
    for shape in shapes:
        x = rng.integers(0, 120, shape).astype(dtype)
        assert np.array_equal(nchw_to_nhwc(x, backend="numpy"), x.transpose(0, 2, 3, 1))
        assert np.array_equal(nhwc_to_nchw(x, backend="numpy"), x.transpose(0, 3, 1, 2))
    x = rng.integers(0, 120, (2, 8, 9, 20)).astype(dtype)[:, ::2, :, 1:]
    got = nchw_to_nhwc(x, backend="numpy")
    assert got.flags.c_contiguous and np.array_equal(got, x.transpose(0, 2, 3, 1))


def test_a_forked_child_runs_the_loops_on_one_thread():
    """libgomp's team does not survive fork: a child entering a parallel region hangs. After a
    fork the loops get one thread (`native.threads_for`), so the child finishes."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import os, numpy as np
        from pygpu_ops import relu
        from pygpu_ops._runtime import native
        x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
        assert native.threads_for(x.nbytes) == 2
        relu(x, backend="numpy")                       # the parent's team exists now
        pid = os.fork()
        if pid == 0:
            ok = native.threads_for(x.nbytes) == 1 and (relu(x, backend="numpy") == np.maximum(x, 0)).all()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
    """)
    env = dict(os.environ, PYGPU_OPS_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=120, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_tanh_within_three_ulps():
    lib = native.lib()
    x = np.concatenate([np.linspace(-20, 20, 400_001, dtype=np.float32),
                        (np.float32(10) ** np.linspace(-30, 1, 20_000)).astype(np.float32)])
    x = np.concatenate([x, -x])
    got = _run(lib.tanh_f32, x)
    assert _ulps(got, np.tanh(x.astype(np.float64))).max() <= 3
    special = np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0])
    out = _run(lib.tanh_f32, special)
    assert np.isnan(out[0]) and out[1:3].tolist() == [1, -1] and np.signbit(out[4]) and not np.signbit(out[3])


@pytest.mark.parametrize("kw", [{}, {"bidirectional": True}, {"batch_first": True},
                                {"lengths": np.array([5, 1, 3])}])
def test_lstm_layer_native_cell_against_the_numpy_cell(monkeypatch, kw):
    """The fused native cell against the NumPy cell with the loops off (the transposed step
    layout is the same in both; tests/test_recurrent.py checks the layer against a float64 loop
    and PyTorch)."""
    from pygpu_ops import lstm

    rng = np.random.default_rng(9)
    S, B, E, H = 5, 3, 7, 19
    D = 2 if kw.get("bidirectional") else 1
    x = rng.standard_normal((B, S, E) if kw.get("batch_first") else (S, B, E)).astype(np.float32)
    w = [(rng.standard_normal((D, 4 * H, n)) * 0.4).astype(np.float32) for n in (E, H)]
    b = [(rng.standard_normal((D, 4 * H)) * 0.2).astype(np.float32) for _ in range(2)]
    args = (x, w[0][0] if D == 1 else w[0], w[1][0] if D == 1 else w[1], b[0][0] if D == 1 else b[0],
            b[1][0] if D == 1 else b[1])
    got = lstm(*args, backend="numpy", **kw)
    monkeypatch.setenv(native.ENV_VAR, "0")
    want = lstm(*args, backend="numpy", **kw)
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=0, atol=2e-6)


def test_ptr_is_the_first_element_of_every_kind_of_array():
    """native.ptr gives the address of element 0 for writable contiguous arrays (the buffer
    route) and for read-only, strided, reversed, empty and 0-d ones (the ctypes route)."""
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    ro = base.copy()
    ro.flags.writeable = False
    for x in (base, base[1:], base[:, 2:], base[::-1], base[2:4, ::2], ro, np.empty(0, np.int8),
              np.zeros((0, 5)), np.array(3.0), np.frombuffer(b"abcd", np.uint8)):
        assert native.ptr(x) == x.__array_interface__["data"][0], x.shape
