// Unary elementwise ops with 128-bit memory accesses: sigmoid, tanh, clip.
//
// y[i] = 1 / (1 + exp(-x))            for x >= 0   (sigmoid_vec128)
//      = t / (1 + t), t = exp(x)      for x < 0 (and NaN)
// y[i] = tanh(x)                                   (tanh_vec128)
// y[i] = x < lo ? lo : (x > hi ? hi : x), applied as two steps, so lo > hi
//        gives hi everywhere (numpy.clip and torch.clamp)  (clip_vec128)
//
// Sigmoid takes the branch whose exp cannot overflow: exp(-x) for x >= 0 is
// at most 1, exp(x) for x < 0 is below 1, so no Inf / Inf appears, and for
// very negative x the result follows exp(x) down into the subnormals
// instead of jumping to 0 where exp(-x) would overflow. Each branch costs
// exp (CUDA: at most 2 ulp for expf, 1 ulp for exp), one rounded add and one
// rounded division, so the result is within 4 ulp of the exact sigmoid;
// tanhf is at most 2 ulp, tanh 1 ulp (CUDA Programming Guide, "Mathematical
// functions", single and double precision tables). NaN comparisons are
// false, so NaN goes through exp / tanh (NaN in, NaN out) and through clip
// unchanged; sigmoid(+-Inf) is 1 / 0 exactly, tanh(+-Inf) is +-1.
//
// Memory traffic: reads n, writes n elements; bandwidth bound. Each thread
// moves one 16-byte vector (float4 / double2) per iteration of a
// grid-stride loop; the vector path is taken only when x and y share their
// offset modulo 16 bytes, with scalar head and tail elements around it (the
// same scheme as activation/relu_vec128.cu), else everything is scalar.
//
// Shapes: x (n,), y (n,), contiguous; n may exceed 2^31 (64-bit indices).
// Launch: 1-D grid of any size, 1-D block of any size
// (elementwise.unary_launch: 256 threads, one vector per thread, at most
// 8192 blocks). Instantiated for T = float and T = double.

template <typename T> struct UVec128;
template <> struct UVec128<float> { typedef float4 type; static constexpr int width = 4; };
template <> struct UVec128<double> { typedef double2 type; static constexpr int width = 2; };

__device__ __forceinline__ float exp_t(float v) { return expf(v); }
__device__ __forceinline__ double exp_t(double v) { return exp(v); }
__device__ __forceinline__ float tanh_t(float v) { return tanhf(v); }
__device__ __forceinline__ double tanh_t(double v) { return tanh(v); }

struct SigmoidOp {
    template <typename T> __device__ __forceinline__ T operator()(T v) const
    {
        if (v >= T(0))
            return T(1) / (T(1) + exp_t(-v));
        const T t = exp_t(v);
        return t / (T(1) + t);
    }
};

struct TanhOp {
    template <typename T> __device__ __forceinline__ T operator()(T v) const { return tanh_t(v); }
};

template <typename T> struct ClipOp {
    T lo, hi;
    __device__ __forceinline__ T operator()(T v) const
    {
        v = v < lo ? lo : v;
        return v > hi ? hi : v;
    }
};

template <typename T, typename F>
__device__ __forceinline__ void unary_apply(const T* __restrict__ x, T* __restrict__ y, long long n, F f)
{
    typedef typename UVec128<T>::type V;
    constexpr int W = UVec128<T>::width;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long nthreads = (long long)gridDim.x * blockDim.x;

    const unsigned long long ax = reinterpret_cast<unsigned long long>(x);
    const unsigned long long ay = reinterpret_cast<unsigned long long>(y);
    long long head = n;  // everything scalar unless x and y can be aligned together
    if ((ax & 15ull) == (ay & 15ull) && (ax % sizeof(T)) == 0) {
        head = (long long)(((16ull - (ax & 15ull)) & 15ull) / sizeof(T));
        if (head > n)
            head = n;
    }
    const long long nvec = (n - head) / W;
    const long long tail = head + nvec * W;

    const V* __restrict__ xv = reinterpret_cast<const V*>(x + head);
    V* __restrict__ yv = reinterpret_cast<V*>(y + head);
    for (long long i = tid; i < nvec; i += nthreads) {
        V v = xv[i];
        T* e = reinterpret_cast<T*>(&v);
#pragma unroll
        for (int k = 0; k < W; ++k)
            e[k] = f(e[k]);
        yv[i] = v;
    }
    for (long long i = tid; i < head; i += nthreads)
        y[i] = f(x[i]);
    for (long long i = tail + tid; i < n; i += nthreads)
        y[i] = f(x[i]);
}

// x (n,) -> y (n,): logistic sigmoid.
template <typename T>
__global__ void sigmoid_vec128(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    unary_apply(x, y, n, SigmoidOp());
}

// x (n,) -> y (n,): hyperbolic tangent.
template <typename T>
__global__ void tanh_vec128(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    unary_apply(x, y, n, TanhOp());
}

// x (n,) -> y (n,): clamp to [lo, hi]; lo = -Inf / hi = +Inf for a missing bound.
template <typename T>
__global__ void clip_vec128(const T* __restrict__ x, T* __restrict__ y, long long n, T lo, T hi)
{
    unary_apply(x, y, n, ClipOp<T>{lo, hi});
}
