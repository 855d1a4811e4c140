// Softmax ladder, step 2: online softmax, two passes.
//
// Changes from step 1: the max and the sum come out of one pass (Milakov &
// Gimelshein 2018). Each thread keeps the running max m and the sum s of
// exp(x - m) over the elements seen so far; when a larger element arrives the
// sum is rescaled by exp(m_old - m_new). One read of the row disappears (3
// reads + 1 write become 2 + 1), worth up to ~1.3x while memory bound. The
// rescale needs an explicit guard for the all -inf prefix, where
// exp(-inf - -inf) would be NaN (see online_add in softmax_common.cuh).
// Still one thread per row, so still uncoalesced: that is step 3's job.
//
// Memory traffic: reads 2 * rows * L, writes rows * L. Launch: grid
// ceil_div(rows, 256), block 256; any rows, any L >= 1.
#include "softmax_common.cuh"

// x, y are (rows, L) contiguous; LOG selects log_softmax.
template <typename T, bool LOG>
__global__ void __launch_bounds__(256) softmax_online(
    const T* __restrict__ x, T* __restrict__ y, long long rows, int L)
{
    const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows)
        return;
    const T* xr = x + row * L;
    T* yr = y + row * L;

    T m = neg_inf<T>();
    T s = T(0);
    for (int i = 0; i < L; ++i)
        online_add(m, s, xr[i]);
    const T scale = softmax_scale<T, LOG>(s);
    for (int i = 0; i < L; ++i)
        yr[i] = softmax_out<T, LOG>(xr[i], m, scale);
}
