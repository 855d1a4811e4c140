// 2-D max pooling, NHWC, with PyTorch's semantics.
//
// As max_pool2d_nchw.cu, but with the channel fastest: threads map to C, so
// a warp reads 32 consecutive channels of one input pixel per tap (one
// coalesced segment) and writes 32 consecutive outputs. Indices are still
// flat into each H * W plane (h * W + w), as PyTorch gives for channels-last.
//
// Memory traffic: reads N*H*W*C (once from DRAM when windows overlap), writes
// N*OH*OW*C values (+ as many int64 indices). Launch: grid
// ceil_div(N*OH*OW*C, 256), block 256. Any sizes with H * W < 2^31,
// C < 2^31; window parameters up to 2^31 - 1 (64-bit window arithmetic).
#include "pool_common.cuh"

// x is (N, H, W, C), y and ind are (N, OH, OW, C); ind is written only when WITH_INDICES.
template <typename T, bool WITH_INDICES>
__global__ void __launch_bounds__(256) max_pool2d_nhwc(
    const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ ind, long long total,
    int H, int W, int C, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total)
        return;
    const long long pix = t / C;  // n * OH * OW + oh * OW + ow
    const int c = (int)(t - pix * C);
    const int ohw = OH * OW;
    const long long n = pix / ohw;
    const int r = (int)(pix - n * ohw);
    const int oh = r / OW, ow = r % OW;
    const MaxSpan hspan = max_span(oh, H, kh, sh, ph, dh);
    const MaxSpan wspan = max_span(ow, W, kw, sw, pw, dw);
    const T* xn = x + n * H * W * C + c;

    T best = pool_neg_inf<T>();
    long long best_i = hspan.start * W + wspan.start;
    // Unsigned counters: h < H < 2^31 and dh < 2^31, so h + dh cannot wrap (an int could overflow).
    for (unsigned h = hspan.first; h < (unsigned)hspan.end; h += dh) {
        for (unsigned w = wspan.first; w < (unsigned)wspan.end; w += dw) {
            const int i = (int)(h * W + w);  // < H * W < 2^31
            const T v = xn[(long long)i * C];
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
