"""Static shared memory as the emulator measures it (``shared_size_bytes``), and CUDA's rule for
static + dynamic shared memory: 48 KiB per block unless the kernel opts in, at most 227 KiB."""

import numpy as np
import pytest

from pygpu_ops._runtime import emulator as emu
from pygpu_ops._runtime.emulator import _elf

KiB = 1024

SRC = r'''
#line 1 "smem.cu"
extern "C" __global__ void no_shared(float* out) { out[threadIdx.x] = 1.f; }

// 100 floats + 3 doubles: the doubles need 8-byte alignment, the floats are 400 bytes
extern "C" __global__ void two_arrays(float* out) {
    __shared__ float a[100];
    __shared__ double b[3];
    a[threadIdx.x] = (float)threadIdx.x;
    if (threadIdx.x < 3) b[threadIdx.x] = 2.0 * threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = a[99 - threadIdx.x] + (float)b[threadIdx.x % 3];
}

// __shared__ inside __device__ helpers counts for the kernels that use them, inlined or not
__device__ __forceinline__ float inlined_helper(float v) {
    __shared__ float h[64];
    h[threadIdx.x] = v;
    h[threadIdx.x + 32] = v + 100.f;
    __syncthreads();
    return h[63 - threadIdx.x];
}
__device__ __noinline__ float called_helper(float v) {
    __shared__ int c[32];
    c[threadIdx.x % 32] = (int)v;
    __syncthreads();
    return (float)c[31 - threadIdx.x % 32];
}
__device__ __noinline__ float outer_helper(float v) { return called_helper(v) + 1.f; }
extern "C" __global__ void uses_helpers(float* out) {
    __shared__ char own[3];
    if (threadIdx.x == 0) own[0] = 1;
    __syncthreads();
    out[threadIdx.x] = inlined_helper((float)threadIdx.x) + outer_helper(2.f) + own[0];
}

// a file-scope __shared__ variable counts for the kernels that use it
__shared__ float file_scope[48];
extern "C" __global__ void uses_file_scope(float* out) {
    file_scope[threadIdx.x] = 1.f;
    __syncthreads();
    out[threadIdx.x] = file_scope[47 - threadIdx.x];
}

template <typename T, int N>
__global__ void tmpl(T* out) {
    __shared__ T s[N];
    s[threadIdx.x % N] = (T)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[(threadIdx.x + 1) % N];
}

// static + dynamic: 4 KiB static, the rest from the launch
extern "C" __global__ void static_4k_plus_dynamic(float* out, int n) {
    __shared__ float fixed[1024];
    extern __shared__ float dyn[];
    for (int i = threadIdx.x; i < 1024; i += blockDim.x) fixed[i] = 1.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) dyn[i] = 2.f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
        for (int i = 0; i < 1024; ++i) s += fixed[i];
        for (int i = 0; i < n; ++i) s += dyn[i];
        out[0] = s;
    }
}
'''
NAMES = ["tmpl<float, 10>", "tmpl<double, 64>", "tmpl<unsigned char, 5>"]


@pytest.fixture(scope="module")
def mod():
    return emu.RawModule(code=SRC, name_expressions=NAMES, name="smem.cu")


@pytest.mark.parametrize("name,expected", [
    ("no_shared", 0),
    ("two_arrays", 3 * 8 + 100 * 4),
    ("uses_helpers", 64 * 4 + 32 * 4 + 3),  # own + inlined helper + helper called through another
    ("uses_file_scope", 48 * 4),
    ("tmpl<float, 10>", 40),
    ("tmpl<double, 64>", 512),
    ("tmpl<unsigned char, 5>", 5),
    ("static_4k_plus_dynamic", 4096),
])
def test_shared_size_bytes_is_measured(mod, name, expected):
    fn = mod.get_function(name)
    assert fn.shared_size_bytes == expected
    assert fn.attributes["shared_size_bytes"] == expected
    # CUDA's default for the opt-in attribute: what the static part leaves of 48 KiB
    assert fn.max_dynamic_shared_size_bytes == 48 * KiB - expected


