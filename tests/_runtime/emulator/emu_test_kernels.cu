// Small kernels exercising the CUDA emulator (tests/_runtime/emulator).
#define TILE 16

static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4 layout");
static_assert(sizeof(float2) == 8 && alignof(float2) == 8, "float2 layout");
static_assert(sizeof(float3) == 12 && alignof(float3) == 4, "float3 layout");
static_assert(sizeof(int4) == 16 && alignof(int4) == 16, "int4 layout");
static_assert(sizeof(char4) == 4 && alignof(char4) == 4, "char4 layout");
static_assert(sizeof(double2) == 16 && alignof(double2) == 16, "double2 layout");

// Tiled matmul; the template flags remove one barrier or the other.
template <bool SYNC_AFTER_LOAD, bool SYNC_AFTER_COMPUTE>
__global__ void matmul_tiled(const float* __restrict__ A, const float* __restrict__ B,
                             float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.f;
        Bs[ty][tx] = (col < N && k0 + ty < K) ? B[(k0 + ty) * N + col] : 0.f;
        if (SYNC_AFTER_LOAD) __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE; ++k) acc += As[ty][k] * Bs[k][tx];
        if (SYNC_AFTER_COMPUTE) __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

extern "C" __global__ void early_return(float* out, int n) {
    __shared__ float s[256];
    const int i = threadIdx.x;
    if (i >= n) return;  // bug: the threads i >= n never reach the barrier
    s[i] = (float)i;
    __syncthreads();
    out[i] = s[(i + 1) % n];
}

extern "C" __global__ void divergent_shfl(float* out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);  // bug: full mask
    out[threadIdx.x] = v;
}

extern "C" __global__ void partial_warp_shfl(float* out) {
    // blockDim.x == 48: lanes 16..31 of warp 1 do not exist.
    float v = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 16);
    out[threadIdx.x] = v;
}

extern "C" __global__ void warp_reduce(const float* x, float* down_sum, float* xor_sum16,
                                       float* up_scan8, int* idx4) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = x[t];
    float s = v;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) down_sum[t / 32] = s;
    float s16 = v;
    for (int o = 8; o > 0; o >>= 1) s16 += __shfl_xor_sync(0xffffffffu, s16, o, 16);
    xor_sum16[t] = s16;
    float sc = v;
    for (int o = 1; o < 8; o <<= 1) {
        float u = __shfl_up_sync(0xffffffffu, sc, o, 8);
        if ((threadIdx.x & 7) >= (unsigned)o) sc += u;
    }
    up_scan8[t] = sc;
    idx4[t] = __shfl_sync(0xffffffffu, (int)threadIdx.x * 10, 3, 4);
}

extern "C" __global__ void shfl_types(double* d, long long* ll, unsigned long long* ull,
                                      unsigned* u) {
    const int t = threadIdx.x;
    d[t] = __shfl_xor_sync(0xffffffffu, (double)t + 0.25, 1);
    ll[t] = __shfl_down_sync(0xffffffffu, ((long long)t << 33) - 5, 1);
    ull[t] = __shfl_sync(0xffffffffu, (unsigned long long)t << 40, 31 - t);
    u[t] = __shfl_up_sync(0xffffffffu, (unsigned)t * 3u, 2);
}

extern "C" __global__ void vote(const int* pred, unsigned* ballot, int* any, int* all,
                                unsigned* active) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int p = pred[t];
    unsigned b = __ballot_sync(0xffffffffu, p);
    int a = __any_sync(0xffffffffu, p);
    int l = __all_sync(0xffffffffu, p);
    __syncwarp();
    if ((threadIdx.x & 31) == 0) {
        ballot[t / 32] = b;
        any[t / 32] = a;
        all[t / 32] = l;
        active[t / 32] = __activemask();
    }
}

extern "C" __global__ void block_votes(const int* pred, int* out) {
    const int p = pred[threadIdx.x];
    int c = __syncthreads_count(p);
    int a = __syncthreads_and(p);
    int o = __syncthreads_or(p);
    unsigned r = __reduce_add_sync(0xffffffffu, (unsigned)p);
    int mx = __reduce_max_sync(0xffffffffu, (int)threadIdx.x * (p ? 1 : -1));
    unsigned m = __match_any_sync(0xffffffffu, p);
    if (threadIdx.x == 0) {
        out[0] = c; out[1] = a; out[2] = o; out[3] = (int)r; out[4] = mx; out[5] = (int)m;
    }
}

