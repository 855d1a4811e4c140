"""int8_gemm_mma (cuda_src/int8_gemm/03_mma.cu): its two copy paths, its pipeline, its memory counters.

The kernel takes a fast path (cp.async, ldmatrix, .u8 tensor-core operands for uint8) when A and B
are 16-byte aligned and lda, ldb, K and N are multiples of 16, and a general path (byte loads)
otherwise; K is cut into 128-byte tiles from its end, the first one partial. These tests pick
shapes and strides for each path and each tile count, and compare with int64 sums written here.
"""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops.quantization as Q
from tests.test_quantization import I8, U8, rand_q, ref_gemm

COMBOS = [(I8, I8), (U8, I8), (I8, U8), (U8, U8)]
BK = Q.MMA_BK


def _run(device_backend, a, b, za, zb):
    to = (lambda x: __import__("cupy").asarray(x)) if device_backend == "cuda" else (lambda x: x)
    got = Q.int8_gemm(to(a), to(b), a_zero_point=za, b_zero_point=zb, variant="mma", backend=device_backend)
    return got.get() if hasattr(got, "get") else np.asarray(got)


# K tiles: 1 (16, 128), 2 with a partial first tile (144), 2 whole (256), 3 (384), 4 partial (400).
@pytest.mark.parametrize("K", [16, 128, 144, 256, 384, 400])
def test_mma_fast_path_every_tile_count(device_backend, K):
    M, N = 130, 144                       # an edge block in M (2 rows) and in N (16 columns)
    rng = np.random.default_rng(K)
    for adt, bdt in COMBOS:
        a, b = rand_q(rng, (M, K), adt), rand_q(rng, (K, N), bdt)
        za = rand_q(rng, (M,), adt)
        zb = int(rand_q(rng, (), bdt))
        np.testing.assert_array_equal(_run(device_backend, a, b, za, zb), ref_gemm(a, b, za, zb),
                                      err_msg=f"{adt} x {bdt}, K={K}")


def test_mma_fast_path_uint8_without_zero_points(device_backend):
    """uint8 operands with zero points that shift to 0 (128): the sums are still needed (.u8 path)."""
    rng = np.random.default_rng(3)
    a, b = rand_q(rng, (64, 272), U8), rand_q(rng, (272, 48), U8)
    np.testing.assert_array_equal(_run(device_backend, a, b, 128, 128), ref_gemm(a, b, 128, 128))
    a8 = rand_q(rng, (64, 272), I8)
    np.testing.assert_array_equal(_run(device_backend, a8, b, 0, 128), ref_gemm(a8, b, 0, 128))


@pytest.mark.parametrize("case", ["k_odd", "k_not_16", "lda_unaligned", "a_offset", "n_not_16_strided_b"])
def test_mma_general_path(device_backend, case):
    rng = np.random.default_rng(len(case))
    M, N, K = 67, 48, 160
    if case == "k_odd":
        K = 2 * BK + 5
    elif case == "k_not_16":
        K = BK + 24
    for adt, bdt in COMBOS:
        a, b = rand_q(rng, (M, K), adt), rand_q(rng, (K, N), bdt)
        if case == "lda_unaligned":        # rows 8 bytes apart from a 16-byte multiple
            big = rand_q(rng, (M, K + 8), adt)
            big[:, :K] = a
            a = big[:, :K]
        elif case == "a_offset":           # the data pointer 1 byte past an aligned one
            big = rand_q(rng, (M, K + 16), adt)
            big[:, 1:K + 1] = a
            a = big[:, 1:K + 1]
        elif case == "n_not_16_strided_b":  # ldb = 48 (aligned), N = 37 (not a multiple of 16)
            b = b[:, :37]
        np.testing.assert_array_equal(_run(device_backend, a, b, 5 if adt == I8 else 200, 0),
                                      ref_gemm(a, b, 5 if adt == I8 else 200, 0), err_msg=f"{adt} x {bdt}")


