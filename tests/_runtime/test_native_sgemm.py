"""The numpy backend's native float32 GEMM and convolution (cpu_src/sgemm.cpp): against float64
references on adversarial shapes, strides, special values and thread counts, the portable
(non-AVX-512) build, and conv2d through the public API against PyTorch in float64."""
import ctypes
import subprocess

import numpy as np
import pytest

import pygpu_ops
from pygpu_ops import conv
from pygpu_ops._runtime import native, sources
from pygpu_ops.linalg import native_sgemm

pytestmark = pytest.mark.skipif(native.lib() is None, reason=f"native loops unavailable: {native.problem()}")

DIMS = [1, 2, 3, 7, 15, 17, 31, 33, 47, 49, 65, 130]
EPS = 2.0 ** -24


def _reference(a, b, bias=None):
    """Plain float64 sum of products (no BLAS: every term is formed, 0 * inf included)."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = (a.astype(np.float64)[:, :, None] * b.astype(np.float64)[None, :, :]).sum(axis=1)
    return r if bias is None else r + bias.astype(np.float64)


def _bound(a, b, K, bias=None):
    """A float32 dot product of length K is within about K units of roundoff of sum |a||b|; the
    bias add and the result's own rounding add two more."""
    mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    if bias is not None:
        mag = mag + np.abs(bias.astype(np.float64))
    return (K + 2) * EPS * mag + 1e-30


def _check(got, a, b, bias=None):
    want = _reference(a, b, bias)
    err = np.abs(got.astype(np.float64) - want)
    assert (err <= _bound(a, b, a.shape[1], bias)).all(), f"max error {err.max():.3g}"


