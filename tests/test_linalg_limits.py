"""gemm / matmul at their limits on every backend: partial batch broadcasting without copies,
the dimension limit of the kernels' int arguments, scalar parameters (alpha, beta, trans flags)
and the cases where the backends used to disagree (K == 0 with alpha = NaN, np.matrix)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import pygpu_ops as po
from conftest import Arrays, assert_close_bound, np_matrix
from pygpu_ops import linalg


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def xp_of(backend):
    if backend == "cuda":
        import cupy

        return cupy
    return np


def matmul_reference(a, b):
    """float64 a @ b and a bound of 2 (K + 2) eps |a| |b|, elementwise."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    want = np.matmul(a64, b64)
    mag = np.matmul(np.abs(a64), np.abs(b64))
    return want, 2 * (a64.shape[-1] + 2) * np.finfo(np.asarray(a).dtype).eps * mag


@pytest.fixture
def allocations(monkeypatch):
    """Bytes of every emulator device allocation (the emulator's and the fake CuPy's memory)."""
    from pygpu_ops._runtime.emulator import _memory

    sizes = []
    init = _memory._DeviceAllocation.__init__

    def record(self, nbytes, desc):
        sizes.append(int(nbytes))
        init(self, nbytes, desc)

    monkeypatch.setattr(_memory._DeviceAllocation, "__init__", record)
    return sizes


def _skip_real_gpu(backend):
    if backend == "cuda" and getattr(xp_of(backend), "__version__", "") != "fake":
        pytest.skip("allocations are counted in the emulator's memory (emulator and fakecuda)")


# -- partial batch broadcasting ----------------------------------------------------------------
# (a shape, b shape, how a is made from its data, how b is): broadcast dimensions interleaved,
# on either side, inside views with negative / non-unit strides and in user broadcast views.
BROADCAST_CASES = {
    "a_outer_b_inner": ((3, 1, 4, 5), (1, 2, 5, 6)),
    "interleaved": ((2, 1, 3, 4, 5), (1, 4, 1, 5, 3)),
    "vector_dots": ((5, 1, 1, 7), (1, 6, 7, 1)),
    "b_2d": ((2, 3, 9, 4), (4, 7)),
    "a_2d": ((9, 4), (2, 1, 4, 7)),
    "same_batch": ((2, 3, 4, 5), (2, 3, 5, 6)),
}


@pytest.mark.parametrize("case", sorted(BROADCAST_CASES))
def test_matmul_partial_broadcast(backend, to, case):
    sa, sb = BROADCAST_CASES[case]
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a, b = rand(rng, sa), rand(rng, sb)
    got = to.host(po.matmul(to(a), to(b), backend=backend))
    want, bound = matmul_reference(a, b)
    assert_close_bound(got, want, bound, case)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_broadcast_of_strided_views(backend, to, dtype):
    rng = np.random.default_rng(3)
    big_a = rand(rng, (4, 1, 11, 6), dtype)
    big_b = rand(rng, (1, 3, 6, 14), dtype)
    a = to(big_a)[::-1, :, 1::2, :]                    # negative batch stride, strided rows
    b = to(big_b)[:, ::-1, :, ::2]                     # negative batch stride, strided columns
    got = to.host(po.matmul(a, b, backend=backend))
    want, bound = matmul_reference(big_a[::-1, :, 1::2, :], big_b[:, ::-1, :, ::2])
    assert got.shape == (4, 3, 5, 7)
    assert_close_bound(got, want, bound)
    # A caller's own broadcast view (stride-0 batch dimensions) against a real batch.
    xp = xp_of(backend)
    x = to(rand(rng, (1, 5, 6), dtype))
    av = xp.broadcast_to(x, (4, 3, 5, 6))
    bb = rand(rng, (4, 1, 6, 2), dtype)
    got = to.host(po.matmul(av, to(bb), backend=backend))
    want, bound = matmul_reference(np.broadcast_to(to.host(x), (4, 3, 5, 6)), bb)
    assert_close_bound(got, want, bound)


def test_matmul_broadcast_is_not_materialized(device_backend, allocations):
    """(40, 1, 1, K) @ (1, 30, K, 1): the result is 1200 numbers; a copy of the broadcast operands
    would be 2 x 1200 x K. Memory must stay within the inputs plus the result."""
    _skip_real_gpu(device_backend)
    to = Arrays(device_backend)
    rng = np.random.default_rng(4)
    a, b = rand(rng, (40, 1, 1, 512)), rand(rng, (1, 30, 512, 1))
    da, db = to(a), to(b)
    allocations.clear()
    got = to.host(po.matmul(da, db, backend=device_backend))
    want, bound = matmul_reference(a, b)
    assert_close_bound(got, want, bound)
    limit = a.nbytes + b.nbytes + got.nbytes
    assert sum(allocations) <= limit, f"allocated {sum(allocations)} bytes ({allocations}); inputs + result = {limit}"