@pytest.mark.parametrize("K, path", [(33024, "fast"), (33040, "general")])
def test_mma_uint8_raw_sum_at_the_int32_edge(device_backend, K, path):
    """uint8 x uint8 at 255: the .u8 raw sum 255 * 255 * K fits int32 up to K = 33025 (fast path);
    beyond, the kernel takes the general path (signed bytes), exact up to the wrapper's K limit."""
    a = np.full((16, K), 255, np.uint8)
    b = np.full((K, 16), 255, np.uint8)
    a[:, ::7] = 0
    np.testing.assert_array_equal(_run(device_backend, a, b, 128, 128), ref_gemm(a, b, 128, 128),
                                  err_msg=path)


@pytest.mark.parametrize("out", ["int8", "uint8"])
@pytest.mark.parametrize("N", [64, 50])
def test_mma_qlinear_matmul_8bit_stores(device_backend, out, N):
    """Requantized 8-bit outputs: 4-byte stores when ldc % 4 == 0 (N = 64), byte stores otherwise."""
    rng = np.random.default_rng(N)
    a, b = rand_q(rng, (40, 128), U8), rand_q(rng, (128, N), I8)
    to = (lambda x: __import__("cupy").asarray(x)) if device_backend == "cuda" else (lambda x: x)
    sb = rng.uniform(0.01, 0.02, N).astype(np.float32)
    got = Q.qlinear_matmul(to(a), 0.05, 120, to(b), sb, 0, 2.0, 3, out_dtype=out, variant="mma",
                           backend=device_backend)
    want = Q.qlinear_matmul(a, 0.05, 120, b, sb, 0, 2.0, 3, out_dtype=out, backend="numpy")
    np.testing.assert_array_equal(got.get() if hasattr(got, "get") else np.asarray(got), want)


@pytest.mark.emulator
def test_mma_memory_counters_aligned():
    """Aligned 256^3: every global load is a 16-byte copy and fully coalesced, the output stores
    too, and ldmatrix (its plain twin reads the same rows) and the copies into the swizzled tiles
    have no shared-memory bank conflicts."""
    from pygpu_ops._runtime import backends
    if backends.problem("emulator"):
        pytest.skip(backends.problem("emulator"))
    from pygpu_ops._runtime.emulator import count_memory

    rng = np.random.default_rng(0)
    a, b = rand_q(rng, (256, 256), I8), rand_q(rng, (256, 256), I8)
    with count_memory() as rec:
        got = Q.int8_gemm(a, b, variant="mma", backend="emulator")
    np.testing.assert_array_equal(np.asarray(got), ref_gemm(a, b))
    (launch,) = [x for x in rec.launches if "int8_gemm_mma" in x.kernel]
    sites = launch.sites
    gl = [s for s in sites if s.space == "global" and s.op == "load"]
    assert gl and all(s.width == 16 and s.units == s.ideal for s in gl)
    gs = [s for s in sites if s.space == "global" and s.op == "store"]
    assert gs and all(s.units == s.ideal for s in gs)
    sh = [s for s in sites if s.space == "shared"]
    assert sh and all(s.width == 16 for s in sh)
    assert launch.totals()["smem_bank_conflicts"] == 0
    t = launch.totals()
    # 4 wavefronts (one per 8-lane phase) per 16-byte request: ldmatrix.x4's minimum.
    assert t["lds_wavefronts"] == 4 * t["lds_requests"] and t["sts_wavefronts"] == 4 * t["sts_requests"]


@pytest.mark.emulator
def test_mma_fast_path_under_seeds():
    """The pipeline's barriers: identical results under different thread and block orders, with
    3 K tiles (the 2 stage buffers are both reused) and uint8 x int8 (.u8 operands)."""
    from pygpu_ops._runtime import backends
    if backends.problem("emulator"):
        pytest.skip(backends.problem("emulator"))
    from pygpu_ops._runtime.emulator.testing import run_under_seeds

    rng = np.random.default_rng(8)
    a, b = rand_q(rng, (70, 3 * BK), U8), rand_q(rng, (3 * BK, 160), I8)
    got = run_under_seeds(lambda: Q.int8_gemm(a, b, a_zero_point=9, b_zero_point=-4, variant="mma",
                                              backend="emulator"), seeds=(1, 2))
    np.testing.assert_array_equal(got, ref_gemm(a, b, 9, -4))
