"""gemm / matmul / the SGEMM ladder / DGEMM on every backend against a float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops as po
from conftest import assert_close_bound

VARIANTS = po.sgemm_variants()

# 1x1x1, primes, non-multiples of every tile (8, 16, 32, 64, 128), K=1, tall-skinny, short-wide,
# exact multiples of the 128x128 tile, and one side of a single row / column.
SHAPES = [
    (1, 1, 1), (2, 3, 5), (7, 1, 13), (1, 9, 4), (67, 45, 33), (127, 131, 67), (129, 130, 17),
    (31, 200, 1), (300, 3, 9), (3, 257, 12), (128, 128, 16), (65, 63, 129),
]


def reference(a, b, c=None, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """float64 result and an elementwise error bound (|alpha| |a||b| K eps + |beta c| eps, times 2)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if trans_a:
        a64 = a64.T
    if trans_b:
        b64 = b64.T
    want = alpha * (a64 @ b64)
    mag = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if beta != 0:
        want = want + beta * c.astype(np.float64)
        mag = mag + abs(beta) * np.abs(c)
    eps = np.finfo(a.dtype).eps
    K = a64.shape[1]
    return want, 2 * (K + 2) * eps * mag


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_sgemm_variant_shapes(backend, to, variant, shape):
    M, N, K = shape
    rng = np.random.default_rng(M * 7919 + N * 31 + K)
    a, b, c = rand(rng, (M, K)), rand(rng, (K, N)), rand(rng, (M, N))
    got = po.gemm(to(a), to(b), to(c), alpha=1.25, beta=-0.75, variant=variant, backend=backend)
    assert got.dtype == np.float32
    want, bound = reference(a, b, c, 1.25, -0.75)
    assert_close_bound(to.host(got), want, bound, f"{variant} {shape}")


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (-2.0, 1.0), (0.5, 3.0), (0.0, 1.0)])
def test_gemm_transpose_alpha_beta(backend, to, trans_a, trans_b, alpha, beta):
    M, N, K = 37, 70, 19
    rng = np.random.default_rng(5)
    a = rand(rng, (K, M) if trans_a else (M, K))
    b = rand(rng, (N, K) if trans_b else (K, N))
    c = rand(rng, (M, N))
    got = po.gemm(to(a), to(b), to(c), alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b, backend=backend)
    want, bound = reference(a, b, c, alpha, beta, trans_a, trans_b)
    assert_close_bound(to.host(got), want, bound)


# Shapes for the pipelined K loops (BK = 8 everywhere): K tile counts of both parities, with and
# without a partial tile, so the two-tiles-per-iteration loops of blocktile_2d's successors, their
# last one or two tiles, and warptile's partial-tile-first order and single-tile loop all run.
# K % 4 == 0 with N % 4 == 0 takes every float4 path (warptile's main loop); N = 258 puts the last
# block column on scalar B loads; odd K makes every A load scalar. M and N are not tile multiples,
# so rows / columns past the matrix are loaded and must not reach the result.
PIPELINE_SHAPES = [(130, 260, 40), (130, 258, 44), (67, 132, 64), (33, 136, 57), (5, 12, 24), (3, 8, 16)]