def test_user_broadcast_views_cost_their_data(device_backend, allocations):
    """Operands that are themselves broadcast views (np.broadcast_to: 2000 batches of one matrix)
    reach the kernels with batch stride 0: the device holds their data, not the view."""
    _skip_real_gpu(device_backend)
    rng = np.random.default_rng(6)
    a0, b = rand(rng, (1, 3, 256)), rand(rng, (256, 2))
    xp = xp_of(device_backend)
    to = Arrays(device_backend)
    a = xp.broadcast_to(to(a0), (2000, 3, 256))      # 6 MB as a view, 3 KB of data
    db = to(b)
    allocations.clear()
    got = to.host(po.matmul(a, db, backend=device_backend))
    want, bound = matmul_reference(np.broadcast_to(a0, (2000, 3, 256)), b)
    assert_close_bound(got, want, bound)
    limit = a0.nbytes + b.nbytes + got.nbytes
    assert sum(allocations) <= limit, f"allocated {sum(allocations)} bytes; data + result = {limit}"

def test_matmul_broadcast_launches_along_the_long_axis(device_backend, allocations, monkeypatch):
    """(100000, 1) x (1, 3) batches: the 100000 run is the kernels' batch (two gridDim.z chunks),
    the 3 are looped over: 6 launches, nothing materialized. Launches are recorded, not run."""
    _skip_real_gpu(device_backend)
    to = Arrays(device_backend)
    from pygpu_ops._runtime import device

    grids = []
    monkeypatch.setattr(device.Device, "launch", lambda self, kernel, launch, args: grids.append(launch.grid))
    a, b = np.ones((100000, 1, 1, 4), np.float32), np.ones((1, 3, 4, 1), np.float32)
    da, db = to(a), to(b)
    allocations.clear()
    got = po.matmul(da, db, backend=device_backend)
    assert got.shape == (100000, 3, 1, 1)
    assert len(grids) == 6 and sorted(g[2] for g in grids) == [34465] * 3 + [65535] * 3, grids
    limit = a.nbytes + b.nbytes + got.nbytes
    assert sum(allocations) <= limit, f"allocated {sum(allocations)} bytes; inputs + result = {limit}"


# -- the kernels' int dimensions ---------------------------------------------------------------
def _wide(backend, to, shape):
    """A float32 array of ones of ``shape`` as a broadcast view of one element (no memory)."""
    return xp_of(backend).broadcast_to(to(np.ones((1, 1), np.float32)), shape)


def test_gemm_dimensions_beyond_int_are_value_errors(backend, to, allocations):
    big = 2**31
    a, b = _wide(backend, to, (1, big)), _wide(backend, to, (big, 1))
    allocations.clear()
    with pytest.raises(ValueError, match=r"gemm: K \(columns of op\(a\)\) must be between 0 and 2147479552; got 2147483648"):
        po.gemm(a, b, backend=backend)
    with pytest.raises(ValueError, match=r"gemm: K \(columns of op\(a\)\) must be between"):
        po.gemm(_wide(backend, to, (big, 1)), b, trans_a=True, backend=backend)
    n = linalg.GEMM_DIM_MAX + 1      # fits a C int, but the kernels' indices run a tile past it
    with pytest.raises(ValueError, match=rf"gemm: N \(columns of op\(b\)\) must be between 0 and 2147479552; got {n}"):
        po.gemm(_wide(backend, to, (1, 1)), _wide(backend, to, (1, n)), backend=backend)
    with pytest.raises(ValueError, match=r"matmul: K \(a's last dimension\) must be between"):
        po.matmul(_wide(backend, to, (3, 1, big)), _wide(backend, to, (big, 1)), backend=backend)
    with pytest.raises(ValueError, match=r"matmul: N \(b's last dimension\) must be between"):
        po.matmul(_wide(backend, to, (1, 1)), _wide(backend, to, (2, 1, n)), backend=backend)
    assert max(allocations, default=0) < 1 << 20, f"allocated {max(allocations)} bytes before refusing"


def test_gemm_dimension_limit_is_inclusive():
    assert linalg.GEMM_DIM_MAX == 2**31 - 4096
    linalg.check_gemm_dims("gemm", {"K": linalg.GEMM_DIM_MAX, "N": 0})
    with pytest.raises(ValueError, match="K must be between 0 and 2147479552; got 2147479553"):
        linalg.check_gemm_dims("gemm", {"K": linalg.GEMM_DIM_MAX + 1})


# -- scalar parameters -------------------------------------------------------------------------
def test_alpha_beta_beyond_float64_are_value_errors(backend, to):
    a, b, c = to(np.ones((2, 3), np.float32)), to(np.ones((3, 4), np.float32)), to(np.ones((2, 4), np.float32))
    for name in ("alpha", "beta"):
        for huge in (10**400, -(10**400)):
            with pytest.raises(ValueError, match=rf"gemm: {name} must be a real number within float64's range"):
                po.gemm(a, b, c, backend=backend, **{name: huge})
    with pytest.raises(TypeError, match="alpha must be a real number"):
        po.gemm(a, b, alpha=1 + 2j, backend=backend)


