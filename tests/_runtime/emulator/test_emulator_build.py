"""Emulator plumbing: compilation, build cache, device memory, misc faults."""

import gc
import subprocess
import threading
import uuid

import numpy as np
import pytest

from pygpu_ops._runtime import emulator as emu
from pygpu_ops._runtime.emulator import _build, _module
from pygpu_ops._runtime.emulator.testing import run_under_seeds

MISC_SRC = r'''
#line 1 "misc.cu"
#ifndef SCALE
#error SCALE must be defined
#endif
extern "C" __global__ void scaled_copy(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * SCALE;
}
extern "C" __global__
void smem_roundtrip(float* out) {
    __shared__ float s[128];
    s[threadIdx.x] = threadIdx.x * 2.0f;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}
__device__ int deep(int n) {
    volatile char buf[4096];
    buf[0] = (char)n;
    return n ? deep(n - 1) + buf[0] : 0;
}
extern "C" __global__ void recurse(int* out, int n) { out[0] = deep(n); }
__device__ int deeper(int n) {
    volatile char buf[20000];   // a frame of almost five pages: it must not step over the guard page
    buf[0] = (char)n;
    return n ? deeper(n - 1) + buf[0] : 0;
}
extern "C" __global__ void recurse_big(int* out, int n) { out[0] = deeper(n); }
extern "C" __global__ void divide(const int* a, int* out, int d) { out[0] = a[0] / d; }
extern "C" __global__ void spin_until_flag(int* out) {
    __shared__ volatile int flag;
    if (threadIdx.x == 0) flag = 0;
    __syncthreads();
    if (threadIdx.x == 1) flag = 1;
    else while (flag == 0) __nanosleep(10);
    out[threadIdx.x] = flag;
}
extern "C" {
__global__ void shfl_outside_mask(float* out) {
    float v = 0.f;
    if (threadIdx.x < 16) v = __shfl_sync(0x0000ffffu, (float)threadIdx.x, 20);
    out[threadIdx.x] = v;
}
__global__ void mismatched_collectives(float* out) {
    if (threadIdx.x < 16) __syncwarp();
    else out[0] = (float)__ballot_sync(0xffffffffu, 1);
}
__global__ void fill_sized(float* out, size_t n, float v) {
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = v;
}
}
extern "C" __global__ void spin_forever(int* flag) {
    while (*(volatile int*)flag == 0) {
    }
}
extern "C" __global__ void chain(float* x) {
    // bug: block i depends on block i-1 having run first
    if (threadIdx.x == 0) x[blockIdx.x + 1] = x[blockIdx.x] + 1.f;
}
struct Params { float a; int b; };
extern "C" __global__ void with_struct(Params p, float* out) { out[0] = p.a * p.b; }
'''


@pytest.fixture(scope="module")
def misc():
    return emu.RawModule(code=MISC_SRC, options=("-DSCALE=3", "-arch=sm_90", "-lineinfo",
                                                 "--use_fast_math", "-std=c++17"))


def test_extern_c_kernels_without_name_expressions_and_defines(misc):
    x = np.arange(100, dtype=np.float32)
    y = emu.empty(100, np.float32)
    misc.get_function("scaled_copy")((4,), (32,), (emu.to_device(x), y, np.int32(100)))
    np.testing.assert_array_equal(y, x * 3)


def test_compile_error_reports_original_file_and_line():
    code = ('#line 1 "ops/good.cuh"\n__device__ int ok() { return 1; }\n'
            '#line 7 "ops/broken.cu"\n'
            'extern "C" __global__ void k(float* x) {\n  x[0] = undefined_thing;\n}\n')
    with pytest.raises(emu.CompileError) as e:
        emu.RawModule(code=code, name="ops/broken.cu")
    msg = str(e.value)
    assert "ops/broken.cu:8:" in msg and "undefined_thing" in msg


def test_compile_error_without_line_directive_uses_name():
    with pytest.raises(emu.CompileError, match=r"mykernels\.cu:3:"):
        emu.RawModule(code="\n\n__global__ void k() { nope(); }\n", name="mykernels.cu",
                      name_expressions=["k"])


def test_build_cache_reuses_shared_object(tmp_path, monkeypatch):
    monkeypatch.setenv("PYGPU_OPS_CACHE_DIR", str(tmp_path))
    code = f'// {uuid.uuid4()}\nextern "C" __global__ void k(int* x) {{ x[threadIdx.x] = 7; }}\n'
    before = _build.compile_count
    emu.RawModule(code=code)
    assert _build.compile_count == before + 1
    files = sorted(p.name for p in (tmp_path / "emulator").iterdir())
    assert any(f.startswith("mod-") and f.endswith(".so") for f in files)
    # Forget the in-process module cache: the next construction must load the
    # .so from disk without running the compiler.
    monkeypatch.setattr(_module, "_modules", {})

    def no_compiler(*a, **k):
        raise AssertionError("the compiler was invoked although the module is cached")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    mod = emu.RawModule(code=code)
    assert _build.compile_count == before + 1
    assert sorted(p.name for p in (tmp_path / "emulator").iterdir()) == files
    x = emu.empty(4, np.int32)
    mod.get_function("k")(1, 4, (x,))
    assert list(x) == [7] * 4


