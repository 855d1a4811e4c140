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
// unchanged; sigmoid(+Inf) is 1 and sigmoid(-Inf) is 0 exactly, tanh(+-Inf) is +-1.
//
// Memory traffic: reads n, writes n elements; bandwidth bound. The loop is
// common/vec128.cuh's: one 16-byte vector (float4 / double2) per thread and
// iteration where x and y share their offset modulo 16 bytes, scalar head
// and tail around it, everything scalar otherwise.
//
// Shapes: x (n,), y (n,), contiguous; n may exceed 2^31 (64-bit indices).
// Launch: 1-D grid of any size, 1-D block of any size
// (elementwise.unary_launch: 256 threads, one vector per thread, at most
// 8192 blocks). Instantiated for T = float and T = double.

#include "../common/vec128.cuh"

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

// x (n,) -> y (n,): logistic sigmoid.
template <typename T>
__global__ void sigmoid_vec128(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    vec128_apply(x, y, n, SigmoidOp());
}

// x (n,) -> y (n,): hyperbolic tangent.
template <typename T>
__global__ void tanh_vec128(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    vec128_apply(x, y, n, TanhOp());
}

// x (n,) -> y (n,): clamp to [lo, hi]; lo = -Inf / hi = +Inf for a missing bound.
template <typename T>
__global__ void clip_vec128(const T* __restrict__ x, T* __restrict__ y, long long n, T lo, T hi)
{
    vec128_apply(x, y, n, ClipOp<T>{lo, hi});
}