def test_alpha_beta_round_to_the_dtype(backend, to):
    """1e39 is inf in float32 on every backend, without an overflow warning."""
    a, b, c = to(np.ones((2, 3), np.float32)), to(np.ones((3, 4), np.float32)), to(np.ones((2, 4), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = to.host(po.gemm(a, b, c, alpha=1e39, beta=-1e39, backend=backend))
        np.testing.assert_array_equal(got, np.full((2, 4), np.nan, np.float32))   # inf - inf
        got = to.host(po.gemm(a, b, c, alpha=1e39, beta=1.0, backend=backend))
        np.testing.assert_array_equal(got, np.full((2, 4), np.inf, np.float32))


@pytest.mark.parametrize("bad", ["False", "", 1, 0, None, 1.0, [True]])
def test_trans_flags_must_be_bools(backend, to, bad):
    a, b = to(np.ones((3, 3), np.float32)), to(np.ones((3, 3), np.float32))
    for name in ("trans_a", "trans_b"):
        with pytest.raises(TypeError, match=rf"gemm: {name} must be a bool; got"):
            po.gemm(a, b, backend=backend, **{name: bad})


def test_trans_flag_array_is_a_type_error_and_numpy_bool_works(backend, to):
    rng = np.random.default_rng(5)
    a, b = rand(rng, (4, 3)), rand(rng, (4, 5))
    with pytest.raises(TypeError, match="trans_a must be a bool; got ndarray"):
        po.gemm(to(a), to(b), trans_a=np.array([True, False]), backend=backend)
    got = to.host(po.gemm(to(a), to(b), trans_a=np.bool_(True), trans_b=np.bool_(False), backend=backend))
    want, bound = matmul_reference(a.T, b)
    assert_close_bound(got, want, bound)


# -- one answer on every backend ---------------------------------------------------------------
@pytest.mark.parametrize("alpha", [np.nan, np.inf, 2.0])
def test_gemm_k0_is_beta_c_whatever_alpha(backend, to, alpha):
    """An empty product: beta * c (zeros when beta == 0), alpha not applied (BLAS, torch.addmm)."""
    rng = np.random.default_rng(6)
    a, b, c = np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), rand(rng, (3, 4))
    got = to.host(po.gemm(to(a), to(b), to(c), alpha=alpha, beta=2.0, backend=backend))
    np.testing.assert_array_equal(got, np.float32(2.0) * c)
    got = to.host(po.gemm(to(a), to(b), to(c), alpha=alpha, beta=0.0, backend=backend))
    np.testing.assert_array_equal(got, np.zeros((3, 4), np.float32))
    out = to(np.full((3, 4), 7.0, np.float32))
    r = po.gemm(to(a), to(b), to(c[0]), alpha=alpha, beta=-1.0, out=out, backend=backend)
    assert r is out
    np.testing.assert_array_equal(to.host(out), np.broadcast_to(-c[0], (3, 4)))


def test_gemm_nan_alpha_with_k_is_nan(backend, to):
    a, b = to(np.ones((2, 3), np.float32)), to(np.ones((3, 4), np.float32))
    assert np.isnan(to.host(po.gemm(a, b, alpha=np.nan, backend=backend))).all()


def test_matrix_inputs_give_ndarrays(host_backend):
    backend_name = host_backend
    m = np_matrix([[1.0, -2.0, 0.5], [3.0, 4.0, -1.0]])
    c = np_matrix(np.ones((2, 2), np.float32))
    want = np.asarray(m, np.float64) @ np.asarray(m, np.float64).T
    for got in (po.gemm(m, m, trans_b=True, backend=backend_name),
                po.gemm(m, m, c, beta=0.5, trans_b=True, backend=backend_name),
                po.matmul(m, m.T, backend=backend_name)):
        assert type(got) is np.ndarray and got.shape == (2, 2)
    np.testing.assert_allclose(po.matmul(m, m.T, backend=backend_name), want, rtol=1e-6)


def test_c_that_broadcasts_past_the_result_is_refused(backend, to):
    """c must broadcast *to* (M, N): a (1, 2) c against a (1, 1) result is a ValueError naming c
    on every backend (NumPy's own broadcast error leaked out before)."""
    a = to(np.ones((1, 3), np.float32))
    b = to(np.ones((3, 1), np.float32))
    for shape in ((1, 2), (2, 1), (2,), (2, 2)):
        with pytest.raises(ValueError, match=r"gemm: c has shape .*expected one that broadcasts to \(1, 1\)"):
            po.gemm(a, b, to(np.ones(shape, np.float32)), beta=1.0, backend=backend)
    got = po.gemm(a, b, to(np.full((1,), 2.0, np.float32)), beta=1.0, backend=backend)   # (1,) does fit
    np.testing.assert_array_equal(to.host(got), [[5.0]])


def test_matmul_of_fortran_operands_is_c_contiguous(backend, to):
    a = np.asfortranarray(np.arange(36, dtype=np.float32).reshape(3, 2, 6, 1) * np.ones(3, np.float32))
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = to.host(po.matmul(to(a), to(b), backend=backend))
    assert y.flags.c_contiguous
    np.testing.assert_array_equal(y, np.matmul(a.astype(np.float64), b.astype(np.float64)))
