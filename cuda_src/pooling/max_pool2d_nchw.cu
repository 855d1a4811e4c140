// 2-D max pooling, NCHW, with PyTorch's semantics.
//
// One thread per output element, ow fastest, so a warp writes consecutive
// outputs and reads input rows with stride sw (neighbouring windows overlap
// or abut, so the rows they share come from L1/L2). The window skips the left
// padding by whole dilations; a value replaces the running max when it is
// larger or NaN, so NaN propagates and the index is that of the first
// maximum (the last NaN when there are NaNs), as in PyTorch. A window with no
// tap inside the input (possible only with a dilation larger than the input)
// gives -inf and the index of its first tap position, as PyTorch does.
// Indices are flat into each H * W plane (h * W + w), int64.
//
// Memory traffic: reads N*C*H*W (once from DRAM when windows overlap, more
// only from cache), writes N*C*OH*OW values (+ as many int64 indices).
// Launch: grid ceil_div(N*C*OH*OW, 256), block 256. Any sizes with
// H * W < 2^31 and OH * OW < 2^31; window parameters up to 2^31 - 1 (the
// window arithmetic in pool_common.cuh is 64-bit).
#include "pool_common.cuh"

// x is (N*C, H, W), y and ind are (N*C, OH, OW); ind is written only when WITH_INDICES.
template <typename T, bool WITH_INDICES>
__global__ void __launch_bounds__(256) max_pool2d_nchw(
    const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ ind, long long total,
    int H, int W, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total)
        return;
    const int ohw = OH * OW;
    const long long plane = t / ohw;
    const int r = (int)(t - plane * ohw);
    const int oh = r / OW, ow = r % OW;
    const MaxSpan hspan = max_span(oh, H, kh, sh, ph, dh);
    const MaxSpan wspan = max_span(ow, W, kw, sw, pw, dw);
    const T* xp = x + plane * H * W;

    T best = pool_neg_inf<T>();
    long long best_i = hspan.start * W + wspan.start;
    // Unsigned counters: h < H < 2^31 and dh < 2^31, so h + dh cannot wrap (an int could overflow).
    for (unsigned h = hspan.first; h < (unsigned)hspan.end; h += dh) {
        for (unsigned w = wspan.first; w < (unsigned)wspan.end; w += dw) {
            const int i = (int)(h * W + w);  // < H * W < 2^31
            const T v = xp[i];
            if (v > best || v != v) {
                best = v;
                best_i = i;
            }
        }
    }
    y[t] = best;
    if (WITH_INDICES)
        ind[t] = best_i;
}
