"""The native int8 GEMM of the numpy backend (cpu_src/int8_gemm.cpp through
quantization._native_acc): exactly the int64 result of sum_k (a - za)(b - zb) on shapes that cut
every tile, for every combination of int8 / uint8 operands, extreme values and zero points, on 1
to 3 threads; its portable loop (built here without AVX-512) likewise; PYGPU_OPS_NATIVE=0 gives
the same results through float32 BLAS."""
import ctypes
import itertools
import platform
import subprocess

import numpy as np
import pytest

from pygpu_ops import int8_gemm, qlinear_matmul
from pygpu_ops import quantization as quant
from pygpu_ops._runtime import native, sources, threads
from pygpu_ops._runtime.emulator import _build

pytestmark = pytest.mark.skipif(native.lib() is None, reason=f"native loops unavailable: {native.problem()}")

DIMS = [1, 2, 3, 5, 7, 31, 33, 65, 130]
KINDS = list(itertools.product([np.int8, np.uint8], repeat=2))


def _reference(a, b, za, zb):
    """int64 sum_k (a - za)(b - zb), za scalar or per row, zb scalar or per column."""
    za = np.asarray(za, np.int64).reshape(-1, 1) if np.ndim(za) else np.int64(za)
    zb = np.asarray(zb, np.int64).reshape(1, -1) if np.ndim(zb) else np.int64(zb)
    return (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)


def _random(rng, shape, dt):
    i = np.iinfo(dt)
    return rng.integers(i.min, i.max, size=shape, endpoint=True).astype(dt)


def _check(a, b, za=0, zb=0):
    got = int8_gemm(a, b, a_zero_point=za, b_zero_point=zb, backend="numpy")
    want = _reference(a, b, za, zb)
    assert got.dtype == np.int32 and got.shape == want.shape
    assert np.array_equal(got.astype(np.int64), want)
    return got


def _native_defines(march):
    out = subprocess.run([_build.compiler(), f"-march={march}", "-dM", "-E", "-x", "c++", "-"], input="",
                         capture_output=True, text=True, check=True).stdout
    return set(line.split()[1] for line in out.splitlines() if line.startswith("#define"))


def test_vnni_kernel_is_the_one_built_where_the_compiler_targets_it():
    info = np.zeros(2, np.int64)
    native.lib().int8_gemm_info(native.ptr(info))
    d = _native_defines("native")
    assert info[1] == int({"__AVX512VNNI__", "__AVX512BW__", "__AVX512VL__"} <= d)
    assert info[0] == 64


def test_python_side_blocks_in_the_kernels_panels():
    """quantization.INT8_NR (the column unit of the blocks handed to the loop) is the panel width
    the library was built with."""
    info = np.zeros(2, np.int64)
    native.lib().int8_gemm_info(native.ptr(info))
    assert quant.INT8_NR == info[0]


@pytest.mark.parametrize("adt,bdt", KINDS, ids=lambda d: np.dtype(d).name)
def test_every_shape_of_small_dims(adt, bdt):
    """M, N, K each among DIMS (edges of the 6-row tile, the 64-column panel, groups of 4 k),
    random values and random scalar / per-row / per-column zero points."""
    rng = np.random.default_rng(1)
    for M, N, K in itertools.product(DIMS, repeat=3):
        a, b = _random(rng, (M, K), adt), _random(rng, (K, N), bdt)
        za = _random(rng, (M,), adt) if (M + N + K) % 2 else int(_random(rng, (), adt))
        zb = _random(rng, (N,), bdt) if (M + K) % 2 else int(_random(rng, (), bdt))
        _check(a, b, za, zb)
        _check(a, b)