def test_kernels_using_helpers_still_run(mod):
    out = emu.empty(32, np.float32)
    mod.get_function("uses_helpers")(1, 32, (out,))
    t = np.arange(32)
    # h[63 - t] was written by thread 31 - t as (31 - t) + 100; called_helper(2) + 1 = 3; own = 1
    np.testing.assert_array_equal(out, (135 - t).astype(np.float32))


def _launch_4k(fn, dyn_bytes):
    n = dyn_bytes // 4
    out = emu.empty(1, np.float32)
    fn(1, 256, (out, np.int32(n)), shared_mem=dyn_bytes)
    assert out[0] == 1024 + 2 * n


def test_static_plus_dynamic_above_48k_needs_the_opt_in(mod):
    fn = mod.get_function("static_4k_plus_dynamic")
    try:
        _launch_4k(fn, 44 * KiB)  # 4 KiB + 44 KiB = 48 KiB: no opt-in needed
        with pytest.raises(emu.LaunchError, match=r"4096 bytes of static shared memory that makes "
                                                  r"49156 bytes per block.*without opting in"):
            _launch_4k(fn, 44 * KiB + 4)
        fn.max_dynamic_shared_size_bytes = 44 * KiB + 4
        _launch_4k(fn, 44 * KiB + 4)
        with pytest.raises(emu.LaunchError, match="the kernel opted in to"):
            _launch_4k(fn, 44 * KiB + 8)
        # the opt-in is bounded by 227 KiB for static + dynamic
        fn.max_dynamic_shared_size_bytes = 223 * KiB
        _launch_4k(fn, 223 * KiB)
        with pytest.raises(emu.LaunchError, match=r"outside \[0, 228352\].*4096 bytes of static"):
            fn.max_dynamic_shared_size_bytes = 223 * KiB + 4
        with pytest.raises(emu.LaunchError, match="outside"):
            fn.max_dynamic_shared_size_bytes = -1
        with pytest.raises(TypeError, match="must be an int"):
            fn.max_dynamic_shared_size_bytes = 1024.0
    finally:
        fn.max_dynamic_shared_size_bytes = 44 * KiB
    assert fn.max_dynamic_shared_size_bytes == 44 * KiB


def test_static_shared_memory_above_48k_does_not_compile():
    src = r'''extern "C" __global__ void too_big(float* o) {
        __shared__ float s[12289];
        s[threadIdx.x] = 1.f;
        o[threadIdx.x] = s[threadIdx.x];
    }'''
    with pytest.raises(emu.CompileError, match=r"'too_big' declares 49156 bytes of static shared "
                                               r"memory, more than the 49152"):
        emu.RawModule(code=src, name="too_big.cu")
    exactly = emu.RawModule(code=src.replace("12289", "12288"), name="exactly_48k.cu")
    assert exactly.get_function("too_big").shared_size_bytes == 48 * KiB
    assert exactly.get_function("too_big").max_dynamic_shared_size_bytes == 0


def test_missing_analysis_rebuilds_the_module(tmp_path, monkeypatch):
    """A cached library without its shared-memory sidecar (e.g. deleted) is built again rather
    than loaded with unknown static shared memory."""
    from pygpu_ops._runtime.emulator import _build, _module

    monkeypatch.setenv("PYGPU_OPS_CACHE_DIR", str(tmp_path))
    code = SRC + "\n// sidecar test\n"
    emu.RawModule(code=code, name_expressions=NAMES, name="smem.cu")
    (sidecar,) = (tmp_path / "emulator").glob("mod-*.json")
    sidecar.unlink()
    monkeypatch.setattr(_module, "_modules", {})
    before = _build.compile_count
    m = emu.RawModule(code=code, name_expressions=NAMES, name="smem.cu")
    assert _build.compile_count == before + 1 and sidecar.exists()
    assert m.get_function("two_arrays").shared_size_bytes == 424


def test_elf_reader_rejects_other_files(tmp_path):
    p = tmp_path / "x.o"
    p.write_bytes(b"not an ELF file at all")
    with pytest.raises(ValueError, match="not a 64-bit little-endian ELF"):
        _elf.function_shared_sizes(p)