extern "C" __global__ void read_at(const float* x, float* out, long long idx) { out[0] = x[idx]; }

extern "C" __global__ void write_at(float* x, long long idx, float v) {
    if (threadIdx.x == 3) x[idx] = v;
}

extern "C" __global__ void uninit_smem(float* out) {
    __shared__ float s[64];
    if (threadIdx.x < 32) s[threadIdx.x] = 1.0f + blockIdx.x;
    __syncthreads();
    out[blockIdx.x * 64 + threadIdx.x] = s[threadIdx.x];
}

extern "C" __global__ void dyn_smem_sum(const float* x, float* out, int n) {
    extern __shared__ float buf[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = x[i];
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
        for (int i = 0; i < n; ++i) s += buf[i];
        out[0] = s;
    }
}

extern "C" __global__ void static_and_dynamic(float* out) {
    __shared__ float st[32];
    extern __shared__ __align__(16) unsigned char raw[];
    float* dy = reinterpret_cast<float*>(raw);
    st[threadIdx.x] = (float)threadIdx.x;
    dy[threadIdx.x] = 100.f + threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = st[31 - threadIdx.x] + dy[31 - threadIdx.x];
    if (threadIdx.x == 0) {
        out[32] = ((size_t)raw % 16 == 0) ? 1.f : 0.f;
        out[33] = dy[40];  // inside the requested bytes but never written: poison
    }
}

extern "C" __global__ void atomics(float* fsum, int* isum, unsigned* umax, int* imin,
                                   unsigned long long* ucount, double* dsum, int* cas) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(fsum, 1.0f);
    atomicAdd(isum, t);
    atomicMax(umax, (unsigned)t);
    atomicMin(imin, -t);
    atomicAdd(ucount, 1ull);
    atomicAdd(dsum, 0.5);
    __shared__ int sh;
    if (threadIdx.x == 0) sh = 0;
    __syncthreads();
    atomicAdd(&sh, 1);
    __syncthreads();
    if (threadIdx.x == 0) atomicAdd(isum + 1, sh);
    // every thread tries to claim cas[0]; exactly one succeeds
    if (atomicCAS(cas, -1, t) == -1) atomicExch(cas + 1, 1);
}

extern "C" __global__ void dp4a_kernel(const int* a, const int* b, const int* c, int* out,
                                       const unsigned* ua, const unsigned* ub, unsigned* uout) {
    const int t = threadIdx.x;
    out[t] = __dp4a(a[t], b[t], c[t]);
    uout[t] = __dp4a(ua[t], ub[t], 7u);
}

extern "C" __global__ void scale4(const float* x, float* y, float s, int n4) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n4) {
        float4 v = reinterpret_cast<const float4*>(x)[i];
        v.x *= s; v.y *= s; v.z *= s; v.w *= s;
        reinterpret_cast<float4*>(y)[i] = v;
    }
}

template <typename T, int V>
__global__ void fill_k(T* out, T base) {
    out[threadIdx.x] = base + (T)(V * (int)threadIdx.x);
}

extern "C" __global__ void device_assert(const int* x) { assert(x[threadIdx.x] >= 0); }

extern "C" __global__ void __launch_bounds__(128) bounded(float* out) { out[threadIdx.x] = 1.f; }

template <typename T, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) bounded_t(T* out) { out[threadIdx.x] = T(1); }

extern "C" __global__ void math_funcs(const float* x, float* out) {
    const int i = threadIdx.x;
    const float v = x[i];
    out[i * 8 + 0] = rsqrtf(v);
    out[i * 8 + 1] = __expf(v);
    out[i * 8 + 2] = fmaxf(v, 1.5f);
    out[i * 8 + 3] = (float)min(i, 3) + max(v, 2.0f);
    out[i * 8 + 4] = __saturatef(v - 1.0f);
    out[i * 8 + 5] = (float)__float2int_rn(v * 2.5f);
    out[i * 8 + 6] = __int_as_float(__float_as_int(v));
    out[i * 8 + 7] = (float)(__popc(i) + __clz(i) + __ffs(i));
}