@pytest.mark.parametrize("adt,bdt", KINDS, ids=lambda d: np.dtype(d).name)
def test_extreme_values_and_zero_points(adt, bdt):
    """Constant operands at each end of the ranges (and 0) with the zero points at each end:
    the largest raw sums, the largest results the K check admits, and every sign."""
    ia, ib = np.iinfo(adt), np.iinfo(bdt)
    for va, vb, za, zb in itertools.product((ia.min, ia.max, 0), (ib.min, ib.max, 0),
                                            (ia.min, ia.max, 0), (ib.min, ib.max, 0)):
        amax = max(abs(ia.min - za), abs(ia.max - za), 1)
        bmax = max(abs(ib.min - zb), abs(ib.max - zb), 1)
        K = min(2 ** 31 // max(16384, amax * bmax) - 1, 4099)
        a = np.full((7, K), va, adt)
        b = np.full((K, 67), vb, bdt)
        _check(a, b, za, zb)
        _check(a[:, : K // 3 + 1], b[: K // 3 + 1], np.full(7, za, adt), np.full(67, zb, bdt))


def test_results_at_the_int32_limit():
    """K at the largest value the check accepts, operands chosen so that the exact sum is
    -2**31 + small or close to 2**31 - 1: only wraparound-exact arithmetic gets these."""
    K = quant.INT32_MAX // (255 * 255)     # uint8 x uint8 with zero points 0: amax = bmax = 255
    a = np.full((3, K), 255, np.uint8)
    b = np.full((K, 5), 255, np.uint8)
    got = _check(a, b)
    assert int(got[0, 0]) == K * 255 * 255 and got[0, 0] > 2 ** 31 - 255 * 255
    K = quant.INT32_MAX // (128 * 128)      # int8 x int8: (-128)(127) and (-128)(-128)
    a = np.full((2, K), -128, np.int8)
    b = np.full((K, 3), 127, np.int8)
    b[:, 1] = -128
    got = _check(a, b)
    assert got[0, 1] == K * 16384 and got[0, 0] == -K * 128 * 127


@pytest.mark.parametrize("nthreads", ["1", "2", "3"])
@pytest.mark.parametrize("M,N,K", [(130, 700, 261), (301, 65, 230), (6, 1000, 1030), (600, 130, 65),
                                   (512, 150, 64)])
def test_split_over_threads(monkeypatch, nthreads, M, N, K):
    """Over the parallel threshold the loop cuts the output into column panels per thread when the
    64-column panels share out evenly, else rows (both kinds occur among these shapes); each
    thread packs its own b and writes its own block."""
    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    assert native.threads_for(M * N * K // 8) == int(nthreads)
    rng = np.random.default_rng(M + N)
    for adt, bdt in KINDS:
        a, b = _random(rng, (M, K), adt), _random(rng, (K, N), bdt)
        _check(a, b, _random(rng, (M,), adt), _random(rng, (N,), bdt))


def test_strided_and_non_contiguous_inputs():
    """Row-strided views are read in place, column-strided and transposed ones copied: the same
    results."""
    rng = np.random.default_rng(3)
    big_a = _random(rng, (70, 90), np.int8)
    big_b = _random(rng, (90, 140), np.uint8)
    for a, b in [(big_a[::2, 3:70], big_b[5:72, ::2]), (big_a[:40, :65], big_b[:65, 7:100]),
                 (big_a[5:6, :33], big_b[:33, :1]), (np.asfortranarray(big_a[:31, :17]), big_b[:17, ::-1])]:
        _check(a, b, -3, np.arange(b.shape[1]).astype(np.uint8))
    col = np.broadcast_to(big_a[0], (9, 90))            # rows 0 bytes apart
    _check(col, big_b[:, :33], 5, 200)


@pytest.mark.parametrize("adt,bdt", KINDS, ids=lambda d: np.dtype(d).name)
def test_native_off_gives_the_same_results(monkeypatch, adt, bdt):
    rng = np.random.default_rng(4)
    a, b = _random(rng, (67, 1031), adt), _random(rng, (1031, 130), bdt)
    za, zb = _random(rng, (67,), adt), _random(rng, (130,), bdt)
    got = int8_gemm(a, b, a_zero_point=za, b_zero_point=zb, backend="numpy")
    y = qlinear_matmul(a, 0.01, 3, b, 0.02, zb, 0.5, 7, backend="numpy")
    monkeypatch.setenv(native.ENV_VAR, "0")
    assert native.lib() is None
    assert np.array_equal(int8_gemm(a, b, a_zero_point=za, b_zero_point=zb, backend="numpy"), got)
    assert np.array_equal(qlinear_matmul(a, 0.01, 3, b, 0.02, zb, 0.5, 7, backend="numpy"), y)
    assert np.array_equal(got.astype(np.int64), _reference(a, b, za, zb))


def test_empty_dimensions():
    for M, N, K in [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)]:
        got = int8_gemm(np.ones((M, K), np.int8), np.ones((K, N), np.uint8), a_zero_point=3, b_zero_point=9,
                        backend="numpy")
        assert got.shape == (M, N) and got.dtype == np.int32 and not got.any()


@pytest.fixture(scope="module")
def portable_lib(tmp_path_factory):
    """cpu_src/int8_gemm.cpp alone, built for x86-64-v2 (no AVX-512): the portable loop."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the portable build is checked with -march=x86-64-v2 (an x86-64 host)")
    assert "__AVX512F__" not in _native_defines("x86-64-v2")
    folder = tmp_path_factory.mktemp("portable")
    src = folder / "int8_gemm.cpp"
    src.write_text(sources.expand_files([sources.src_dir("cpu_src") / "int8_gemm.cpp"]))
    so = folder / "int8_gemm.so"
    flags = [f for f in native.FLAGS if f != "-march=native"]
    subprocess.run([_build.compiler(), *flags, "-march=x86-64-v2", str(src), "-o", str(so)], check=True)
    dll = native.bind(ctypes.CDLL(str(so)), ("int8_gemm_info", "int8_gemm"))
    info = np.zeros(2, np.int64)
    dll.int8_gemm_info(native.ptr(info))
    assert info[1] == 0       # built without AVX512-VNNI: the portable loop
    return dll


@pytest.mark.parametrize("nthreads", ["1", "3"])
def test_portable_loop(monkeypatch, portable_lib, nthreads):
    monkeypatch.setenv(threads.ENV_VAR, nthreads)
    rng = np.random.default_rng(5)
    shapes = [(M, N, K) for M, N, K in itertools.product([1, 5, 33], [1, 7, 65], [1, 3, 130])] + [(300, 70, 400)]
    for (M, N, K), (adt, bdt) in itertools.product(shapes, KINDS):
        ia, ib = np.iinfo(adt), np.iinfo(bdt)
        a, b = _random(rng, (M, K), adt), _random(rng, (K, N), bdt)
        a[0], b[:, 0] = ia.min, ib.max
        for za, zb in [(0, 0), (ia.max, ib.min), (_random(rng, (M,), adt), _random(rng, (N,), bdt))]:
            p = quant._gemm_problem("t", a, b, za, zb, a_zp_per_row=True)
            got = quant._native_acc(p, portable_lib)
            assert np.array_equal(got.astype(np.int64), _reference(a, b, za, zb))


@pytest.mark.parametrize("adt,bdt", KINDS, ids=lambda d: np.dtype(d).name)
def test_zero_point_terms_skipped_only_where_zero(monkeypatch, adt, bdt):
    """The kernel leaves out a zero-point term only where its zero points are 0 throughout the
    block: per-row zero points that are 0 except in one row (first, middle, last, in either
    thread's rows), and per-column ones 0 except in one column, give the exact result."""
    monkeypatch.setenv(threads.ENV_VAR, "2")
    rng = np.random.default_rng(7)
    M, N, K = 131, 200, 257
    a, b = _random(rng, (M, K), adt), _random(rng, (K, N), bdt)
    for row in (0, 64, M - 1):
        za = np.zeros(M, adt)
        za[row] = np.iinfo(adt).max
        _check(a, b, za, 0)
    for col in (0, 100, N - 1):
        zb = np.zeros(N, bdt)
        zb[col] = np.iinfo(bdt).max
        _check(a, b, 0, zb)
    _check(a, b, np.zeros(M, adt), np.zeros(N, bdt))
