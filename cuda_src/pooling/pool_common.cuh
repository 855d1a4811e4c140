// Helpers shared by the pooling kernels (cuda_src/pooling/*.cu): PyTorch's
// window arithmetic for max and average pooling.
#pragma once

template <typename T> __device__ __forceinline__ T pool_neg_inf();
template <> __device__ __forceinline__ float pool_neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double pool_neg_inf<double>()
{
    return __longlong_as_double((long long)0xfff0000000000000ULL);
}

// Max-pool window along one axis for output position o: taps first,
// first + d, ... < end, all inside [0, size). `start` is the first tap at or
// after 0 (PyTorch steps over the left padding by whole dilations) and may lie
// past the input when no tap is inside it (then first == end and the loop is
// empty); end is one past the last tap of the window clipped to the input.
//
// The window arithmetic is 64-bit: o * s, (k - 1) * d and start + span reach
// 2^32 with parameters below 2^31 (padding and dilation 2^31 - 1 with k = 3).
// What the kernels loop over is 32-bit again: 0 <= first <= end <= size.
struct MaxSpan {
    long long start;
    int first, end;
};

__device__ __forceinline__ MaxSpan max_span(int o, int size, int k, int s, int p, int d)
{
    long long start = (long long)o * s - p;
    const long long last = start + (long long)(k - 1) * d;
    const int end = (int)max(0LL, min(last + 1, (long long)size));
    if (start < 0)
        start += ((-start + d - 1) / d) * d;
    return MaxSpan{start, (int)min(start, (long long)end), end};
}

// Average-pool window along one axis for output position o, with begin pad
// p and end pad q (equal for PyTorch's symmetric padding; ONNX pads may
// differ): [start, end) clipped to the input, and `padded`, the window's
// extent clipped to the padded input (size + q on the right) -- the
// count_include_pad divisor. With ceil_mode a last window may reach past the
// padded input; that part counts neither way (PyTorch's and ONNX Runtime's
// semantics). 64-bit window arithmetic as in max_span; padded <= k.
struct AvgSpan {
    int start, end, padded;
};

__device__ __forceinline__ AvgSpan avg_span(int o, int size, int k, int s, int p, int q)
{
    const long long start = (long long)o * s - p;
    const long long end = min(start + k, (long long)size + q);
    const int padded = (int)(end - start);
    const int first = (int)max(0LL, min(start, (long long)size));
    return AvgSpan{first, (int)max((long long)first, min(end, (long long)size)), padded};
}
