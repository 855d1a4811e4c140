"""INT8: quant_params / quantize / dequantize / int8_gemm (+ ladder) / qlinear_matmul on every backend.

References are written here in float64 / int64 from the ONNX formulas; results must match them
exactly (integers, dequantize) or within the documented one-unit float32 difference at near-ties
(quantize, qlinear_matmul), and every backend must match the NumPy fallback bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops.quantization as Q
from pygpu_ops._runtime.device import get_device

VARIANTS = Q.int8_gemm_variants()
I8, U8 = np.dtype(np.int8), np.dtype(np.uint8)

# K = 1, 3, 5 and other non-multiples of 4 / 16 / 32 / 64, M and N off every tile, multi-tile.
GEMM_SHAPES = [(1, 1, 1), (3, 5, 3), (7, 2, 5), (17, 33, 31), (33, 9, 67), (130, 129, 37), (2, 140, 100)]


def rint_half_even(v):
    """Round half to even in float64, written out (independent of np.rint)."""
    f = np.floor(v)
    d = v - f
    up = (d > 0.5) | ((d == 0.5) & (np.mod(f, 2) == 1))
    return f + up


def ref_gemm(a, b, za=0, zb=0):
    za = np.asarray(za, np.int64)
    zb = np.asarray(zb, np.int64)
    ai = a.astype(np.int64) - (za[:, None] if za.ndim else za)
    bi = b.astype(np.int64) - zb
    out = np.zeros((a.shape[0], b.shape[1]), np.int64)
    for k in range(a.shape[1]):  # int64 outer products: exact, no BLAS
        out += ai[:, k:k + 1] * bi[k:k + 1, :]
    return out


def rand_q(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def host(to, x):
    return to.host(x)


# ---------------------------------------------------------------------------------------------
# int8_gemm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_int8_gemm_exact(backend, to, variant, shape):
    M, N, K = shape
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    for adt, bdt in ((I8, I8), (U8, I8), (I8, U8), (U8, U8)):
        a, b = rand_q(rng, (M, K), adt), rand_q(rng, (K, N), bdt)
        za = int(rand_q(rng, (), adt))
        zb = rand_q(rng, (N,), bdt)
        got = Q.int8_gemm(to(a), to(b), a_zero_point=za, b_zero_point=zb, variant=variant, backend=backend)
        assert got.dtype == np.int32 and got.shape == (M, N)
        np.testing.assert_array_equal(host(to, got), ref_gemm(a, b, za, zb), err_msg=f"{variant} {adt}x{bdt}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_gemm_zero_points_scalar_per_row_per_column(backend, to, variant):
    rng = np.random.default_rng(3)
    M, N, K = 19, 21, 45
    a, b = rand_q(rng, (M, K), I8), rand_q(rng, (K, N), U8)
    for za, zb in ((0, 0), (-7, 200), (rand_q(rng, (M,), I8), 0), (5, rand_q(rng, (N,), U8)),
                   (np.int8(-128), np.uint8(255)), (np.array([3], np.int8), np.array(9))):
        got = Q.int8_gemm(to(a), to(b), a_zero_point=za, b_zero_point=zb, variant=variant, backend=backend)
        np.testing.assert_array_equal(host(to, got), ref_gemm(a, b, za, zb))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["s8_min", "s8_max", "u8_max_zp0", "u8_zero_zp255", "mixed"])
def test_int8_gemm_extreme_values(backend, to, variant, case):
    M, N, K = 9, 70, 300
    if case == "s8_min":
        a, b, za, zb = np.full((M, K), -128, np.int8), np.full((K, N), -128, np.int8), 0, 0
    elif case == "s8_max":
        a, b, za, zb = np.full((M, K), 127, np.int8), np.full((K, N), -128, np.int8), -128, 127
    elif case == "u8_max_zp0":
        a, b, za, zb = np.full((M, K), 255, np.uint8), np.full((K, N), 255, np.uint8), 0, 0
    elif case == "u8_zero_zp255":
        a, b, za, zb = np.zeros((M, K), np.uint8), np.zeros((K, N), np.uint8), 255, 255
    else:
        rng = np.random.default_rng(8)
        a = rng.choice(np.array([0, 255], np.uint8), (M, K))
        b = rng.choice(np.array([-128, 127], np.int8), (K, N))
        za, zb = 255, np.where(np.arange(N) % 2 == 0, -128, 127).astype(np.int8)
    got = Q.int8_gemm(to(a), to(b), a_zero_point=za, b_zero_point=zb, variant=variant, backend=backend)
    np.testing.assert_array_equal(host(to, got), ref_gemm(a, b, za, zb))


@pytest.mark.parametrize("variant", ["naive", "dp4a"])
def test_int8_gemm_at_the_k_limit(backend, to, variant):
    # uint8 with zero point 0: max|a - za| = 255, K_max = (2**31 - 1) // 255**2 = 33025; the
    # result 33025 * 65025 = 2147450625 is just below 2**31 and the epilogue's terms overflow int32.
    K = 33025
    a, b = np.full((2, K), 255, np.uint8), np.full((K, 3), 255, np.uint8)
    got = Q.int8_gemm(to(a), to(b), variant=variant, backend=backend)
    assert (host(to, got) == K * 255 * 255).all()
    with pytest.raises(ValueError, match="K <= 33025"):
        Q.int8_gemm(to(np.zeros((2, K + 1), np.uint8)), to(np.zeros((K + 1, 3), np.uint8)), backend=backend)


def test_int8_gemm_k_limit_int8(backend, to):
    K = (2 ** 31 - 1) // 16384
    a, b = np.zeros((1, K + 1), np.int8), np.zeros((K + 1, 1), np.int8)
    with pytest.raises(ValueError, match=f"K <= {K}"):
        Q.int8_gemm(to(a), to(b), backend=backend)


def test_int8_gemm_auto_noncontiguous_and_empty(backend, to):
    rng = np.random.default_rng(4)
    a = rand_q(rng, (40, 66), I8)[:, ::2]        # (40, 33), column stride 2
    b = rand_q(rng, (50, 33), U8).T              # (33, 50), transposed
    got = Q.int8_gemm(to(a), to(b), a_zero_point=1, b_zero_point=2, backend=backend)
    np.testing.assert_array_equal(host(to, got), ref_gemm(a, b, 1, 2))
    big_a, big_b = rand_q(rng, (41, 70), U8), rand_q(rng, (34, 67), I8)
    for variant in VARIANTS:   # views starting at odd byte offsets: the unaligned load paths
        a, b = to(big_a)[1:, 3:36], to(big_b)[1:, 1:]
        got = Q.int8_gemm(a, b, a_zero_point=200, variant=variant, backend=backend)
        np.testing.assert_array_equal(host(to, got), ref_gemm(big_a[1:, 3:36], big_b[1:, 1:], 200, 0))
    for M, N, K in ((0, 4, 3), (4, 0, 3), (3, 4, 0)):
        got = Q.int8_gemm(to(np.zeros((M, K), np.int8)), to(np.zeros((K, N), np.uint8)), a_zero_point=3,
                          b_zero_point=7, backend=backend)
        assert got.shape == (M, N) and got.dtype == np.int32
        assert (host(to, got) == 0).all()


@pytest.mark.emulator
@pytest.mark.parametrize("variant", ["dp4a", "mma"])
def test_int8_gemm_under_seeds(variant):
    """Shared-memory tiles and warp shuffles: identical results under different thread orders."""
    from pygpu_ops._runtime import backends
    if backends.problem("emulator"):
        pytest.skip(backends.problem("emulator"))
    from pygpu_ops._runtime.emulator.testing import run_under_seeds

    rng = np.random.default_rng(6)
    a, b = rand_q(rng, (70, 100), U8), rand_q(rng, (100, 131), I8)
    zb = rand_q(rng, (131,), I8)
    got = run_under_seeds(lambda: Q.int8_gemm(a, b, a_zero_point=9, b_zero_point=zb, variant=variant,
                                              backend="emulator"), seeds=(1, 2))
    np.testing.assert_array_equal(got, ref_gemm(a, b, 9, zb))


# ---------------------------------------------------------------------------------------------
# qlinear_matmul
# ---------------------------------------------------------------------------------------------
def ref_qlinear(a, sa, za, b, sb, zb, sy, zy, out_dtype):
    """float64 QLinearMatMul (scales taken as their float32 values)."""
    acc = ref_gemm(a, b, za, zb).astype(np.float64)
    mult = np.float64(np.float32(sa)) * np.asarray(sb, np.float32).astype(np.float64) / np.float64(np.float32(sy))
    v = acc * mult
    info = np.iinfo(out_dtype)
    return np.clip(rint_half_even(v) + zy, info.min, info.max), v


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("out_dtype", ["int8", "uint8"])
def test_qlinear_matmul(backend, to, variant, out_dtype):
    rng = np.random.default_rng(11)
    M, N, K = 33, 68, 45   # N % 4 == 0: the packed 4-byte stores of the 8-bit epilogue
    a, b = rand_q(rng, (M, K), U8), rand_q(rng, (K, N), I8)
    sa, za = 0.02, 131
    sb = (rng.random(N) * 0.01 + 0.002).astype(np.float32)
    zb = rand_q(rng, (N,), I8) // 8
    sy, zy = 0.05, (-3 if out_dtype == "int8" else 120)
    got = Q.qlinear_matmul(to(a), sa, za, to(b), sb, zb, sy, zy, out_dtype=out_dtype, variant=variant,
                           backend=backend)
    assert got.dtype == np.dtype(out_dtype) and got.shape == (M, N)
    got = host(to, got)
    # Bit-identical to the CPU fallback (same float32 arithmetic).
    np.testing.assert_array_equal(got, Q.qlinear_matmul(a, sa, za, b, sb, zb, sy, zy, out_dtype=out_dtype,
                                                        backend="numpy"))
    # Against float64: equal, except by one unit where the exact value is within float32
    # rounding (relative 2**-21) of a tie.
    want, v = ref_qlinear(a, sa, za, b, sb, zb, sy, zy, np.dtype(out_dtype))
    diff = np.abs(got.astype(np.float64) - want)
    near_tie = np.abs(np.abs(v - np.floor(v)) - 0.5) <= np.abs(v) * 2.0 ** -21
    assert (diff <= 1).all() and ((diff == 0) | near_tie).all()
    assert len(np.unique(got)) > 20 and (got == np.iinfo(out_dtype).min).any()   # signal and saturation


@pytest.mark.parametrize("variant", VARIANTS)
def test_qlinear_matmul_ties_and_saturation(backend, to, variant):
    # mult = 0.5 exactly: odd accumulators are exact ties and must round to even.
    acc_vals = np.array([-7, -5, -3, -1, 1, 3, 5, 7, 9, 301, -301], np.int64)
    N = acc_vals.size
    a = np.ones((1, 1), np.int8)
    b = acc_vals.reshape(1, N).clip(-128, 127).astype(np.int8)
    b_big = np.array([[101], [100], [100]], np.int8)   # 301
    a3 = np.ones((1, 3), np.int8)
    got = Q.qlinear_matmul(to(a), 0.5, 0, to(b), 1.0, 0, 1.0, 0, variant=variant, backend=backend)
    want = rint_half_even(acc_vals[:-2].clip(-128, 127) * 0.5)
    np.testing.assert_array_equal(host(to, got)[0, :N - 2], want)
    np.testing.assert_array_equal(host(to, got)[0, :8], [-4, -2, -2, 0, 0, 2, 2, 4])
    got = Q.qlinear_matmul(to(a3), 1.0, 0, to(b_big), 1.0, 0, 1.0, 10, out_dtype="int8", variant=variant,
                           backend=backend)
    assert host(to, got)[0, 0] == 127        # 301 + 10 saturates
    got = Q.qlinear_matmul(to(a3), 1.0, 0, to(-b_big), 1.0, 0, 1.0, 10, out_dtype="uint8", variant=variant,
                           backend=backend)
    assert host(to, got)[0, 0] == 0


def test_qlinear_matmul_k0_and_scalar_b(backend, to):
    got = Q.qlinear_matmul(to(np.zeros((3, 0), np.int8)), 0.1, 0, to(np.zeros((0, 4), np.int8)), 0.2, 0,
                           0.3, 7, backend=backend)
    assert got.shape == (3, 4) and (host(to, got) == 7).all()


# ---------------------------------------------------------------------------------------------
# quantize / dequantize
# ---------------------------------------------------------------------------------------------
def ref_quantize(x, scale, zp, axis, dtype):
    """float64 QuantizeLinear (scales as their float32 values, NaN -> zero point)."""
    x = np.asarray(x, np.float64)
    shp = () if axis is None else (-1,) + (1,) * (x.ndim - axis % x.ndim - 1)
    s = np.asarray(scale, np.float32).astype(np.float64).reshape(shp)
    z = np.asarray(zp, np.int64).reshape(shp if np.ndim(zp) else ())
    with np.errstate(invalid="ignore"):
        v = x / s
    r = np.where(np.isnan(v), 0, rint_half_even(np.clip(v, -1e6, 1e6)))
    info = np.iinfo(dtype)
    return np.clip(r + z, info.min, info.max), v


def check_quantized(got, x, scale, zp, axis, dtype):
    want, v = ref_quantize(x, scale, zp, axis, dtype)
    diff = np.abs(got.astype(np.float64) - want)
    with np.errstate(invalid="ignore"):
        near_tie = np.abs(np.abs(v - np.floor(v)) - 0.5) <= np.abs(v) * 2.0 ** -23
    assert (diff <= 1).all() and ((diff == 0) | near_tie).all()


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1])
def test_quantize_dequantize_per_channel(backend, to, dtype, axis):
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((5, 6, 37)) * 4).astype(np.float32)
    if axis is None:
        scale, zp = np.float32(0.05), (7 if dtype == "int8" else 128)
    else:
        C = x.shape[axis]
        scale = (rng.random(C) * 0.1 + 0.01).astype(np.float32)
        zp = rng.integers(-20, 20, C) + (0 if dtype == "int8" else 128)
    q = Q.quantize(to(x), scale, zp, axis=axis, dtype=dtype, backend=backend)
    assert q.dtype == np.dtype(dtype) and q.shape == x.shape
    qh = host(to, q)
    np.testing.assert_array_equal(qh, Q.quantize(x, scale, zp, axis=axis, dtype=dtype, backend="numpy"))
    check_quantized(qh, x, scale, zp, axis, np.dtype(dtype))
    info = np.iinfo(dtype)
    assert (qh == info.min).any() and (qh == info.max).any()
    d = Q.dequantize(to(qh), scale, zp, axis=axis, backend=backend)
    assert d.dtype == np.float32
    shp = () if axis is None else (-1,) + (1,) * (x.ndim - axis % x.ndim - 1)
    want = ((qh.astype(np.int64) - np.asarray(zp).reshape(shp if np.ndim(zp) else ())) *
            np.asarray(scale, np.float64).reshape(shp)).astype(np.float32)
    np.testing.assert_array_equal(host(to, d), want)   # one rounding of an exact product: exact


def test_quantize_ties_to_even_and_special_values(backend, to):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -3.5, 1e30, -1e30, np.inf, -np.inf, np.nan,
                  1e-39, -1e-39, 0.0, -0.0], np.float32) * np.float32(0.25)
    got = host(to, Q.quantize(to(x), 0.25, 0, backend=backend))
    np.testing.assert_array_equal(got, [0, 2, 2, 0, -2, -2, 4, -4, 127, -128, 127, -128, 0, 0, 0, 0, 0])
    got = host(to, Q.quantize(to(x), 0.25, 100, dtype="uint8", backend=backend))
    np.testing.assert_array_equal(got, [100, 102, 102, 100, 98, 98, 104, 96, 255, 0, 255, 0, 100, 100, 100,
                                        100, 100])


def test_quantize_divides_not_multiplies_by_reciprocal(backend, to):
    """x / scale and x * (1 / scale) round differently near ties; quantize follows the division."""
    rng = np.random.default_rng(2)
    s = np.float32(0.1)
    k = rng.integers(-250, 250, 200000).astype(np.float32) + np.float32(0.5)
    x = (k * s).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
    div = np.rint(x / s)
    mul = np.rint(x * (np.float32(1) / s))
    pick = np.nonzero((div != mul) & (np.abs(div) < 120))[0][:64]
    assert pick.size > 0
    got = host(to, Q.quantize(to(x[pick]), s, 0, backend=backend))
    np.testing.assert_array_equal(got, div[pick])


def test_quantize_float64_and_float16_inputs(backend, to):
    x = np.array([0.1, -0.26, 3.0], np.float64)
    got = host(to, Q.quantize(to(x), 0.1, 0, backend=backend))
    np.testing.assert_array_equal(got, Q.quantize(x.astype(np.float32), 0.1, 0, backend="numpy"))
    got = host(to, Q.quantize(to(x.astype(np.float16)), 0.1, 0, backend=backend))
    assert got.dtype == np.int8 and got.shape == (3,)


def test_dequantize_int32_and_empty(backend, to):
    q = np.array([-(2 ** 31), -1, 0, 5, 2 ** 24 + 1, 2 ** 31 - 1], np.int32)
    got = host(to, Q.dequantize(to(q), 0.5, 0, backend=backend))
    np.testing.assert_array_equal(got, (q.astype(np.float64) * 0.5).astype(np.float32))
    for shape in ((0,), (3, 0, 2)):
        e = Q.dequantize(to(np.zeros(shape, np.int8)), 1.0, backend=backend)
        assert e.shape == shape and e.dtype == np.float32
        e = Q.quantize(to(np.zeros(shape, np.float32)), 1.0, axis=-1 if len(shape) > 1 else None, backend=backend) \
            if len(shape) == 1 else Q.quantize(to(np.zeros(shape, np.float32)), np.ones(2, np.float32), axis=2,
                                               backend=backend)
        assert e.shape == shape and e.dtype == np.int8


# ---------------------------------------------------------------------------------------------
# quant_params
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quant_params(backend, to, symmetric, dtype):
    rng = np.random.default_rng(31)
    x = (rng.standard_normal((4, 6, 9)) * 3 + 1).astype(np.float32)
    x[:, 2, :] = 0.0            # an all-zero channel along axis 1
    x[:, 4, :] = np.abs(x[:, 4, :])   # an all-positive channel
    info = np.iinfo(dtype)
    for axis in (None, 1, -1):
        s, z = Q.quant_params(to(x), axis=axis, symmetric=symmetric, dtype=dtype, backend=backend)
        s, z = host(to, s), host(to, z)
        assert s.dtype == np.float32 and z.dtype == np.dtype(dtype)
        red = None if axis is None else tuple(i for i in range(3) if i != axis % 3)
        hi = np.max(x, axis=red).astype(np.float64)
        lo = np.min(x, axis=red).astype(np.float64)
        if symmetric:
            want_s = (np.maximum(np.abs(hi), np.abs(lo)).astype(np.float32) / np.float32(127))
            want_z = np.full(np.shape(hi), 0 if dtype == "int8" else 128)
        else:
            lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
            want_s = ((hi - lo) / 255).astype(np.float32)
            want_z = np.clip(np.rint(info.min - lo / np.where(want_s > 0, want_s, 1).astype(np.float64)),
                             info.min, info.max)
            want_z = np.where(want_s == 0, info.min, want_z)
        want_s = np.where(want_s == 0, np.float32(1), want_s)
        np.testing.assert_array_equal(s, want_s)
        np.testing.assert_array_equal(z, want_z)
        if axis == 1:
            assert s[2] == 1.0   # the all-zero channel
        # 0.0 is exactly representable, and the round trip is within half a scale.
        q = Q.quantize(x, s, z, axis=axis, dtype=dtype, backend="numpy")
        d = Q.dequantize(q, s, z, axis=axis, backend="numpy")
        shp = () if axis is None else (-1,) + (1,) * (2 - axis % 3)
        assert (d[x == 0] == 0).all()
        assert (np.abs(d - x) <= s.reshape(shp) * 0.5000001).all()


def test_quant_params_zero_and_nonfinite(backend, to):
    s, z = Q.quant_params(to(np.zeros((3, 4), np.float32)), symmetric=False, dtype="int8", backend=backend)
    assert float(host(to, s)) == 1.0 and int(host(to, z)) == -128
    with pytest.raises(ValueError, match="NaN or Inf"):
        Q.quant_params(to(np.array([1.0, np.nan], np.float32)), backend=backend)


# ---------------------------------------------------------------------------------------------
# Error paths
# ---------------------------------------------------------------------------------------------
def test_errors(backend, to):
    x = to(np.ones((2, 3), np.float32))
    a8, b8 = to(np.ones((2, 3), np.int8)), to(np.ones((3, 4), np.int8))
    with pytest.raises(TypeError, match="x has dtype int8"):
        Q.quantize(a8, 1.0, backend=backend)
    with pytest.raises(TypeError, match="q has dtype float32"):
        Q.dequantize(x, 1.0, backend=backend)
    with pytest.raises(TypeError, match="a has dtype float32"):
        Q.int8_gemm(x, b8, backend=backend)
    with pytest.raises(TypeError, match="b has dtype int16"):
        Q.int8_gemm(a8, to(np.ones((3, 4), np.int16)), backend=backend)
    with pytest.raises(ValueError, match=r"scale must have shape \(3,\)"):
        Q.quantize(x, np.ones(2, np.float32), axis=1, backend=backend)
    with pytest.raises(ValueError, match="scale must be a scalar"):
        Q.quantize(x, np.ones(3, np.float32), backend=backend)
    with pytest.raises(ValueError, match=r"zero_point must be a scalar or shape \(2,\)"):
        Q.quantize(x, np.ones(2, np.float32), np.zeros(3, np.int64), axis=0, backend=backend)
    for bad in (0.0, -1.0, np.nan, np.inf, 1e-40):
        with pytest.raises(ValueError, match="scale must be"):
            Q.quantize(x, bad, backend=backend)
        with pytest.raises(ValueError, match="scale must be"):
            Q.dequantize(a8, bad, backend=backend)
        with pytest.raises(ValueError, match="y_scale must be"):
            Q.qlinear_matmul(a8, 1.0, 0, b8, 1.0, 0, bad, 0, backend=backend)
    with pytest.raises(ValueError, match=r"zero_point must lie in \[0, 255\]"):
        Q.quantize(x, 1.0, -1, dtype="uint8", backend=backend)
    with pytest.raises(TypeError, match="zero_point must be an integer"):
        Q.quantize(x, 1.0, 0.5, backend=backend)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        Q.quantize(x, 1.0, axis=2, backend=backend)
    with pytest.raises(ValueError, match="dtype must be one of"):
        Q.quantize(x, 1.0, dtype="int4", backend=backend)
    with pytest.raises(ValueError, match="a's columns"):
        Q.int8_gemm(a8, to(np.ones((2, 4), np.int8)), backend=backend)
    with pytest.raises(ValueError, match=r"b_zero_point must be a scalar or shape \(4,\)"):
        Q.int8_gemm(a8, b8, b_zero_point=np.zeros(3, np.int64), backend=backend)
    with pytest.raises(ValueError, match=r"a_zero_point must lie in \[-128, 127\]"):
        Q.int8_gemm(a8, b8, a_zero_point=200, backend=backend)
    with pytest.raises(ValueError, match="variant must be one of"):
        Q.int8_gemm(a8, b8, variant="wmma", backend=backend)
    with pytest.raises(ValueError, match=r"b_scale must have shape \(4,\) or a scalar"):
        Q.qlinear_matmul(a8, 1.0, 0, b8, np.ones(3, np.float32), 0, 1.0, 0, backend=backend)
    with pytest.raises(ValueError, match="a_zero_point must be a scalar"):
        Q.qlinear_matmul(a8, 1.0, np.zeros(2, np.int8), b8, 1.0, 0, 1.0, 0, backend=backend)
    with pytest.raises(ValueError, match="out_dtype must be one of"):
        Q.qlinear_matmul(a8, 1.0, 0, b8, 1.0, 0, 1.0, 0, out_dtype="int32", backend=backend)
    with pytest.raises(ValueError, match=r"y_zero_point must lie in \[0, 255\]"):
        Q.qlinear_matmul(a8, 1.0, 0, b8, 1.0, 0, 1.0, -3, out_dtype="uint8", backend=backend)


# ---------------------------------------------------------------------------------------------
# qconv2d
# ---------------------------------------------------------------------------------------------
def ref_qconv_acc(x, w, zx, stride, pad, dil, G):
    """int64 direct-loop convolution of (x - zx) with w, NCHW / (O, C/G, kh, kw); pad = (t, b, l, r),
    padding positions hold zx (the quantized 0.0), i.e. contribute 0."""
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = stride, dil, pad
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    xi = x.astype(np.int64) - zx
    acc = np.zeros((N, O, OH, OW), np.int64)
    Og = O // G
    for o in range(O):
        g = o // Og
        for i in range(KH):
            for j in range(KW):
                for oh in range(OH):
                    h = oh * sh - pt + i * dh
                    if not 0 <= h < H:
                        continue
                    for ow in range(OW):
                        ww = ow * sw - pl + j * dw
                        if 0 <= ww < W:
                            acc[:, o, oh, ow] += xi[:, g * Cg:(g + 1) * Cg, h, ww] @ w[o, :, i, j].astype(np.int64)
    return acc


def ref_qconv(x, sx, zx, w, sw, sy, zy, bias, stride, pad, dil, G, relu, ydt):
    """(float32-requantized result, float64-requantized result, exact float64 value v), NCHW."""
    acc = ref_qconv_acc(x, w, zx, stride, pad, dil, G)
    O = w.shape[0]
    if bias is not None:
        acc = acc + bias.astype(np.int64)[None, :, None, None]
    swv = np.broadcast_to(np.asarray(sw, np.float32), (O,))
    mult32 = ((np.float32(sx) * swv) / np.float32(sy)).astype(np.float32)        # documented float32 steps
    y32 = rint_half_even((acc.astype(np.float32) * mult32[None, :, None, None]).astype(np.float64))
    v = acc * (np.float64(np.float32(sx)) * swv.astype(np.float64) / np.float64(np.float32(sy)))[None, :, None, None]
    info = np.iinfo(ydt)
    lo = zy if relu else info.min
    out = [np.clip(r + zy, lo, info.max).astype(ydt) for r in (y32, rint_half_even(v))]
    return out[0], out[1], v


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


# (N, C, H, W, O, kh, kw, stride, padding, dilation, groups): odd sizes, strides, dilation, groups,
# depthwise, asymmetric "same" padding, pixel counts that are not multiples of 4 (4-column groups
# straddling two images), more than one 128-wide GEMM tile in pixels.
QCONV_CASES = [
    (2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1),
    (1, 4, 6, 5, 6, 3, 2, (2, 1), 2, 1, 2),
    (3, 6, 5, 5, 6, 2, 2, 1, 0, 2, 3),
    (2, 4, 6, 7, 4, 3, 3, 1, (0, 1), 1, 4),          # depthwise
    (2, 2, 6, 6, 3, 2, 2, 1, "same", 1, 1),           # even kernel: one more at the bottom / right
    (2, 3, 11, 13, 7, 3, 3, 1, 1, 1, 1),              # 286 pixels: 3 tiles of 128 columns
]


def _case_params(case):
    N, C, H, W, O, kh, kw, s, p, d, G = case
    pair = (lambda v: v if isinstance(v, tuple) else (v, v))
    if p == "same":
        th, tw = d * (kh - 1), d * (kw - 1)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    else:
        ph, pw = pair(p)
        pads = (ph, ph, pw, pw)
    return (N, C, H, W, O, kh, kw, s, p, d, G), (pair(s), pads, pair(d))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("xdt", [I8, U8], ids=["x_int8", "x_uint8"])
@pytest.mark.parametrize("case", QCONV_CASES, ids=lambda c: "x".join(str(v).replace(" ", "") for v in c))
def test_qconv2d_matches_direct_loops(backend, to, layout, xdt, case):
    (N, C, H, W, O, kh, kw, s, p, d, G), (stride, pads, dil) = _case_params(case)
    rng = np.random.default_rng(hash((N, C, H, W, O)) % 2**32)
    x = rand_q(rng, (N, C, H, W), xdt)
    w = rand_q(rng, (O, C // G, kh, kw), I8)
    bias = rng.integers(-20000, 20000, O).astype(np.int32)
    zx = 5 if xdt == I8 else 140                  # padding must act as this value, not as 0
    sx, sy = 0.03, 0.9
    sw = (rng.random(O) * 0.02 + 0.005).astype(np.float32)
    for relu, ydt, zy, b, wsc in ((None, xdt, 3 if xdt == I8 else 120, bias, sw),
                                  ("relu", U8 if xdt == I8 else I8, -4 if xdt == U8 else 9, None, 0.01)):
        want32, want64, v = ref_qconv(x, sx, zx, w, wsc, sy, zy, b, stride, pads, dil, G, relu, ydt)
        xa, wa = (x, w) if layout == "NCHW" else (_nhwc(x), _nhwc(w))
        got = Q.qconv2d(to(xa), sx, zx, to(wa), wsc, 0, sy, zy, None if b is None else to(b), stride=s,
                        padding=p, dilation=d, groups=G, layout=layout, activation=relu,
                        out_dtype=ydt.name, backend=backend)
        assert got.dtype == ydt
        got = host(to, got)
        if layout == "NHWC":
            got = _nchw(got)
        np.testing.assert_array_equal(got, want32)
        # float64: equal except one unit next to a tie (qlinear_matmul's documented bound)
        diff = np.abs(got.astype(np.int64) - want64.astype(np.int64))
        near_tie = np.abs(np.abs(v - np.floor(v)) - 0.5) <= np.abs(v) * 2.0 ** -21
        assert (diff <= 1).all() and ((diff == 0) | near_tie).all()
        assert len(np.unique(got)) > 5                  # signal, not a saturated block
        if relu:
            assert (got >= zy).all() and (got == zy).any()


def test_qconv2d_nhwc_many_channels_and_chunks(backend, to):
    """O > 128 (two GEMM column tiles in NHWC, two row tiles in NCHW) and a column buffer split
    into several chunks, each a part of an image."""
    from pygpu_ops.conv import set_column_buffer_limit

    rng = np.random.default_rng(21)
    x = rand_q(rng, (2, 5, 6, 7), U8)
    w = rand_q(rng, (131, 5, 3, 3), I8)
    sw = (rng.random(131) * 0.01 + 0.002).astype(np.float32)
    bias = rng.integers(-5000, 5000, 131).astype(np.int32)
    want, _, _ = ref_qconv(x, 0.02, 100, w, sw, 0.4, 7, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu", I8)
    prev = set_column_buffer_limit(5 * 9 * 20)          # about 20 pixels per chunk
    try:
        for layout in ("NCHW", "NHWC"):
            xa, wa = (x, w) if layout == "NCHW" else (_nhwc(x), _nhwc(w))
            got = Q.qconv2d(to(xa), 0.02, 100, to(wa), sw, np.zeros(131, np.int8), 0.4, 7, to(bias), padding=1,
                            layout=layout, activation="relu", out_dtype="int8", backend=backend)
            got = host(to, got)
            np.testing.assert_array_equal(got if layout == "NCHW" else _nchw(got), want)
    finally:
        set_column_buffer_limit(prev)


def test_qconv2d_ties_saturation_and_extremes(backend, to):
    """mult = 0.5 exactly: odd sums are ties (to even); sums past the range saturate; extreme
    inputs (x = -128 with w = -128) at the K limit of the bias check stay exact."""
    x = np.array([[[[1, 3, 5, -1, -3, -5, 127, -128]]]], np.int8)     # (1, 1, 1, 8)
    w = np.ones((1, 1, 1, 1), np.int8)
    got = host(to, Q.qconv2d(to(x), 0.5, 0, to(w), 1.0, 0, 1.0, 0, backend=backend))
    np.testing.assert_array_equal(got.reshape(-1), [0, 2, 2, 0, -2, -2, 64, -64])
    got = host(to, Q.qconv2d(to(x), 2.0, 0, to(w), 1.0, 0, 1.0, 10, to(np.array([7], np.int32)),
                             backend=backend))
    np.testing.assert_array_equal(got.reshape(-1), [26, 30, 34, 22, 18, 14, 127, -128])
    # every product (-128) * (-128): the largest raw sums, requantized with a tiny scale
    rng = np.random.default_rng(3)
    x = np.full((1, 64, 3, 3), -128, np.int8)
    w = np.full((2, 64, 3, 3), -128, np.int8)
    w[1] = rand_q(rng, (64, 3, 3), I8)
    bias = np.array([-(2**31 - 1 - 576 * 128 * 128), 2**31 - 1 - 576 * 128 * 128], np.int32)
    sy = 2.0 ** 24
    got = host(to, Q.qconv2d(to(x), 1.0, 0, to(w), 1.0, 0, sy, 0, to(bias), backend=backend))
    want, _, _ = ref_qconv(x, 1.0, 0, w, 1.0, sy, 0, bias, (1, 1), (0, 0, 0, 0), (1, 1), 1, None, I8)
    np.testing.assert_array_equal(got, want)


def test_qconv2d_empty_and_no_channels(backend, to):
    w = np.ones((3, 2, 3, 3), np.int8)
    got = Q.qconv2d(to(np.zeros((0, 2, 5, 5), np.uint8)), 0.1, 3, to(w), 0.1, 0, 0.1, 4, backend=backend)
    assert got.shape == (0, 3, 3, 3) and got.dtype == U8
    got = Q.qconv2d(to(np.zeros((2, 2, 5, 5), np.int8)), 0.1, 0, to(np.zeros((0, 2, 3, 3), np.int8)),
                    0.1, 0, 0.1, 0, backend=backend)
    assert got.shape == (2, 0, 3, 3)
    # C = 0: nothing to sum, the result is the requantized bias everywhere
    bias = np.array([10, -10, 3], np.int32)
    got = Q.qconv2d(to(np.zeros((2, 0, 4, 4), np.int8)), 0.5, 0, to(np.zeros((3, 0, 3, 3), np.int8)),
                    1.0, 0, 1.0, 2, to(bias), padding=1, backend=backend)
    assert got.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(host(to, got)[0, :, 0, 0], [7, -3, 4])     # rint(b * 0.5) + 2, ties to even


def test_qconv2d_errors(backend, to):
    x = to(np.zeros((1, 2, 5, 5), np.int8))
    w = to(np.zeros((4, 2, 3, 3), np.int8))

    def call(**kw):
        args = dict(x=x, x_scale=0.1, x_zero_point=0, w=w, w_scale=0.1, w_zero_point=0, y_scale=0.1,
                    y_zero_point=0)
        args.update(kw)
        return Q.qconv2d(**args, backend=backend)

    with pytest.raises(TypeError, match="x has dtype float32"):
        call(x=to(np.zeros((1, 2, 5, 5), np.float32)))
    with pytest.raises(TypeError, match="w has dtype uint8"):
        call(w=to(np.zeros((4, 2, 3, 3), np.uint8)))
    with pytest.raises(TypeError, match="bias has dtype float32"):
        call(bias=to(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match=r"bias has shape \(3,\); expected \(4,\)"):
        call(bias=to(np.zeros(3, np.int32)))
    with pytest.raises(ValueError, match="w_zero_point must be 0"):
        call(w_zero_point=np.array([0, 1, 0, 0], np.int8))
    with pytest.raises(ValueError, match=r"w_scale must have shape \(4,\) or a scalar"):
        call(w_scale=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="x_scale must be a scalar"):
        call(x_scale=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="y_scale must be finite and positive"):
        call(y_scale=0.0)
    with pytest.raises(ValueError, match=r"x_zero_point must lie in \[-128, 127\]"):
        call(x_zero_point=200)
    with pytest.raises(ValueError, match=r"y_zero_point must lie in \[0, 255\]"):
        call(y_zero_point=-1, out_dtype="uint8")
    with pytest.raises(ValueError, match="out_dtype must be one of"):
        call(out_dtype="int16")
    with pytest.raises(ValueError, match="w has shape"):
        call(w=to(np.zeros((4, 3, 3, 3), np.int8)))
    with pytest.raises(ValueError, match="not divisible by groups=3"):
        call(groups=3)
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        call(activation="gelu")
    with pytest.raises(ValueError, match="layout must be one of"):
        call(layout="NCWH")
    with pytest.raises(ValueError, match="larger than the padded input"):
        call(w=to(np.zeros((4, 2, 7, 7), np.int8)))
    with pytest.raises(ValueError, match="x must be 4-D"):
        call(x=to(np.zeros((2, 5, 5), np.int8)))
    big = to(np.zeros((1, 7400, 3, 3), np.uint8))      # K = 66600 > 2**31 / (128 * 255)
    with pytest.raises(ValueError, match="too large for exact int32 accumulation"):
        Q.qconv2d(big, 0.1, 0, to(np.zeros((1, 7400, 3, 3), np.int8)), 0.1, 0, 0.1, 0, backend=backend)
    with pytest.raises(ValueError, match="too large for exact int32 accumulation"):
        call(bias=to(np.array([2**31 - 1, 0, 0, 0], np.int32)))


@pytest.mark.emulator
def test_qconv2d_under_seeds():
    """Shared-memory tiles of the dp4a main loop: identical results under different thread orders."""
    from pygpu_ops._runtime import backends
    if backends.problem("emulator"):
        pytest.skip(backends.problem("emulator"))
    from pygpu_ops._runtime.emulator.testing import run_under_seeds

    rng = np.random.default_rng(8)
    x = rand_q(rng, (2, 6, 9, 9), U8)
    w = rand_q(rng, (10, 3, 3, 3), I8)
    sw = (rng.random(10) * 0.01 + 0.002).astype(np.float32)
    got = run_under_seeds(lambda: Q.qconv2d(x, 0.02, 77, w, sw, 0, 0.3, 5, padding=1, groups=2,
                                            activation="relu", backend="emulator"), seeds=(1, 2))
    np.testing.assert_array_equal(got, Q.qconv2d(x, 0.02, 77, w, sw, 0, 0.3, 5, padding=1, groups=2,
                                                 activation="relu", backend="numpy"))


# ---------------------------------------------------------------------------------------------
# Parameters checked by value, limits, one answer per case (issue 17 items 5-7, 10; issue 11 8a)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quant_params_symmetric_scale_beyond_float32(backend, to, dtype):
    """max|x| beyond float32 (a float64 input) has no finite symmetric scale, as in asymmetric mode."""
    for symmetric in (True, False):
        with pytest.raises(ValueError, match="exceeds what a float32 scale can express"):
            Q.quant_params(to(np.array([1e300, -2.0])), symmetric=symmetric, dtype=dtype, backend=backend)
    # Symmetric scales are float32(max|x|) / 127 (documented): 1e39 is already beyond float32.
    with pytest.raises(ValueError, match="exceeds what a float32 scale can express"):
        Q.quant_params(to(np.array([[1.0, 2.0], [-1e39, 3.0]])), axis=0, dtype=dtype, backend=backend)
    scale, _ = Q.quant_params(to(np.array([3.0e38, -2.0])), dtype=dtype, backend=backend)
    assert host(to, scale) == np.float32(3.0e38) / np.float32(127)


# Zero points whose int64 bit pattern is in range but whose value is not.
WRAPPING = {
    "uint64_scalar": (np.uint64(2**64 - 128), 18446744073709551488),
    "uint64_2_63": (np.uint64(2**63), 9223372036854775808),
    "python_int": (2**64 - 128, 18446744073709551488),
    "uint64_0d": (np.array(2**64 - 128, np.uint64), 18446744073709551488),
    "uint64_be_1": (np.array([2**64 - 128], ">u8"), 18446744073709551488),
}


@pytest.mark.parametrize("case", sorted(WRAPPING))
def test_zero_points_are_checked_by_value(backend, to, case):
    zp, shown = WRAPPING[case]
    x = to(np.ones((2, 3), np.float32))
    q8 = to(np.ones((2, 3), np.int8))
    a8, b8 = to(np.ones((2, 3), np.int8)), to(np.ones((3, 4), np.int8))
    msg = rf"must lie in \[-128, 127\] \(int8\); got {shown}$"
    with pytest.raises(ValueError, match="zero_point " + msg):
        Q.quantize(x, 1.0, zp, backend=backend)
    with pytest.raises(ValueError, match="zero_point " + msg):
        Q.dequantize(q8, 1.0, zp, backend=backend)
    with pytest.raises(ValueError, match="a_zero_point " + msg):
        Q.int8_gemm(a8, b8, a_zero_point=zp, backend=backend)
    with pytest.raises(ValueError, match="b_zero_point " + msg):
        Q.int8_gemm(a8, b8, b_zero_point=zp, backend=backend)
    with pytest.raises(ValueError, match="y_zero_point " + msg):
        Q.qlinear_matmul(a8, 1.0, 0, b8, 1.0, 0, 1.0, zp, backend=backend)
    with pytest.raises(ValueError, match=r"zero_point must lie in \[-2147483648, 2147483647\] \(int32\)"):
        Q.dequantize(to(np.ones((2, 3), np.int32)), 1.0, zp, backend=backend)


def test_zero_point_arrays_are_checked_by_value(backend, to):
    x = to(np.ones((2, 3), np.float32))
    for dt in (np.uint64, ">u8"):
        zp = np.array([0, 2**64 - 128, 0], dt)
        with pytest.raises(ValueError, match=r"zero_point must lie in \[-128, 127\] \(int8\); got 18446744073709551488"):
            Q.quantize(x, np.ones(3, np.float32), zp, axis=1, backend=backend)
        with pytest.raises(ValueError, match=r"b_zero_point must lie in \[0, 255\] \(uint8\); got 18446744073709551488"):
            Q.int8_gemm(to(np.ones((2, 3), np.uint8)), to(np.ones((3, 3), np.uint8)), b_zero_point=zp,
                        backend=backend)
    with pytest.raises(ValueError, match=r"zero_point must lie in \[-128, 127\] \(int8\); got 1000000"):
        Q.quantize(x, 1.0, 10**400, backend=backend)
    # In-range values of any integer dtype and byte order mean what they say.
    xs = np.array([[0.0, 1.0, -1.0], [2.0, -3.0, 0.5]], np.float32)
    want = Q.quantize(to(xs), np.ones(3, np.float32), np.array([200, 0, 17], np.int64), axis=1, dtype="uint8",
                      backend=backend)
    for zp in (np.array([200, 0, 17], np.uint64), np.array([200, 0, 17], ">u8"), np.array([200, 0, 17], ">i2")):
        got = Q.quantize(to(xs), np.ones(3, np.float32), zp, axis=1, dtype="uint8", backend=backend)
        np.testing.assert_array_equal(host(to, got), host(to, want))
    np.testing.assert_array_equal(host(to, Q.quantize(to(xs), 1.0, np.uint64(200), dtype="uint8", backend=backend)),
                                  host(to, Q.quantize(to(xs), 1.0, 200, dtype="uint8", backend=backend)))


def test_scales_beyond_float64_are_value_errors(backend, to):
    x, q8 = to(np.ones((2, 3), np.float32)), to(np.ones((2, 3), np.int8))
    a8, b8 = to(np.ones((2, 3), np.int8)), to(np.ones((3, 4), np.int8))
    for huge in (10**400, -(10**400)):
        with pytest.raises(ValueError, match="quantize: scale must be a finite number"):
            Q.quantize(x, huge, backend=backend)
        with pytest.raises(ValueError, match="dequantize: scale must be a finite number"):
            Q.dequantize(q8, huge, backend=backend)
        with pytest.raises(ValueError, match="qlinear_matmul: b_scale must be a finite number"):
            Q.qlinear_matmul(a8, 1.0, 0, b8, huge, 0, 1.0, 0, backend=backend)
    with pytest.raises(ValueError, match=r"axis 18446744073709551615 is out of range"):
        Q.quantize(x, 1.0, axis=np.uint64(2**64 - 1), backend=backend)
    with pytest.raises(TypeError, match="symmetric must be a bool"):
        Q.quant_params(x, symmetric="False", backend=backend)


def test_zero_d_inputs_give_zero_d_arrays(backend, to):
    q = Q.quantize(to(np.array(1.26, np.float32)), 0.1, 3, backend=backend)
    assert not isinstance(q, np.generic) and q.shape == () and q.dtype == I8
    assert host(to, q) == 16
    d = Q.dequantize(q, 0.5, 2, backend=backend)
    assert not isinstance(d, np.generic) and d.shape == () and d.dtype == np.float32
    assert host(to, d) == 7.0


def test_fortran_order_gives_c_contiguous(backend, to):
    rng = np.random.default_rng(12)
    base = rng.standard_normal((5, 4)).astype(np.float32)
    x = to(np.ascontiguousarray(base.T)).T
    q = Q.quantize(x, 0.05, backend=backend)
    assert q.flags.c_contiguous
    np.testing.assert_array_equal(host(to, q), host(to, Q.quantize(to(base), 0.05, backend=backend)))
    d = Q.dequantize(to(np.ascontiguousarray(host(to, q).T)).T, 0.05, backend=backend)
    assert d.flags.c_contiguous


def test_gemm_dimension_limit_shared(backend, to):
    """int8_gemm and qconv2d refuse dimensions beyond the kernels' int indices before any copy."""
    from pygpu_ops.linalg import GEMM_DIM_MAX

    xp = __import__("cupy") if backend == "cuda" else np
    n = 2**31 - 1            # a C int, but the kernels' indices run a tile past the last column
    a = to(np.ones((1, 1), np.int8))
    b = xp.broadcast_to(to(np.ones((1, 1), np.int8)), (1, n))
    with pytest.raises(ValueError, match=rf"int8_gemm: N \(b's columns\) must be between 0 and {GEMM_DIM_MAX}; got {n}"):
        Q.int8_gemm(a, b, backend=backend)
    x = xp.broadcast_to(to(np.ones((1, 1, 1, 1), np.uint8)), (1, 1, 46341, 46341))   # OH*OW > 2**31
    with pytest.raises(ValueError, match=r"qconv2d: OH\*OW must be between 0 and"):
        Q.qconv2d(x, 0.1, 0, to(np.ones((1, 1, 1, 1), np.int8)), 0.1, 0, 0.1, 0, backend=backend)


