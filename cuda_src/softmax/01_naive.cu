// Softmax ladder, step 1: naive, three passes over global memory.
//
// One thread per row. Pass 1 finds the row max, pass 2 sums exp(x - max),
// pass 3 writes exp(x - max) / sum (log_softmax: x - max - log(sum)). This is
// the textbook formula and the correctness baseline: subtracting the max keeps
// exp from overflowing, and the NaN / inf semantics follow from IEEE
// arithmetic with a NaN-propagating max. It is slow twice over: the row is
// read three times, and the 32 threads of a warp read 32 different rows, L
// elements apart, so no load is coalesced.
//
// Memory traffic: reads 3 * rows * L, writes rows * L (plus the uncoalesced
// waste). Launch: grid ceil_div(rows, 256), block 256; any rows, any L >= 1.
#include "softmax_common.cuh"

// x, y are (rows, L) contiguous; LOG selects log_softmax.
template <typename T, bool LOG>
__global__ void __launch_bounds__(256) softmax_naive(
    const T* __restrict__ x, T* __restrict__ y, long long rows, int L)
{
    const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows)
        return;
    const T* xr = x + row * L;
    T* yr = y + row * L;

    T m = neg_inf<T>();
    for (int i = 0; i < L; ++i)
        m = nan_max(m, xr[i]);
    T s = T(0);
    for (int i = 0; i < L; ++i)
        s += sm_exp(xr[i] - m);
    const T scale = softmax_scale<T, LOG>(s);
    for (int i = 0; i < L; ++i)
        yr[i] = softmax_out<T, LOG>(xr[i], m, scale);
}
