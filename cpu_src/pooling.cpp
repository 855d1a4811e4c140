// NHWC pooling of the numpy backend: each output pixel's window is walked tap by tap with the C
// channels of a tap contiguous, so the inner loop is a vector over channels (the NumPy route
// slices the window taps out of the array one strided view at a time). One call computes the
// output rows [r0, r1) of the flattened (N * OH) rows, so threads take disjoint row ranges.
//
// The results are the NumPy route's bits (pygpu_ops/pooling.py):
//   max: m starts at -inf and a tap replaces it when larger or NaN, walking the window row-major,
//        so of equal values the first stays and of NaNs the last; a window without an input tap
//        gives -inf.
//   avg: per window column (in tap order) the sum over its rows starting from +0, then the sum of
//        those column sums starting from +0, over the divisor as float (window clipped to the
//        padded input with count_include_pad, else to the input); a divisor of 0 gives 0.
#include "common.h"

namespace {

constexpr int CB = 64;   // channels per pass: the running values of a block stay in registers

}  // namespace

PYGPU_EXPORT void max_pool_nhwc_f32(const float* __restrict x, float* __restrict y, int64_t H, int64_t W,
                                    int64_t C, int64_t OH, int64_t OW, int32_t kh, int32_t kw, int32_t sh,
                                    int32_t sw, int32_t ph, int32_t pw, int32_t dh, int32_t dw, int64_t r0,
                                    int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / OH, oh = r % OH;
        const float* xn = x + n * H * W * C;
        for (int64_t ow = 0; ow < OW; ++ow) {
            float* yo = y + (r * OW + ow) * C;
            for (int64_t c0 = 0; c0 < C; c0 += CB) {
                const int cb = (int)(C - c0 < CB ? C - c0 : CB);
                float m[CB];
                for (int c = 0; c < cb; ++c) m[c] = -INFINITY;
                for (int32_t i = 0; i < kh; ++i) {
                    const int64_t h = oh * sh - ph + (int64_t)i * dh;
                    if (h < 0 || h >= H) continue;
                    for (int32_t j = 0; j < kw; ++j) {
                        const int64_t w = ow * sw - pw + (int64_t)j * dw;
                        if (w < 0 || w >= W) continue;
                        const float* v = xn + (h * W + w) * C + c0;
                        for (int c = 0; c < cb; ++c) m[c] = (v[c] > m[c] || v[c] != v[c]) ? v[c] : m[c];
                    }
                }
                for (int c = 0; c < cb; ++c) yo[c0 + c] = m[c];
            }
        }
    }
}

namespace {

// The divisor along one axis (pooling.py:_avg_divisor): begin pad p0, end pad p1.
inline int64_t divisor(int64_t o, int64_t size, int32_t k, int32_t s, int32_t p0, int32_t p1, int32_t cip) {
    const int64_t start = o * s - p0;
    const int64_t end = start + k < size + p1 ? start + k : size + p1;
    if (cip) return end - start;
    const int64_t valid = (end < size ? end : size) - (start > 0 ? start : 0);
    return valid > 0 ? valid : 0;
}

}  // namespace

PYGPU_EXPORT void avg_pool_nhwc_f32(const float* __restrict x, float* __restrict y, int64_t H, int64_t W,
                                    int64_t C, int64_t OH, int64_t OW, int32_t kh, int32_t kw, int32_t sh,
                                    int32_t sw, int32_t pt, int32_t pb, int32_t pl, int32_t pr, int32_t cip,
                                    int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / OH, oh = r % OH;
        const float* xn = x + n * H * W * C;
        const int64_t dv_h = divisor(oh, H, kh, sh, pt, pb, cip);
        for (int64_t ow = 0; ow < OW; ++ow) {
            float* yo = y + (r * OW + ow) * C;
            const int64_t dv = dv_h * divisor(ow, W, kw, sw, pl, pr, cip);
            const float fdiv = (float)dv;
            for (int64_t c0 = 0; c0 < C; c0 += CB) {
                const int cb = (int)(C - c0 < CB ? C - c0 : CB);
                float s[CB];
                for (int c = 0; c < cb; ++c) s[c] = 0.0f;
                for (int32_t j = 0; j < kw; ++j) {
                    const int64_t w = ow * sw - pl + j;
                    if (w < 0 || w >= W) continue;
                    float col[CB];
                    for (int c = 0; c < cb; ++c) col[c] = 0.0f;
                    for (int32_t i = 0; i < kh; ++i) {
                        const int64_t h = oh * sh - pt + i;
                        if (h < 0 || h >= H) continue;
                        const float* v = xn + (h * W + w) * C + c0;
                        for (int c = 0; c < cb; ++c) col[c] += v[c];
                    }
                    for (int c = 0; c < cb; ++c) s[c] += col[c];
                }
                if (dv > 0)
                    for (int c = 0; c < cb; ++c) yo[c0 + c] = s[c] / fdiv;
                else
                    for (int c = 0; c < cb; ++c) yo[c0 + c] = 0.0f;
            }
        }
    }
}
