// 2-D average pooling, NHWC, with PyTorch's semantics.
//
// As avg_pool2d_nchw.cu, but with the channel fastest: threads map to C, so
// each tap of a warp is one coalesced read of 32 consecutive channels and the
// writes are consecutive too.
//
// Memory traffic: reads N*H*W*C (once from DRAM when windows overlap), writes
// N*OH*OW*C. Launch: grid ceil_div(N*OH*OW*C, 256), block 256. Any sizes with
// H * W < 2^31, C < 2^31; window parameters up to 2^31 - 1 (the window
// arithmetic in pool_common.cuh is 64-bit).
#include "pool_common.cuh"

// x is (N, H, W, C), y is (N, OH, OW, C).
template <typename T>
__global__ void __launch_bounds__(256) avg_pool2d_nhwc(
    const T* __restrict__ x, T* __restrict__ y, long long total, int H, int W, int C, int OH, int OW,
    int kh, int kw, int sh, int sw, int pt, int pb, int pl, int pr, int count_include_pad)
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
    const AvgSpan hs = avg_span(oh, H, kh, sh, pt, pb);
    const AvgSpan ws = avg_span(ow, W, kw, sw, pl, pr);
    if (hs.start >= hs.end || ws.start >= ws.end) {
        y[t] = T(0);  // no tap inside the input (PyTorch writes 0)
        return;
    }
    const T* xn = x + n * H * W * C + c;
    T sum = T(0);
    for (int h = hs.start; h < hs.end; ++h)
        for (int w = ws.start; w < ws.end; ++w)
            sum += xn[(long long)(h * W + w) * C];
    // 64-bit: two window extents below 2^31 each can multiply past 2^31.
    const long long count = count_include_pad ? (long long)hs.padded * ws.padded
                                              : (long long)(hs.end - hs.start) * (ws.end - ws.start);
    y[t] = sum / T(count);
}
