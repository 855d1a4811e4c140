// ReLU and leaky ReLU, elementwise, with 128-bit memory accesses.
//
// y[i] = x[i] < 0 ? 0 : x[i]              (relu_vec128)
// y[i] = x[i] < 0 ? slope * x[i] : x[i]   (leaky_relu_vec128)
// A NaN compares false with 0 and is passed through unchanged: fmaxf(x, 0)
// would turn it into 0, NumPy and PyTorch keep it.
//
// Memory traffic: reads n, writes n elements; no reuse, so the kernel is
// bandwidth bound and the only thing that matters is issuing wide, coalesced
// accesses: the 128-bit loop with scalar head and tail of common/vec128.cuh.
//
// Shapes: x (n,), y (n,), contiguous; n may exceed 2^31 (64-bit indices).
// Launch: 1-D grid of any size (grid-stride loops), 1-D block of any size.
// Instantiated for T = float (float4) and T = double (double2).

#include "../common/vec128.cuh"

// Comparisons with NaN are false, so NaN takes the "else" branch: kept.
template <typename T, bool LEAKY> struct ReluOp {
    T slope;
    __device__ __forceinline__ T operator()(T v) const
    {
        if (LEAKY)
            return v < T(0) ? v * slope : v;
        return v < T(0) ? T(0) : v;
    }
};

// x (n,) -> y (n,): y = max(x, 0) keeping NaN.
template <typename T>
__global__ void relu_vec128(const T* __restrict__ x, T* __restrict__ y, long long n)
{
    vec128_apply(x, y, n, ReluOp<T, false>{T(0)});
}

// x (n,) -> y (n,): y = x < 0 ? slope * x : x, keeping NaN.
template <typename T>
__global__ void leaky_relu_vec128(const T* __restrict__ x, T* __restrict__ y, long long n, T slope)
{
    vec128_apply(x, y, n, ReluOp<T, true>{slope});
}
