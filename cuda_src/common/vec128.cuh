// y[i] = f(x[i]) over n contiguous elements with 128-bit accesses: the loop
// shared by the elementwise kernels (activation/relu_vec128.cu,
// elementwise/unary_vec128.cu).
//
// Each thread moves one 16-byte vector (float4 / double2) per iteration of a
// grid-stride loop, so a warp reads and writes 512 contiguous bytes per
// instruction. The vector path is taken only where it is legal: x and y must
// have the same offset modulo 16 bytes (always true for fresh allocations; a
// view such as x[1:] may break it). Then the few elements before the first
// 16-byte boundary (the head) and after the last full vector (the tail) are
// done as scalars. If the offsets differ, every element goes through the
// scalar loop. n may exceed 2^31 (64-bit indices); any 1-D grid and block.
// Instantiated for T = float (float4) and T = double (double2).
#pragma once

template <typename T> struct Vec128;
template <> struct Vec128<float> { typedef float4 type; static constexpr int width = 4; };
template <> struct Vec128<double> { typedef double2 type; static constexpr int width = 2; };

template <typename T, typename F>
__device__ __forceinline__ void vec128_apply(const T* __restrict__ x, T* __restrict__ y, long long n, F f)
{
    typedef typename Vec128<T>::type V;
    constexpr int W = Vec128<T>::width;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long nthreads = (long long)gridDim.x * blockDim.x;

    const unsigned long long ax = reinterpret_cast<unsigned long long>(x);
    const unsigned long long ay = reinterpret_cast<unsigned long long>(y);
    long long head = n;  // no vector part unless both pointers can be aligned together
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
    // Scalars: the head (fewer than W elements) and the tail (fewer than W),
    // or everything when the vector path is not legal (head == n).
    for (long long i = tid; i < head; i += nthreads)
        y[i] = f(x[i]);
    for (long long i = tail + tid; i < n; i += nthreads)
        y[i] = f(x[i]);
}
