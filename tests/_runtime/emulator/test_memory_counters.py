"""The emulator's memory counters on microkernels whose answers are known by hand.

Global: requests and 32-byte sectors per warp-level instruction.  Shared: requests and
wavefronts (max over the 32 banks of the distinct 4-byte words in a bank; 64-bit accesses in two
half-warp phases and 128-bit ones in four quarter-warp phases, merged when every lane's partner
lane i^1 or i^2 reads the same address).
"""

import numpy as np
import pytest

from pygpu_ops._runtime import emulator as emu

SRC = r'''
#line 1 "counters.cu"
extern "C" __global__ void copy32(const float* a, float* b, int stride) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    b[i] = a[(long long)i * stride];
}
extern "C" __global__ void copy64(const float2* a, float2* b) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    b[i] = a[i];
}
extern "C" __global__ void copy128(const float4* a, float4* b) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    b[i] = a[i];
}
// only the even lanes store: half the lanes active, still one request per warp
extern "C" __global__ void even_lanes(const float* a, float* b) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i % 2 == 0) b[i] = a[i];
}
// lane i runs the loop i % 4 + 1 times: requests follow the lanes still in the loop
extern "C" __global__ void ragged_loop(const float* a, float* b) {
    float s = 0.f;
    for (int k = 0; k <= (int)threadIdx.x % 4; k++) s += a[k * 32 + threadIdx.x];
    b[threadIdx.x] = s;
}
// shared 32-bit loads with a stride in words (0: every lane reads word 0, a broadcast)
extern "C" __global__ void lds32(float* out, int stride) {
    __shared__ float s[32 * 32];
    for (int i = threadIdx.x; i < 32 * 32; i += blockDim.x) s[i] = (float)i;
    __syncthreads();
    out[threadIdx.x] = s[(threadIdx.x * stride) % (32 * 32)];
}
// 32 x 32 transpose through shared memory, PAD = 0 (conflicts) or 1 (none)
template <int PAD>
__global__ void transpose(const float* in, float* out) {
    __shared__ float t[32][32 + PAD];
    int x = threadIdx.x, y = threadIdx.y;
    t[y][x] = in[y * 32 + x];
    __syncthreads();  // the tile is complete before any column is read
    out[y * 32 + x] = t[x][y];
}
// 64-bit shared loads: lane i reads element idx(i) of a double array
extern "C" __global__ void lds64(double* out, int mode) {
    __shared__ double s[64];
    if (threadIdx.x < 64) s[threadIdx.x] = threadIdx.x;
    if (threadIdx.x + 32 < 64) s[threadIdx.x + 32] = threadIdx.x + 32;
    __syncthreads();
    int l = threadIdx.x, idx;
    if (mode == 0) idx = l;             // consecutive: two half-warp phases, no conflict
    else if (mode == 1) idx = l / 2;    // pairs (i, i^1) equal: halves merge into one phase
    else if (mode == 2) idx = (l / 4) * 2 + (l % 2);  // (i, i^2) equal: merge too
    else idx = (l * 2) % 64;            // stride 2 doubles: each half-warp phase 2-way
    out[l] = s[idx];
}
// 128-bit shared loads
extern "C" __global__ void lds128(float4* out, int mode) {
    __shared__ float4 s[64];
    s[threadIdx.x] = make_float4(1.f, 2.f, 3.f, (float)threadIdx.x);
    s[threadIdx.x + 32] = make_float4(1.f, 2.f, 3.f, (float)threadIdx.x);
    __syncthreads();
    int l = threadIdx.x, idx;
    if (mode == 0) idx = l;             // four quarter-warp phases
    else if (mode == 1) idx = l / 2;    // pairs equal: quarters merge within each half
    else idx = 0;                       // all lanes the same address: 1 phase per half
    out[l] = s[idx];
}
'''


@pytest.fixture(scope="module")
def mod():
    return emu.RawModule(code=SRC, name_expressions=["transpose<0>", "transpose<1>"])


