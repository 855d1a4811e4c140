"""Behaviour of the CUDA emulator on small kernels (emu_test_kernels.cu)."""

import re
from pathlib import Path

import numpy as np
import pytest

from pygpu_ops._runtime import emulator as emu
from pygpu_ops._runtime.emulator.testing import run_under_seeds

SRC = (Path(__file__).parent / "emu_test_kernels.cu").read_text()
NAMES = [
    "matmul_tiled<true, true>", "matmul_tiled<false, true>", "matmul_tiled<true, false>",
    "fill_k<float, 4>", "fill_k<double, 2>", "bounded_t<float, 2>",
]

i32, i64, f32 = np.int32, np.int64, np.float32


@pytest.fixture(scope="module")
def mod():
    return emu.RawModule(code=SRC, options=("-std=c++17", "-lineinfo", "--use_fast_math"),
                         name_expressions=NAMES, name="emu_test_kernels.cu")


def _matmul(fn, a, b):
    M, K = a.shape
    N = b.shape[1]
    A, B = emu.to_device(a), emu.to_device(b)
    C = emu.empty((M, N), np.float32)
    fn(((N + 15) // 16, (M + 15) // 16), (16, 16), (A, B, C, i32(M), i32(N), i32(K)))
    return C


def _inputs(M=48, N=40, K=64):
    rng = np.random.default_rng(0)
    # small integers: every summation order gives the exact result
    a = rng.integers(-4, 5, (M, K)).astype(np.float32)
    b = rng.integers(-4, 5, (K, N)).astype(np.float32)
    return a, b


# --- shared memory, barriers, races -------------------------------------------------

def test_tiled_matmul_correct_and_seed_independent(mod):
    fn = mod.get_function("matmul_tiled<true, true>")
    a, b = _inputs()
    c = run_under_seeds(lambda: _matmul(fn, a, b), seeds=(1, 2))
    np.testing.assert_array_equal(c, a @ b)


@pytest.mark.parametrize("name", ["matmul_tiled<false, true>", "matmul_tiled<true, false>"])
def test_missing_syncthreads_is_detected(mod, name):
    fn = mod.get_function(name)
    a, b = _inputs()
    with pytest.raises(AssertionError, match=r"seeds 1 and 2"):
        run_under_seeds(lambda: _matmul(fn, a, b), seeds=(1, 2))


def test_default_seed_is_reproducible(mod):
    fn = mod.get_function("matmul_tiled<true, false>")  # racy: result depends on the order
    a, b = _inputs()
    r1 = _matmul(fn, a, b).tobytes()
    r2 = _matmul(fn, a, b).tobytes()
    assert r1 == r2
    with emu.seed(7):
        assert emu.get_seed() == 7
    assert emu.get_seed() == 0


def test_early_return_before_syncthreads_deadlocks(mod):
    out = emu.empty(64, np.float32)
    with pytest.raises(emu.DeadlockError) as e:
        mod.get_function("early_return")((2,), (64,), (out, i32(60)))
    msg = str(e.value)
    assert "early_return" in msg and re.search(r"block \([01],0,0\)", msg)
    assert "thread (6" in msg and "exited" in msg and "__syncthreads" in msg


def test_uninitialized_shared_memory_reads_nan(mod):
    out = emu.empty(3 * 64, np.float32)
    mod.get_function("uninit_smem")((3,), (64,), (out,))
    out = out.reshape(3, 64)
    np.testing.assert_array_equal(out[:, :32], np.array([[1.0], [2.0], [3.0]]) + 0 * out[:, :32])
    assert np.isnan(out[:, 32:]).all()  # poisoned again before every block


# --- warp collectives ----------------------------------------------------------------

def test_full_mask_shuffle_in_divergent_branch_deadlocks(mod):
    out = emu.empty(32, np.float32)
    with pytest.raises(emu.DeadlockError) as e:
        mod.get_function("divergent_shfl")((1,), (32,), (out,))
    msg = str(e.value)
    assert "__shfl_xor_sync(mask=0xffffffff)" in msg and "has exited" in msg
    assert "block (0,0,0), thread (" in msg


def test_shuffle_from_missing_lane_of_partial_warp(mod):
    out = emu.empty(48, np.float32)
    with pytest.raises(emu.DeadlockError, match="does not exist"):
        mod.get_function("partial_warp_shfl")((1,), (48,), (out,))


def test_warp_reductions_match_numpy(mod):
    n = 128
    x = np.random.default_rng(1).integers(-50, 50, n).astype(np.float32)
    X = emu.to_device(x)
    down, xor16, up8 = emu.empty(n // 32, f32), emu.empty(n, f32), emu.empty(n, f32)
    idx4 = emu.empty(n, np.int32)
    mod.get_function("warp_reduce")((2,), (64,), (X, down, xor16, up8, idx4))
    np.testing.assert_array_equal(down, x.reshape(-1, 32).sum(1))
    np.testing.assert_array_equal(xor16, np.repeat(x.reshape(-1, 16).sum(1), 16))
    np.testing.assert_array_equal(up8, np.cumsum(x.reshape(-1, 8), axis=1).reshape(-1))
    tid = np.arange(n) % 64
    np.testing.assert_array_equal(idx4, ((tid & ~3) + 3) * 10)


def test_shuffle_value_types(mod):
    d, ll = emu.empty(32, np.float64), emu.empty(32, np.int64)
    ull, u = emu.empty(32, np.uint64), emu.empty(32, np.uint32)
    mod.get_function("shfl_types")((1,), (32,), (d, ll, ull, u))
    t = np.arange(32)
    np.testing.assert_array_equal(d, (t ^ 1) + 0.25)
    src = np.minimum(t + 1, 31)
    np.testing.assert_array_equal(ll, (src.astype(np.int64) << 33) - 5)
    np.testing.assert_array_equal(ull, (31 - t).astype(np.uint64) << np.uint64(40))
    np.testing.assert_array_equal(u, np.where(t >= 2, t - 2, t) * 3)


def test_ballot_any_all_with_partial_warp(mod):
    pred = np.zeros(48, np.int32)
    pred[[0, 5, 31]] = 1
    pred[32:48] = 1  # second warp: 16 lanes, all true
    P = emu.to_device(pred)
    ballot, anyv = emu.empty(2, np.uint32), emu.empty(2, np.int32)
    allv, active = emu.empty(2, np.int32), emu.empty(2, np.uint32)
    mod.get_function("vote")((1,), (48,), (P, ballot, anyv, allv, active))
    assert list(ballot) == [(1 << 0) | (1 << 5) | (1 << 31), 0xFFFF]
    assert list(anyv) == [1, 1]
    assert list(allv) == [0, 1]
    # __activemask(): the lanes that have not exited (here: lane 0 and any lane
    # the scheduler has not finished yet)
    assert active[0] & 1 and active[1] & 1 and active[1] <= 0xFFFF


def test_block_votes_and_warp_reduce(mod):
    pred = (np.arange(32) % 3 == 0).astype(np.int32)
    out = emu.empty(6, np.int32)
    mod.get_function("block_votes")((1,), (32,), (emu.to_device(pred), out))
    c = int(pred.sum())
    match = int(sum(1 << i for i in range(32) if pred[i] == pred[0]))
    assert list(out[:5]) == [c, 0, 1, c, 30]
    assert np.uint32(out[5]) == match


# --- global memory checks ------------------------------------------------------------

def test_read_one_past_the_end(mod):
    x = emu.to_device(np.arange(64, dtype=np.float32))  # 256 bytes: ends at the guard page
    out = emu.empty(1, np.float32)
    fn = mod.get_function("read_at")
    fn(1, 1, (x, out, i64(63)))
    assert out[0] == 63
    with pytest.raises(emu.OutOfBoundsError) as e:
        fn(1, 1, (x, out, i64(64)))
    msg = str(e.value)
    assert "read_at" in msg and "block (0,0,0), thread (0,0,0)" in msg
    assert "0 bytes past the end of device buffer float32[64]" in msg


def test_write_one_before_the_start_canary(mod):
    x = emu.to_device(np.zeros(64, dtype=np.float32))
    with pytest.raises(emu.OutOfBoundsError) as e:
        mod.get_function("write_at")(1, 32, (x, i64(-1), f32(1.0)))
    msg = str(e.value)
    assert "write_at" in msg and "4 bytes before the start of device buffer float32[64]" in msg
    # reported once; the buffer itself was not touched
    mod.get_function("write_at")(1, 32, (x, i64(0), f32(5.0)))
    assert x[0] == 5.0


def test_write_before_the_start_guard_page(mod):
    x = emu.to_device(np.zeros(1024, dtype=np.float32))  # 4096 bytes: starts at a page
    with pytest.raises(emu.OutOfBoundsError) as e:
        mod.get_function("write_at")((2,), (32,), (x, i64(-2), f32(1.0)))
    msg = str(e.value)
    assert re.search(r"block \([01],0,0\), thread \(3,0,0\)", msg) and "write" in msg
    assert "8 bytes before the start of device buffer float32[1024]" in msg


def test_emulator_keeps_working_after_faults(mod):
    test_read_one_past_the_end(mod)
    test_early_return_before_syncthreads_deadlocks(mod)
    test_tiled_matmul_correct_and_seed_independent(mod)


def test_device_assert(mod):
    x = emu.to_device(np.array([0, 1, -1, 2], np.int32))
    with pytest.raises(emu.KernelError, match=r"thread \(2,0,0\).*assertion failed"):
        mod.get_function("device_assert")(1, 4, (x,))


# --- arguments -----------------------------------------------------------------------

def test_argument_type_errors(mod):
    fn = mod.get_function("write_at")
    x = emu.empty(8, np.float32)
    with pytest.raises(TypeError, match=r"'write_at'.*argument 2 \(C type 'float'\).*"
                                        r"numpy.float32.*Python float"):
        fn(1, 1, (x, i64(0), 1.5))
    with pytest.raises(TypeError, match=r"argument 1 \(C type 'long long int'\).*numpy.int64"):
        fn(1, 1, (x, 0, f32(1)))
    with pytest.raises(TypeError, match=r"argument 1 .*numpy.int64.*numpy.int32"):
        fn(1, 1, (x, i32(0), f32(1)))
    with pytest.raises(TypeError, match=r"argument 0 \(C type 'float\*'\).*float32.*float64"):
        fn(1, 1, (emu.empty(8, np.float64), i64(0), f32(1)))
    with pytest.raises(TypeError, match=r"argument 0 .*not in emulator device memory"):
        fn(1, 1, (np.zeros(8, np.float32), i64(0), f32(1)))
    with pytest.raises(TypeError, match=r"takes 3 argument"):
        fn(1, 1, (x, i64(0)))


def test_unknown_kernel_name(mod):
    with pytest.raises(KeyError, match=r"no kernel 'nope'.*'matmul_tiled<true, true>'"):
        mod.get_function("nope")


# --- launch configuration ------------------------------------------------------------

def test_launch_config_errors(mod):
    fn = mod.get_function("scale4")
    x = emu.empty(4, np.float32)
    args = (x, x, f32(1), i32(0))
    with pytest.raises(emu.LaunchError, match="1025 threads"):
        fn(1, 1025, args)
    with pytest.raises(emu.LaunchError, match="block dimensions"):
        fn(1, (1, 1, 65), args)
    with pytest.raises(emu.LaunchError, match="grid dimensions"):
        fn((1, 65536), 1, args)
    with pytest.raises(emu.LaunchError, match="dimension < 1"):
        fn(0, 32, args)
    b = mod.get_function("bounded")
    assert b.max_threads_per_block == 128 and b.attributes["max_threads_per_block"] == 128
    with pytest.raises(emu.LaunchError, match="__launch_bounds__"):
        b(1, 256, (emu.empty(256, np.float32),))
    assert mod.get_function("bounded_t<float, 2>").max_threads_per_block == 64
    assert mod.get_function("scale4").max_threads_per_block == 1024


def test_dynamic_shared_memory_limit(mod):
    n = 16384  # 64 KiB of floats
    x = np.arange(n, dtype=np.float32) % 7
    X, out = emu.to_device(x), emu.empty(1, np.float32)
    fn = mod.get_function("dyn_smem_sum")
    assert fn.max_dynamic_shared_size_bytes == 48 * 1024
    with pytest.raises(emu.LaunchError, match="max_dynamic_shared_size_bytes"):
        fn(1, 256, (X, out, i32(n)), shared_mem=n * 4)
    try:
        fn.max_dynamic_shared_size_bytes = n * 4
        assert fn.attributes["max_dynamic_shared_size_bytes"] == n * 4
        # the attribute belongs to the kernel, as cuFuncSetAttribute's does
        assert mod.get_function("dyn_smem_sum").max_dynamic_shared_size_bytes == n * 4
        fn(1, 256, (X, out, i32(n)), shared_mem=n * 4)
        assert out[0] == x.sum()
        with pytest.raises(emu.LaunchError):
            fn.max_dynamic_shared_size_bytes = 228 * 1024
    finally:
        fn.max_dynamic_shared_size_bytes = 48 * 1024
    # beyond the requested dynamic shared memory
    with pytest.raises(emu.OutOfBoundsError, match="dynamic shared memory"):
        fn(1, 256, (X, out, i32(2048)), shared_mem=4096)


def test_static_and_dynamic_shared_memory(mod):
    out = emu.empty(34, np.float32)
    mod.get_function("static_and_dynamic")(1, 32, (out,), shared_mem=256)
    t = np.arange(32)
    np.testing.assert_array_equal(out[:32], (31 - t) + 100 + (31 - t))
    assert out[32] == 1.0 and np.isnan(out[33])


# --- atomics, intrinsics, vector types, templates -----------------------------------

def test_atomics_across_blocks(mod):
    fsum, isum = emu.to_device(np.zeros(1, f32)), emu.to_device(np.zeros(2, np.int32))
    umax, imin = emu.to_device(np.zeros(1, np.uint32)), emu.to_device(np.zeros(1, np.int32))
    ucount, dsum = emu.to_device(np.zeros(1, np.uint64)), emu.to_device(np.zeros(1, np.float64))
    cas = emu.to_device(np.array([-1, 0], np.int32))
    nb, nt = 5, 96
    mod.get_function("atomics")((nb,), (nt,), (fsum, isum, umax, imin, ucount, dsum, cas))
    n = nb * nt
    assert fsum[0] == n and isum[0] == n * (n - 1) // 2 and isum[1] == n
    assert umax[0] == n - 1 and imin[0] == -(n - 1)
    assert ucount[0] == n and dsum[0] == n / 2
    assert 0 <= cas[0] < n and cas[1] == 1


def test_dp4a(mod):
    rng = np.random.default_rng(3)
    a8 = rng.integers(-128, 128, (32, 4)).astype(np.int8)
    b8 = rng.integers(-128, 128, (32, 4)).astype(np.int8)
    c = rng.integers(-1000, 1000, 32).astype(np.int32)
    ua8 = rng.integers(0, 256, (32, 4)).astype(np.uint8)
    ub8 = rng.integers(0, 256, (32, 4)).astype(np.uint8)
    out, uout = emu.empty(32, np.int32), emu.empty(32, np.uint32)
    mod.get_function("dp4a_kernel")(1, 32, (
        emu.to_device(a8.view(np.int32).ravel()), emu.to_device(b8.view(np.int32).ravel()),
        emu.to_device(c), out, emu.to_device(ua8.view(np.uint32).ravel()),
        emu.to_device(ub8.view(np.uint32).ravel()), uout))
    np.testing.assert_array_equal(out, (a8.astype(np.int32) * b8).sum(1) + c)
    np.testing.assert_array_equal(uout, (ua8.astype(np.uint32) * ub8).sum(1) + 7)


def test_float4_vector_loads_and_stores(mod):
    x = np.arange(64, dtype=np.float32)
    y = emu.empty(64, np.float32)
    mod.get_function("scale4")((1,), (32,), (emu.to_device(x), y, f32(3.0), i32(16)))
    np.testing.assert_array_equal(y, x * 3)


def test_template_name_expressions(mod):
    out = emu.empty(8, np.float32)
    mod.get_function("fill_k<float, 4>")(1, 8, (out, f32(1.5)))
    np.testing.assert_array_equal(out, 1.5 + 4 * np.arange(8))
    outd = emu.empty(8, np.float64)
    fd = mod.get_function("fill_k<double, 2>")
    with pytest.raises(TypeError, match="numpy.float64"):
        fd(1, 8, (outd, f32(1.5)))
    fd(1, 8, (outd, np.float64(0.5)))
    np.testing.assert_array_equal(outd, 0.5 + 2 * np.arange(8))


def test_math_functions(mod):
    x = np.array([0.25, 1.0, 1.7, 4.0, 9.0, 0.5, 2.2, 3.0], np.float32)
    out = emu.empty(64, np.float32)
    mod.get_function("math_funcs")(1, 8, (emu.to_device(x), out))
    o = out.reshape(8, 8)
    i = np.arange(8)
    np.testing.assert_allclose(o[:, 0], 1 / np.sqrt(x), rtol=1e-6)
    np.testing.assert_allclose(o[:, 1], np.exp(x), rtol=1e-6)
    np.testing.assert_array_equal(o[:, 2], np.maximum(x, 1.5))
    np.testing.assert_array_equal(o[:, 3], np.minimum(i, 3).astype(f32) + np.maximum(x, f32(2)))
    np.testing.assert_array_equal(o[:, 4], np.clip(x - 1, 0, 1))
    np.testing.assert_array_equal(o[:, 5], np.rint(x * np.float32(2.5)))
    np.testing.assert_array_equal(o[:, 6], x)
    clz = np.array([32 - int(v).bit_length() for v in i])
    ffs = np.array([(int(v) & -int(v)).bit_length() for v in i])
    popc = np.array([bin(v).count("1") for v in i])
    np.testing.assert_array_equal(o[:, 7], popc + clz + ffs)