def test_device_memory():
    a = emu.empty((3, 5), np.float32)
    assert a.shape == (3, 5) and a.dtype == np.float32 and a.flags.c_contiguous
    assert np.isnan(a).all() and (a.view(np.uint32) == 0xFFFFFFFF).all()
    assert emu.is_device_array(a) and emu.is_device_array(a[1:, ::2])
    assert emu.is_device_array(np.frombuffer(a, dtype=np.uint8))
    assert not emu.is_device_array(np.zeros(3)) and not emu.is_device_array(a.copy())
    assert not emu.is_device_array([1, 2])
    h = np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]
    d = emu.to_device(h)
    assert d.flags.c_contiguous and emu.is_device_array(d)
    np.testing.assert_array_equal(d, h)
    z = emu.zeros(7, np.float64)
    assert (z == 0).all()
    assert emu.empty(0, np.float32).size == 0
    gc.collect()
    n = emu.live_buffer_count()
    bufs = [emu.empty(100, np.float32) for _ in range(10)]
    view = bufs[0][3:]
    assert emu.live_buffer_count() == n + 10
    del bufs
    gc.collect()
    assert emu.live_buffer_count() == n + 1  # the view keeps its buffer alive
    del view
    gc.collect()
    assert emu.live_buffer_count() == n


def test_static_shared_memory_from_another_os_thread(misc):
    results = {}

    def work(k):
        out = emu.empty(2 * 128, np.float32)
        for _ in range(3):
            misc.get_function("smem_roundtrip")((2,), (128,), (out,))
        results[k] = out.copy()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expect = np.tile((127 - np.arange(128)) * 2.0, 2)
    for k in range(3):
        np.testing.assert_array_equal(results[k], expect)


@pytest.mark.parametrize("kernel", ["recurse", "recurse_big"])
def test_stack_overflow_is_an_error(misc, kernel):
    out = emu.empty(1, np.int32)
    with pytest.raises(emu.KernelError, match="stack overflow"):
        misc.get_function(kernel)(1, 2, (out, np.int32(1000)))
    misc.get_function(kernel)(1, 2, (out, np.int32(3)))
    assert out[0] == 3 + 2 + 1


def test_integer_division_by_zero_is_an_error(misc):
    a, out = emu.to_device(np.array([7], np.int32)), emu.empty(1, np.int32)
    with pytest.raises(emu.KernelError, match=r"divide'.*thread \(0,0,0\).*division"):
        misc.get_function("divide")(1, 1, (a, out, np.int32(0)))
    misc.get_function("divide")(1, 1, (a, out, np.int32(2)))
    assert out[0] == 3


def test_nanosleep_yields_to_other_threads(misc):
    out = emu.empty(8, np.int32)
    misc.get_function("spin_until_flag")(1, 8, (out,))
    assert list(out) == [1] * 8


def test_struct_argument(misc):
    import ctypes

    class Params(ctypes.Structure):
        _fields_ = [("a", ctypes.c_float), ("b", ctypes.c_int)]

    out = emu.empty(1, np.float32)
    fn = misc.get_function("with_struct")
    fn(1, 1, (Params(1.5, 4), out))
    assert out[0] == 6.0
    with pytest.raises(TypeError, match="argument 0 .*8 bytes"):
        fn(1, 1, (b"\0" * 4, out))


def test_run_under_seeds_reports_first_difference():
    calls = iter([np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, 3.0])])
    with pytest.raises(AssertionError, match=r"seeds 1 and 2: output 0 first differs at "
                                             r"index \(1,\)"):
        run_under_seeds(lambda: next(calls))
    same = run_under_seeds(lambda: (np.array([np.nan]), np.arange(3)), seeds=(3, 4, 5))
    assert len(same) == 2


def test_shuffle_from_lane_outside_mask(misc):
    with pytest.raises(emu.DeadlockError, match=r"reads from lane 20, which is not in the mask"):
        misc.get_function("shfl_outside_mask")(1, 32, (emu.empty(32, np.float32),))


def test_lanes_in_different_collectives(misc):
    with pytest.raises(emu.DeadlockError, match=r"different warp collectives"):
        misc.get_function("mismatched_collectives")(1, 32, (emu.empty(1, np.float32),))


def test_size_t_parameter(misc):
    out = emu.empty(50, np.float32)
    fn = misc.get_function("fill_sized")
    fn(1, 32, (out, np.uint64(50), np.float32(2)))
    fn(1, 32, (out, np.int64(50), np.float32(3)))
    assert (out == 3).all()
    with pytest.raises(TypeError, match=r"argument 1 \(C type 'long unsigned int'\)"):
        fn(1, 32, (out, np.int32(50), np.float32(3)))


def test_timeout_turns_a_hang_into_an_error(misc):
    flag = emu.to_device(np.zeros(1, np.int32))
    old = emu.get_timeout()
    emu.set_timeout(0.3)
    try:
        with pytest.raises(emu.KernelError, match=r"spin_forever'.*did not finish within 0.3 s"):
            misc.get_function("spin_forever")(1, 4, (flag,))
    finally:
        emu.set_timeout(old)
    flag[0] = 1
    misc.get_function("spin_forever")(1, 4, (flag,))


def test_raw_kernel():
    k = emu.RawKernel(r'''
template <int N> __global__ void addn(int* x) { x[threadIdx.x] += N; }
extern "C" __global__ void twice(int* x) { x[threadIdx.x] *= 2; }''', "addn<5>")
    x = emu.to_device(np.arange(4, dtype=np.int32))
    k(1, 4, (x,))
    emu.RawKernel(k.module.code, "twice")(1, 4, (x,))
    assert list(x) == [10, 12, 14, 16]


def test_block_order_dependence_is_detected(misc):
    def run():
        x = emu.empty(33, np.float32)
        x[0] = 0
        misc.get_function("chain")(32, 32, (x,))
        return x

    with pytest.raises(AssertionError, match="differ between seeds"):
        run_under_seeds(run)