def _count(fn, grid, block, args):
    with emu.count_memory() as rec:
        fn(grid, block, args)
    (launch,) = rec.launches
    return launch


def _per_request(launch, space, op):
    sites = [s for s in launch.sites if s.space == space and s.op == op]
    assert len(sites) == 1, sites
    s = sites[0]
    return s.units / s.requests, s


@pytest.mark.parametrize("name, width, sectors", [("copy32", 4, 4), ("copy64", 8, 8),
                                                  ("copy128", 16, 16)])
def test_coalesced_copy_sectors_per_request(mod, name, width, sectors):
    n_warps = 3
    a = emu.to_device(np.zeros(n_warps * 32 * width // 4, np.float32))
    b = emu.zeros(n_warps * 32 * width // 4, np.float32)
    if width == 8:
        a, b = a.view(np.float32), b.view(np.float32)
    args = (a, b, np.int32(1)) if name == "copy32" else (a, b)
    launch = _count(mod.get_function(name), (n_warps,), (32,), args)
    for op in ("load", "store"):
        per, site = _per_request(launch, "global", op)
        assert site.requests == n_warps and site.width == width
        assert per == sectors
    t = launch.totals()
    assert t["gld_requests"] == n_warps and t["gld_sectors"] == n_warps * sectors
    assert t["gst_requests"] == n_warps and t["gst_sectors"] == n_warps * sectors
    assert launch.exact and launch.blocks_run == n_warps


def test_strided_load_touches_one_sector_per_lane(mod):
    a = emu.to_device(np.zeros(64 * 32, np.float32))
    b = emu.zeros(64, np.float32)
    launch = _count(mod.get_function("copy32"), (2,), (32,), (a, b, np.int32(32)))
    assert _per_request(launch, "global", "load")[0] == 32
    assert _per_request(launch, "global", "store")[0] == 4


def test_inactive_lanes_do_not_count(mod):
    a = emu.to_device(np.zeros(64, np.float32))
    b = emu.zeros(64, np.float32)
    launch = _count(mod.get_function("even_lanes"), (2,), (32,), (a, b))
    per, site = _per_request(launch, "global", "load")
    assert site.requests == 2 and site.lanes == 32
    assert per == 4  # 16 floats 8 bytes apart still span 4 sectors


def test_divergent_loop_requests_follow_the_lanes(mod):
    a = emu.to_device(np.zeros(4 * 32, np.float32))
    b = emu.zeros(32, np.float32)
    launch = _count(mod.get_function("ragged_loop"), (1,), (32,), (a, b))
    _, site = _per_request(launch, "global", "load")
    # iteration k is executed by the lanes with lane % 4 >= k: 32, 24, 16, 8 lanes
    assert site.requests == 4
    assert site.lanes == 32 + 24 + 16 + 8


@pytest.mark.parametrize("stride, wavefronts", [(1, 1), (2, 2), (32, 32), (0, 1), (3, 1),
                                                (16, 16)])
def test_shared_32bit_stride(mod, stride, wavefronts):
    out = emu.zeros(32, np.float32)
    launch = _count(mod.get_function("lds32"), (1,), (32,), (out, np.int32(stride)))
    per, site = _per_request(launch, "shared", "load")
    assert site.requests == 1 and per == wavefronts
    assert launch.totals()["smem_bank_conflicts"] == wavefronts - 1
    # the fill loop: 32 coalesced stores per warp, conflict-free
    st = [s for s in launch.sites if s.space == "shared" and s.op == "store"][0]
    assert st.requests == 32 and st.units == 32


@pytest.mark.parametrize("pad, load_wavefronts", [(0, 32), (1, 1)])
def test_transpose_padding(mod, pad, load_wavefronts):
    x = emu.to_device(np.arange(32 * 32, dtype=np.float32))
    y = emu.zeros(32 * 32, np.float32)
    launch = _count(mod.get_function(f"transpose<{pad}>"), (1,), (32, 32), (x, y))
    t = launch.totals()
    assert t["sts_requests"] == 32 and t["sts_wavefronts"] == 32      # rows: conflict-free
    assert t["lds_requests"] == 32 and t["lds_wavefronts"] == 32 * load_wavefronts
    assert t["smem_bank_conflicts"] == 32 * (load_wavefronts - 1)
    assert t["gld_sectors"] == 32 * 4 and t["gst_sectors"] == 32 * 4
    np.testing.assert_array_equal(y.reshape(32, 32), np.arange(32 * 32).reshape(32, 32).T)


@pytest.mark.parametrize("mode, wavefronts, ideal", [(0, 2, 2), (1, 1, 1), (2, 1, 1), (3, 4, 2)])
def test_shared_64bit(mod, mode, wavefronts, ideal):
    out = emu.zeros(32, np.float64)
    launch = _count(mod.get_function("lds64"), (1,), (32,), (out, np.int32(mode)))
    per, site = _per_request(launch, "shared", "load")
    assert site.width == 8 and site.requests == 1
    assert (site.units, site.ideal) == (wavefronts, ideal)


@pytest.mark.parametrize("mode, wavefronts, ideal", [(0, 4, 4), (1, 2, 2), (2, 2, 2)])
def test_shared_128bit(mod, mode, wavefronts, ideal):
    out = emu.zeros((32, 4), np.float32)
    launch = _count(mod.get_function("lds128"), (1,), (32,), (out, np.int32(mode)))
    loads = [s for s in launch.sites if s.space == "shared" and s.op == "load"]
    assert len(loads) == 1 and loads[0].width == 16
    assert (loads[0].units, loads[0].ideal) == (wavefronts, ideal)


def test_counts_are_per_source_line(mod):
    x = emu.to_device(np.arange(32 * 32, dtype=np.float32))
    y = emu.zeros(32 * 32, np.float32)
    launch = _count(mod.get_function("transpose<0>"), (1,), (32, 32), (x, y))
    lines = launch.by_line()
    text = SRC.split('#line 1 "counters.cu"\n', 1)[1].splitlines()
    store_line = next(i for i, t in enumerate(text, 1) if "t[y][x] = in" in t)
    load_line = next(i for i, t in enumerate(text, 1) if "= t[x][y]" in t)
    assert lines[("counters.cu", store_line)]["sts_requests"] == 32
    assert lines[("counters.cu", load_line)]["lds_wavefronts"] == 32 * 32


def test_sampled_blocks_extrapolate(mod):
    a = emu.to_device(np.zeros(100 * 32, np.float32))
    b = emu.empty(100 * 32, np.float32)  # NaN until written
    with emu.count_memory(sample_blocks=7) as rec:
        mod.get_function("copy32")((100,), (32,), (a, b, np.int32(1)))
    (launch,) = rec.launches
    assert (launch.blocks_run, launch.blocks_total, launch.exact) == (7, 100, False)
    assert launch.totals()["gld_requests"] == 100 and launch.totals()["gld_sectors"] == 400
    # the first and the last block ran (the last is where partial tiles live)
    out = b.reshape(100, 32)
    assert not np.isnan(out[0]).any() and not np.isnan(out[99]).any()
    assert np.isnan(out[1]).all()


def test_counting_is_off_outside_the_block_and_keeps_results(mod):
    x = np.random.default_rng(0).standard_normal(32 * 32).astype(np.float32)
    y1, y2 = emu.zeros(32 * 32, np.float32), emu.zeros(32 * 32, np.float32)
    fn = mod.get_function("transpose<1>")
    fn((1,), (32, 32), (emu.to_device(x), y1))
    with emu.count_memory() as rec:
        fn((1,), (32, 32), (emu.to_device(x), y2))
    fn((1,), (32, 32), (emu.to_device(x), y1))
    assert len(rec.launches) == 1
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_sample_blocks(bad):
    with pytest.raises(ValueError, match="sample_blocks"):
        with emu.count_memory(sample_blocks=bad):
            pass