@pytest.mark.parametrize("variant", ["blocktile_2d", "double_buffered", "warptile", "dgemm"])
@pytest.mark.parametrize("shape", PIPELINE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_pipelined_k_loops(backend, to, variant, shape):
    M, N, K = shape
    dtype = np.float64 if variant == "dgemm" else np.float32
    rng = np.random.default_rng(M * 131 + N * 7 + K)
    a, b, c = rand(rng, (M, K), dtype), rand(rng, (K, N), dtype), rand(rng, (M, N), dtype)
    got = po.gemm(to(a), to(b), to(c), alpha=1.5, beta=-0.5, backend=backend,
                  variant="auto" if variant == "dgemm" else variant)
    assert got.dtype == dtype
    want, bound = reference(a, b, c, 1.5, -0.5)
    assert_close_bound(to.host(got), want, bound, f"{variant} {shape}")


@pytest.mark.parametrize("M,N,K", [(70, 33, 21), (1, 1, 1), (130, 65, 9)])
def test_dgemm(backend, to, M, N, K):
    rng = np.random.default_rng(11)
    a, b, c = rand(rng, (M, K), np.float64), rand(rng, (K, N), np.float64), rand(rng, (M, N), np.float64)
    got = po.gemm(to(a), to(b), to(c), alpha=0.75, beta=2.0, backend=backend)
    assert got.dtype == np.float64
    want, bound = reference(a, b, c, 0.75, 2.0)
    assert_close_bound(to.host(got), want, bound)


def test_beta_zero_does_not_read_c(backend, to):
    rng = np.random.default_rng(1)
    a, b = rand(rng, (20, 9)), rand(rng, (9, 30))
    c = np.full((20, 30), np.nan, np.float32)
    got = to.host(po.gemm(to(a), to(b), to(c), beta=0.0, backend=backend))
    want, bound = reference(a, b)
    assert_close_bound(got, want, bound)


@pytest.mark.parametrize("variant", ["naive", "smem_tiled", "vectorized", "auto"])
def test_nan_and_inf_propagate(backend, to, variant):
    rng = np.random.default_rng(2)
    a, b = rand(rng, (33, 17)), rand(rng, (17, 41))
    a[3, 5] = np.nan
    b[2, 7] = np.inf
    got = to.host(po.gemm(to(a), to(b), variant=variant, backend=backend))
    with np.errstate(invalid="ignore"):
        want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.isnan(got[3]).all()
    assert (np.isnan(got) == np.isnan(want)).all()
    assert (np.isinf(got) == np.isinf(want)).all()


@pytest.mark.parametrize("M,N,K", [(0, 5, 3), (4, 0, 3), (0, 0, 0), (4, 5, 0)])
@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_zero_size(backend, to, M, N, K, beta):
    rng = np.random.default_rng(3)
    a, b, c = rand(rng, (M, K)), rand(rng, (K, N)), rand(rng, (M, N))
    got = to.host(po.gemm(to(a), to(b), to(c), alpha=3.0, beta=beta, backend=backend))
    assert got.shape == (M, N) and got.dtype == np.float32
    np.testing.assert_array_equal(got, (beta * c) if beta else np.zeros((M, N), np.float32))


def test_out_and_in_place(backend, to):
    rng = np.random.default_rng(4)
    a, b, c = rand(rng, (19, 23)), rand(rng, (23, 29)), rand(rng, (19, 29))
    want, bound = reference(a, b, c, 1.0, 1.0)
    out = to(np.zeros((19, 29), np.float32))
    r = po.gemm(to(a), to(b), to(c), beta=1.0, out=out, backend=backend)
    assert r is out
    assert_close_bound(to.host(out), want, bound)
    cc = to(c.copy())
    r = po.gemm(to(a), to(b), cc, beta=1.0, out=cc, backend=backend)
    assert r is cc
    assert_close_bound(to.host(cc), want, bound)


def test_non_contiguous_inputs_and_out(backend, to):
    rng = np.random.default_rng(6)
    big_a, big_b = rand(rng, (40, 60)), rand(rng, (50, 90))
    a = big_a[1:34:2, 3:40]          # (17, 37), strided rows
    b = big_b[2:39, ::3]             # (37, 30), strided columns
    out_big = np.zeros((17, 70), np.float32)
    out = to(out_big)[:, 5:35]       # (17, 30) with row stride 70
    po.gemm(to(big_a)[1:34:2, 3:40], to(big_b)[2:39, ::3], out=out, backend=backend)
    want, bound = reference(np.ascontiguousarray(a), np.ascontiguousarray(b))
    assert_close_bound(to.host(out), want, bound)


def test_matmul_batched_broadcast(backend, to):
    rng = np.random.default_rng(7)
    a = rand(rng, (2, 1, 9, 13))
    b = rand(rng, (3, 13, 5))
    got = to.host(po.matmul(to(a), to(b), backend=backend))
    assert got.shape == (2, 3, 9, 5)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    mag = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    assert_close_bound(got, want, 2 * 15 * np.finfo(np.float32).eps * mag)
    got2 = to.host(po.matmul(to(a[0, 0]), to(b), variant="blocktile_2d", backend=backend))
    assert got2.shape == (3, 9, 5)
    assert_close_bound(got2, want[0], 2 * 15 * np.finfo(np.float32).eps * mag[0])


def test_matmul_float64_and_zero_batch(backend, to):
    rng = np.random.default_rng(8)
    a, b = rand(rng, (4, 6, 7), np.float64), rand(rng, (7, 3), np.float64)
    got = to.host(po.matmul(to(a), to(b), backend=backend))
    np.testing.assert_allclose(got, a @ b, rtol=1e-12, atol=1e-12)
    empty = to.host(po.matmul(to(np.zeros((0, 6, 7))), to(b), backend=backend))
    assert empty.shape == (0, 6, 3)


# -- errors ----------------------------------------------------------------------------------
def test_errors(backend, to):
    f32 = to(np.ones((3, 4), np.float32))
    g32 = to(np.ones((4, 5), np.float32))
    with pytest.raises(TypeError, match="a has dtype int64"):
        po.gemm(to(np.ones((3, 4), np.int64)), g32, backend=backend)
    with pytest.raises(TypeError, match="b has dtype float64; expected float32"):
        po.gemm(f32, to(np.ones((4, 5))), backend=backend)
    with pytest.raises(ValueError, match="inner dimensions"):
        po.gemm(f32, to(np.ones((5, 5), np.float32)), backend=backend)
    with pytest.raises(ValueError, match="c is required when beta"):
        po.gemm(f32, g32, beta=1.0, backend=backend)
    with pytest.raises(ValueError, match="variant must be one of"):
        po.gemm(f32, g32, variant="fastest", backend=backend)
    with pytest.raises(ValueError, match="float64 runs the DGEMM"):
        po.gemm(to(np.ones((3, 4))), to(np.ones((4, 5))), variant="naive", backend=backend)
    with pytest.raises(ValueError, match=r"out has shape \(3, 4\); expected \(3, 5\)"):
        po.gemm(f32, g32, out=to(np.ones((3, 4), np.float32)), backend=backend)
    with pytest.raises(ValueError, match="c has shape"):
        po.gemm(f32, g32, to(np.ones((2, 5), np.float32)), beta=1.0, backend=backend)
    with pytest.raises(ValueError, match="a must be 2-D"):
        po.gemm(to(np.ones(3, np.float32)), g32, backend=backend)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        po.gemm(f32, g32, alpha="2", backend=backend)
    with pytest.raises(ValueError, match="at least 2-D"):
        po.matmul(to(np.ones(4, np.float32)), g32, backend=backend)
    with pytest.raises(ValueError, match="do not broadcast"):
        po.matmul(to(np.ones((2, 3, 4), np.float32)), to(np.ones((3, 4, 5), np.float32)), backend=backend)


def test_variants_registry():
    assert VARIANTS == ("naive", "coalesced", "smem_tiled", "blocktile_1d", "blocktile_2d",
                        "vectorized", "double_buffered", "warptile")
    from pygpu_ops import linalg

    for v in linalg.SGEMM_LADDER:
        assert v.kernel.symbol == f"sgemm_{v.name}"
        assert v.kernel.source.split("/")[0] == "sgemm" and v.name in v.kernel.source


# -- emulator-only: shared-memory races show up as seed-dependent results -------------------------
# K = 37: scalar A loads, one pipelined tile at a time; K = 44, N = 136: every load float4, and
# the two-tiles-per-iteration main loops of double_buffered, warptile and DGEMM run.
@pytest.mark.emulator
@pytest.mark.parametrize("variant", VARIANTS + ("dgemm",))
@pytest.mark.parametrize("K,N", [(37, 131), (44, 136)])
def test_kernels_race_free_under_two_schedules(variant, K, N):
    from pygpu_ops._runtime import backends

    if backends.problem("emulator"):
        pytest.skip(f"backend 'emulator' unavailable: {backends.problem('emulator')}")
    from pygpu_ops._runtime.emulator.testing import run_under_seeds

    dtype = np.float64 if variant == "dgemm" else np.float32
    rng = np.random.default_rng(9)
    a, b, c = rand(rng, (70, K), dtype), rand(rng, (K, N), dtype), rand(rng, (70, N), dtype)
    v = "auto" if variant == "dgemm" else variant
    run_under_seeds(lambda: po.gemm(a, b, c, beta=0.5, variant=v, backend="emulator"), seeds=(1, 2))


# -- property test: random shapes, transposes and scalars ---------------------------------------
# hypothesis is a test extra: where it is missing (a bare GPU machine) the property tests are
# collected and skip, saying why, and the rest of this file still runs.
try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError as _exc:
    _NO_HYPOTHESIS = f"hypothesis is not installed ({_exc}); pip install hypothesis (the 'test' extra)"

    def given(*args, **kwargs):
        return pytest.mark.skip(reason=_NO_HYPOTHESIS)

    def settings(*args, **kwargs):
        return lambda f: f

    class _Strategies:
        """Stands in for hypothesis.strategies: nothing is drawn, the tests using it skip."""

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    st = _Strategies()


@pytest.mark.parametrize("variant", ["smem_tiled", "vectorized", "warptile"])
@settings(max_examples=15, deadline=None, derandomize=True)
@given(M=st.integers(1, 150), N=st.integers(1, 150), K=st.integers(1, 40),
                  trans_a=st.booleans(), trans_b=st.booleans(),
                  alpha=st.sampled_from([1.0, -0.5, 2.0]), beta=st.sampled_from([0.0, 1.0, -3.0]))
def test_gemm_property(variant, M, N, K, trans_a, trans_b, alpha, beta):
    from pygpu_ops._runtime import backends

    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    a = rand(rng, (K, M) if trans_a else (M, K))
    b = rand(rng, (N, K) if trans_b else (K, N))
    c = rand(rng, (M, N))
    want, bound = reference(a, b, c, alpha, beta, trans_a, trans_b)
    for name in ("numpy", "emulator"):
        if backends.problem(name):
            continue
        got = po.gemm(a, b, c, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b,
                      variant=variant, backend=name)
        assert_close_bound(got, want, bound, f"{name} {variant} {M}x{N}x{K}")
