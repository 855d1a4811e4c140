// Helpers shared by the pooling kernels (cuda_src/pooling/*.cu): PyTorch's
// window arithmetic for max and average pooling.
#pragma once

template <typename T> __device__ __forceinline__ T pool_neg_inf();
template <> __device__ __forceinline__ float pool_neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double pool_neg_inf<double>()
{
    return __longlong_as_double((long long)0xfff0000000000000ULL);
}

// Max-pool window along one axis for output position o: taps start,
// start + d, ... < end, all inside [0, size). start is the first tap at or
// after 0 (PyTorch steps over the left padding by whole dilations), end is
// one past the last tap of the window clipped to the input.
struct MaxSpan {
    int start, end;
};

__device__ __forceinline__ MaxSpan max_span(int o, int size, int k, int s, int p, int d)
{
    int start = o * s - p;
    const int end = min(start + (k - 1) * d + 1, size);
    if (start < 0)
        start += ((-start + d - 1) / d) * d;
    return MaxSpan{start, end};
}

// Average-pool window along one axis for output position o: [start, end)
// clipped to the input, and `padded`, the window's extent clipped to the
// padded input (H + p on the right) -- the count_include_pad divisor. With
// ceil_mode a last window may reach past the padded input; that part counts
// neither way (PyTorch's semantics).
struct AvgSpan {
    int start, end, padded;
};

__device__ __forceinline__ AvgSpan avg_span(int o, int size, int k, int s, int p)
{
    int start = o * s - p;
    int end = min(start + k, size + p);
    const int padded = end - start;
    start = max(start, 0);
    end = min(end, size);
    return AvgSpan{start, end, padded};
}