@pytest.fixture
def two_gpus(fake_cupy, monkeypatch):
    """The fake CuPy with two devices; records the current device at every reduction (``sum``)
    and at every device-properties query."""
    import sys

    from pygpu_ops._runtime import backends, device

    fake = sys.modules["fake_cupy"].make(device_count=2)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backends, "_problems", {})
    device.get_device.cache_clear()
    seen = {"sum": [], "props": []}
    plain_sum = np.ndarray.sum

    def recording_sum(self, *args, **kw):
        seen["sum"].append(fake._state["device"])
        return plain_sum(self, *args, **kw)

    monkeypatch.setattr(fake.ndarray, "sum", recording_sum)
    props = fake.cuda.runtime.getDeviceProperties

    def recording_props(dev):
        seen["props"].append((fake._state["device"], dev))
        return props(dev)

    fake.cuda.runtime.getDeviceProperties = recording_props
    fake.seen = seen
    return fake


def test_qconv2d_and_int8_gemm_device_work_on_the_arrays_device(two_gpus):
    """Arrays on GPU 1, current device 0: the weight sums of qconv2d and the variant choice of
    int8_gemm / qlinear_matmul happen inside GPU 1's scope."""
    cupy = two_gpus
    rng = np.random.default_rng(13)
    xh, wh = rand_q(rng, (1, 4, 6, 6), U8), rand_q(rng, (3, 4, 3, 3), I8)
    ah, bh = rand_q(rng, (5, 7), I8), rand_q(rng, (7, 6), I8)
    with cupy.cuda.Device(1):
        x, w, a, b = cupy.asarray(xh), cupy.asarray(wh), cupy.asarray(ah), cupy.asarray(bh)
    assert cupy._state["device"] == 0
    y = Q.qconv2d(x, 0.02, 7, w, 0.01, 0, 0.05, 3, padding=1)
    assert y.device.id == 1
    assert cupy.seen["sum"] and set(cupy.seen["sum"]) == {1}, cupy.seen["sum"]
    np.testing.assert_array_equal(y.get(), Q.qconv2d(xh, 0.02, 7, wh, 0.01, 0, 0.05, 3, padding=1, backend="numpy"))
    for call in (lambda: Q.int8_gemm(a, b), lambda: Q.qlinear_matmul(a, 0.1, 0, b, 0.1, 0, 0.5, 0)):
        cupy.seen["props"].clear()
        get_device("cuda")._cc.clear()   # the compute capability is read once per device: ask again
        assert call().device.id == 1
        assert cupy.seen["props"] == [(1, 1)], cupy.seen["props"]
    np.testing.assert_array_equal(Q.int8_gemm(a, b).get(), ref_gemm(ah, bh))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_qconv2d_huge_padding_and_dilation_cost_the_output_not_the_padding(backend, to, layout):
    """Padding and dilation near 2**30: only the centre tap reads the input. The NumPy fallback
    goes through conv2d's per-tap path (no padded copy of x, which would be 2**31 rows), so it
    runs within a 1 GiB address-space margin; every backend matches the direct loop."""
    from test_pooling import address_space_cap

    rng = np.random.default_rng(21)
    xh, wh = rand_q(rng, (1, 2, 5, 4), U8), rand_q(rng, (3, 2, 3, 3), I8)
    big = 2**30 - 8   # the padded input stays below 2**31 (checked): 5 + 2 * big
    want32, want64, _ = ref_qconv(xh, 0.03, 9, wh, 0.02, 0.07, -4, None, (1, 1), (big,) * 4, (big, big), 1, 0, np.dtype(np.int8))
    x, w = (xh, wh) if layout == "NCHW" else (_nhwc(xh), _nhwc(wh))
    with address_space_cap(1 << 30):
        y = Q.qconv2d(to(x), 0.03, 9, to(w), 0.02, 0, 0.07, -4, padding=big, dilation=big, layout=layout, out_dtype="int8",
                      backend=backend)
    y = to.host(y)
    if layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    assert y.shape == want32.shape == (1, 3, 5, 4)
    np.testing.assert_array_equal(y, want32)
