// 2-D average pooling, NCHW, with PyTorch's semantics.
//
// One thread per output element, ow fastest (coalesced writes; input rows
// shared by neighbouring windows come from cache). Padding counts as zeros;
// the begin pads (pt, pl) place the windows, the end pads (pb, pr) clip the
// count_include_pad divisor (ONNX pads may differ; PyTorch passes equal ones).
// The divisor is the window clipped to the padded input when
// count_include_pad != 0 -- with ceil_mode the part of a last window past the
// padded input is not counted -- else the number of taps inside the input.
// Sums accumulate in T.
//
// Memory traffic: reads N*C*H*W (once from DRAM when windows overlap), writes
// N*C*OH*OW. Launch: grid ceil_div(N*C*OH*OW, 256), block 256. Any sizes with
// H * W < 2^31 and OH * OW < 2^31; window parameters up to 2^31 - 1 (the
// window arithmetic in pool_common.cuh is 64-bit).
#include "pool_common.cuh"

// x is (N*C, H, W), y is (N*C, OH, OW).
template <typename T>
__global__ void __launch_bounds__(256) avg_pool2d_nchw(
    const T* __restrict__ x, T* __restrict__ y, long long total, int H, int W, int OH, int OW,
    int kh, int kw, int sh, int sw, int pt, int pb, int pl, int pr, int count_include_pad)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total)
        return;
    const int ohw = OH * OW;
    const long long plane = t / ohw;
    const int r = (int)(t - plane * ohw);
    const int oh = r / OW, ow = r % OW;
    const AvgSpan hs = avg_span(oh, H, kh, sh, pt, pb);
    const AvgSpan ws = avg_span(ow, W, kw, sw, pl, pr);
    if (hs.start >= hs.end || ws.start >= ws.end) {
        y[t] = T(0);  // no tap inside the input (PyTorch writes 0)
        return;
    }
    const T* xp = x + plane * H * W;
    T sum = T(0);
    for (int h = hs.start; h < hs.end; ++h)
        for (int w = ws.start; w < ws.end; ++w)
            sum += xp[h * W + w];
    // 64-bit: two window extents below 2^31 each can multiply past 2^31.
    const long long count = count_include_pad ? (long long)hs.padded * ws.padded
                                              : (long long)(hs.end - hs.start) * (ws.end - ws.start);
    y[t] = sum / T(count);
}