@pytest.fixture(scope="module")
def portable_lib(tmp_path_factory):
    """cpu_src built with PYGPU_SGEMM_PORTABLE: the plain C++ micro-kernel a machine without
    AVX-512 runs (same flags otherwise)."""
    from pygpu_ops._runtime.emulator import _build

    src = tmp_path_factory.mktemp("portable") / "native.cpp"
    src.write_text(sources.expand_files(native._sources()))
    so = src.with_suffix(".so")
    flags = [f for f in native.FLAGS if f != "-fdiagnostics-color=never"]
    try:
        subprocess.run([_build.compiler(), *flags, "-DPYGPU_SGEMM_PORTABLE", "-o", str(so), str(src)],
                       check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no portable build: {exc}")
    return native.bind(ctypes.CDLL(str(so)))


def _path(lib):
    flag = np.zeros(1, np.int32)
    lib.sgemm_f32_avx512(native.ptr(flag))
    return int(flag[0])


@pytest.fixture(params=["default", "portable"])
def lib(request):
    return native.lib() if request.param == "default" else request.getfixturevalue("portable_lib")


def test_portable_build_runs_the_plain_kernel(portable_lib):
    assert _path(portable_lib) == 0


@pytest.mark.parametrize("K", [1, 3, 17, 130, 513, 1100])
def test_every_edge_shape(lib, K):
    rng = np.random.default_rng(K)
    for M in DIMS:
        for N in DIMS:
            a = rng.standard_normal((M, K)).astype(np.float32)
            b = rng.standard_normal((K, N)).astype(np.float32)
            _check(native_sgemm(a, b, lib=lib), a, b)


@pytest.mark.parametrize("M,N,K", [(130, 65, 49), (1, 1, 1), (33, 300, 700), (200, 47, 33)])
def test_leading_dimensions_and_strides_of_b(lib, M, N, K):
    """a and out as column slices of wider arrays (their other columns untouched), b row-major,
    column-major and strided both ways (each packed by its own branch)."""
    rng = np.random.default_rng(M * N)
    a_big = rng.standard_normal((M, K + 19)).astype(np.float32)
    a = a_big[:, 5:5 + K]
    b = rng.standard_normal((K, N)).astype(np.float32)
    b_big = rng.standard_normal((3 * K, 2 * N + 1)).astype(np.float32)
    b_big[::3, 1::2] = b
    bias = rng.standard_normal(N).astype(np.float32)
    for bv in (b, np.asfortranarray(b), b_big[::3, 1::2]):
        out_big = np.full((M, N + 37), 7.0, np.float32)
        got = native_sgemm(a, bv, bias=bias, out=out_big[:, 3:3 + N], lib=lib)
        assert got.base is out_big or got.base is out_big.base
        _check(out_big[:, 3:3 + N], a, b, bias)
        assert (out_big[:, :3] == 7).all() and (out_big[:, 3 + N:] == 7).all()


@pytest.mark.parametrize("M,N,K", [(15, 33, 17), (29, 65, 600), (1, 47, 2)])
def test_nan_and_inf_land_where_a_dot_product_puts_them(lib, M, N, K):
    """NaN in a, +-inf in a and b, zeros next to them (0 * inf is NaN): the NaN / inf pattern of
    the result is that of the plain float64 sum, including rows and columns in the edge tiles,
    and the zero-padded lanes of an edge tile leak nothing into real outputs."""
    rng = np.random.default_rng(K)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    a[M - 1, K - 1] = np.nan
    a[0, 0] = np.inf
    b[K // 2, N - 1] = -np.inf
    b[K - 1, 0] = np.inf
    a[M // 2, K // 2] = 0.0              # 0 * -inf: NaN in row M // 2, column N - 1
    a[M // 2, K - 1] = 0.0               # 0 * inf: NaN in row M // 2, column 0
    if N > 1:
        b[0, 1] = 0.0                    # inf * 0: NaN in row 0, column 1
    got = native_sgemm(a, b, lib=lib)
    want = _reference(a, b)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want))
    assert np.array_equal(np.sign(got[np.isinf(got)]), np.sign(want[np.isinf(want)]))
    fin = np.isfinite(want)
    err = np.abs(got[fin].astype(np.float64) - want[fin])
    aa, bb = np.nan_to_num(a, posinf=0, neginf=0, nan=0), np.nan_to_num(b, posinf=0, neginf=0)
    assert (err <= _bound(aa, bb, K)[fin]).all()


@pytest.mark.parametrize("act,slope", [(1, 0.0), (2, 0.25), (3, 0.0)])
def test_epilogue_activations(lib, act, slope):
    rng = np.random.default_rng(act)
    a = (4 * rng.standard_normal((37, 40))).astype(np.float32)
    b = rng.standard_normal((40, 50)).astype(np.float32)
    a[3, 7] = np.nan
    bias = rng.standard_normal(50).astype(np.float32)
    got = native_sgemm(a, b, bias=bias, act=act, slope=slope, lib=lib)
    v = _reference(a, b, bias)
    want = {1: np.maximum(v, 0), 2: np.where(v < 0, slope * v, v), 3: np.minimum(np.maximum(v, 0), 6)}[act]
    assert np.array_equal(np.isnan(got), np.isnan(v))
    fin = ~np.isnan(v)
    assert (np.abs(got[fin] - want[fin]) <= _bound(a, b, 40, bias)[fin]).all()
    assert (got[fin] >= 0).all() if act in (1, 3) else True
    assert (got[fin] <= 6).all() if act == 3 else True


@pytest.mark.parametrize("M,N,K", [(700, 30, 300), (100, 300, 300), (64, 96, 800)])
def test_thread_counts_give_the_same_bits(monkeypatch, M, N, K):
    """1, 2 and 3 threads split rows or columns; each output's sum runs in the same order either
    way, so the bits agree."""
    from pygpu_ops.linalg import native_blocks, native_threads

    rng = np.random.default_rng(M)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    results = []
    for t in ("1", "2", "3"):
        monkeypatch.setenv("PYGPU_OPS_NUM_THREADS", t)
        assert native_threads(M, N, K) == int(t)
        assert len(native_blocks(M, N, K, int(t))) >= int(t)
        results.append(native_sgemm(a, b))
    _check(results[0], a, b)
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


def _torch_conv(torch, x, w, b, stride, padding, dilation):
    """float64 NCHW conv2d; padding ((top, bottom), (left, right)) through F.pad."""
    (pt, pb), (pl, pr) = padding
    tx = torch.nn.functional.pad(torch.from_numpy(x.astype(np.float64)), (pl, pr, pt, pb))
    return torch.nn.functional.conv2d(tx, torch.from_numpy(w.astype(np.float64)),
                                      None if b is None else torch.from_numpy(b.astype(np.float64)),
                                      stride=stride, dilation=dilation).numpy()


CONV_CASES = [  # N, C, H, W, O, kh, kw, stride, padding, dilation
    (1, 128, 28, 28, 128, 3, 3, 1, ((1, 1), (1, 1)), 1),
    (2, 3, 9, 11, 5, 3, 3, 1, ((1, 1), (1, 1)), 1),
    (3, 17, 7, 5, 33, 3, 2, (2, 1), ((2, 0), (1, 3)), (1, 2)),
    (1, 600, 4, 4, 7, 3, 3, 1, ((1, 1), (1, 1)), 1),        # C over one K block: split per tap
    (1, 400, 5, 6, 40, 3, 3, 1, ((1, 1), (1, 1)), 1),       # K blocks of 7 taps and 2 taps
    (2, 130, 6, 5, 20, 5, 5, 1, ((2, 2), (2, 2)), 1),       # 25 taps: blocks of 23 and 2
    (2, 8, 6, 6, 65, 1, 1, 1, ((0, 0), (0, 0)), 1),
    (1, 5, 3, 3, 4, 3, 3, 1, ((3, 3), (3, 3)), 1),          # taps that only read padding
    (4, 16, 1, 1, 31, 5, 5, 2, ((2, 2), (2, 2)), 1),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("activation,build", [(None, "default"), ("relu6", "default"), ("relu", "portable")])
def test_conv2d_matches_torch_float64(request, monkeypatch, layout, case, activation, build):
    torch = pytest.importorskip("torch")
    if build == "portable":
        portable = request.getfixturevalue("portable_lib")
        monkeypatch.setattr(native, "lib", lambda: portable)
    N, C, H, W, O, kh, kw, stride, padding, dilation = case
    rng = np.random.default_rng(C * O)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((O, C, kh, kw)) / np.sqrt(C * kh * kw)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    want = _torch_conv(torch, x, w, b, stride, padding, dilation)
    if activation is not None:
        want = np.clip(want, 0, 6 if activation == "relu6" else None)
    xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    wl = w if layout == "NCHW" else np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    got = pygpu_ops.conv2d(xl, wl, b, stride=stride, padding=padding, dilation=dilation, layout=layout,
                           activation=activation, backend="numpy")
    got = got if layout == "NCHW" else got.transpose(0, 3, 1, 2)
    mag = _torch_conv(torch, np.abs(x), np.abs(w), np.abs(b), stride, padding, dilation)
    K = C * kh * kw
    assert got.shape == want.shape
    assert (np.abs(got - want) <= (K + 2) * EPS * mag + 1e-30).all()


def test_conv2d_nchw_without_the_scatter(monkeypatch):
    """Images too large for the kernel's int32 scatter offsets take the transpose route: forced
    here by a smaller limit, same result as the scatter."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 20, 9, 9)).astype(np.float32)
    w = rng.standard_normal((40, 20, 3, 3)).astype(np.float32)
    want = pygpu_ops.conv2d(x, w, padding=1, backend="numpy")
    monkeypatch.setattr(conv, "INT32_MAX", 32 * 80)
    got = pygpu_ops.conv2d(x, w, padding=1, backend="numpy")
    assert np.array_equal(got, want)


def test_conv2d_nan_and_inf_weights_times_the_padding():
    """A tap that reads only padding is left out of the sum; a NaN weight there still makes its
    channel NaN (0 * NaN), as on the device and in PyTorch. A tap that reads the padding for some
    outputs: 0 * inf is NaN there, 1 * inf is inf elsewhere (the kernel's zero rows)."""
    x = np.ones((1, 4, 2, 2), np.float32)
    w = np.ones((3, 4, 5, 5), np.float32)
    w[1, 2, 0, 0] = np.nan                      # padding 2 on a 2x2 image: tap (0, 0) reads no input
    for layout in ("NCHW", "NHWC"):
        xl = x if layout == "NCHW" else x.transpose(0, 2, 3, 1).copy()
        wl = w if layout == "NCHW" else w.transpose(0, 2, 3, 1).copy()
        got = pygpu_ops.conv2d(xl, wl, padding=2, layout=layout, backend="numpy")
        got = got if layout == "NCHW" else got.transpose(0, 3, 1, 2)
        assert np.isnan(got[:, 1]).all() and np.isfinite(got[:, [0, 2]]).all()
    w = np.ones((3, 4, 3, 3), np.float32)
    w[2, 0, 0, 0] = np.inf                      # padding 1: tap (0, 0) reads x only at output (1, 1)
    want = np.full((2, 2), np.nan)
    want[1, 1] = np.inf
    for layout in ("NCHW", "NHWC"):
        xl = x if layout == "NCHW" else x.transpose(0, 2, 3, 1).copy()
        wl = w if layout == "NCHW" else w.transpose(0, 2, 3, 1).copy()
        got = pygpu_ops.conv2d(xl, wl, padding=1, layout=layout, backend="numpy")
        got = got if layout == "NCHW" else got.transpose(0, 3, 1, 2)
        assert np.array_equal(got[0, 2], want, equal_nan=True)
        assert np.isfinite(got[:, :2]).all()


def test_native_off_keeps_the_numpy_route(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 7, 12)).astype(np.float32)
    w = rng.standard_normal((9, 3, 3, 12)).astype(np.float32)
    on = pygpu_ops.conv2d(x, w, padding=1, layout="NHWC", backend="numpy")
    monkeypatch.setenv(native.ENV_VAR, "0")
    assert native_sgemm(x[0, 0], w[:, 0, 0].T) is None
    off = pygpu_ops.conv2d(x, w, padding=1, layout="NHWC", backend="numpy")
    assert np.allclose(on, off, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_and_matmul_through_the_public_api(trans_a, trans_b):
    """Products above NATIVE_MATMUL_MIN_FLOPS take the native kernel (transposed operands as
    strided views, alpha and beta after it); an ``out`` that is an operand still gets the right
    answer (numpy.matmul's buffering takes over)."""
    rng = np.random.default_rng(int(trans_a) * 2 + int(trans_b))
    M, N, K = 131, 97, 150
    assert 2.0 * M * N * K >= pygpu_ops.linalg.NATIVE_MATMUL_MIN_FLOPS
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    c = rng.standard_normal((M, N)).astype(np.float32)
    opa, opb = (a.T if trans_a else a), (b.T if trans_b else b)
    got = pygpu_ops.gemm(a, b, c, alpha=0.5, beta=2.0, trans_a=trans_a, trans_b=trans_b, backend="numpy")
    want = 0.5 * _reference(opa, opb) + 2.0 * c.astype(np.float64)
    assert (np.abs(got - want) <= _bound(opa, opb, K) + 4 * EPS * np.abs(want)).all()
    _check(pygpu_ops.matmul(opa, opb, backend="numpy"), opa, opb)
    sq = rng.standard_normal((140, 140)).astype(np.float32)
    want_sq, bound_sq = _reference(sq, sq), _bound(sq, sq, 140)
    got_sq = pygpu_ops.gemm(sq, sq, out=sq, backend="numpy")
    assert got_sq is sq and (np.abs(sq - want_sq) <= bound_sq).all()


def test_after_fork_and_from_concurrent_threads():
    """A forked child of a process whose OpenMP team ran (the child runs the blocks on one thread:
    native.threads_for) and Python threads calling at once (each its own team) all get the same
    bits."""
    import os
    import threading

    rng = np.random.default_rng(11)
    a = rng.standard_normal((300, 200)).astype(np.float32)
    b = rng.standard_normal((200, 256)).astype(np.float32)
    want = native_sgemm(a, b)                 # starts the parent's workers
    _check(want, a, b)
    if hasattr(os, "fork"):
        pid = os.fork()
        if pid == 0:                          # the child: exit code 0 only if the bits agree
            ok = False
            try:
                ok = np.array_equal(native_sgemm(a, b), want)
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    results = [None] * 4

    def work(k):
        results[k] = [native_sgemm(a, b) for _ in range(5)]

    ths = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert all(np.array_equal(r, want) for rs in results for r in rs)
