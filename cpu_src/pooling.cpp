// Pooling of the numpy backend. NHWC (max and avg): each output pixel's window is walked tap by tap with the C
// channels of a tap contiguous, so the inner loop is a vector over channels (the NumPy route
// slices the window taps out of the array one strided view at a time). Channels go 16 at a time
// (a fixed width the compiler keeps in one vector register across the window), the last C % 16
// one at a time. One call computes the output rows [r0, r1) of the flattened (N * OH) rows, so
// threads take disjoint row ranges.
//
// The results are the NumPy route's bits (pygpu_ops/pooling.py):
//   max: m starts at -inf and a tap replaces it when larger or NaN, walking the window row-major,
//        so of equal values the first stays and of NaNs the last; a window without an input tap
//        gives -inf.
//   avg: per window column (in tap order) the sum over its rows starting from +0, then the sum of
//        those column sums starting from +0, over the divisor as float (window clipped to the
//        padded input with count_include_pad, else to the input); a divisor of 0 gives 0.
// NCHW avg goes the NumPy route's way, separably: per output row, the window rows of the input
// summed into a row of column sums (contiguous, vectorized over W), then each output the sum of
// its window's column sums, so the bits are the same as well. (NCHW max is left to NumPy, which
// is within 0.6x of PyTorch there.)
#include "common.h"

#include <vector>

namespace {

constexpr int V = 16;

// The taps of one window along an axis that land in the input: [lo, hi) of tap indices.
struct Taps {
    int32_t lo, hi;
};

inline Taps taps(int64_t o, int32_t s, int32_t p, int32_t d, int32_t k, int64_t size) {
    const int64_t start = o * s - p;
    int32_t lo = 0, hi = k;
    while (lo < k && start + (int64_t)lo * d < 0) ++lo;
    while (hi > lo && start + (int64_t)(hi - 1) * d >= size) --hi;
    return {lo, hi};
}

// A vector of W floats, a single float for W = 1 (GCC's vector extension: the compiler lowers it
// to the widest registers it has, one zmm for 16 floats with AVX-512).
template <int W>
struct Vec {
    typedef float type __attribute__((vector_size(4 * W)));
};
template <>
struct Vec<1> {
    typedef float type;
};

template <int W>
inline typename Vec<W>::type load(const float* p) {
    typename Vec<W>::type v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <int W>
inline void store(float* p, typename Vec<W>::type v) { std::memcpy(p, &v, sizeof v); }

// max over the window of W channels (W = V, or 1 for the tail) from channel c of pixel rows
template <int W>
inline void max_window(const float* __restrict xn, float* __restrict yo, int64_t Wd, int64_t C, int64_t h0,
                       int64_t w0, int32_t dh, int32_t dw, Taps th, Taps tw) {
    typedef typename Vec<W>::type vf;
    vf m = vf{} - INFINITY, nan = vf{};
    for (int32_t i = th.lo; i < th.hi; ++i)
        for (int32_t j = tw.lo; j < tw.hi; ++j) {
            const vf v = load<W>(xn + ((h0 + (int64_t)i * dh) * Wd + w0 + (int64_t)j * dw) * C);
            m = v > m ? v : m;          // one vmaxps: equal values keep the first, NaN is skipped
            nan = v != v ? v : nan;     // the last NaN, kept aside (one compare and a masked move)
        }
    store<W>(yo, nan != nan ? nan : m);
}

template <int W>
inline void avg_window(const float* __restrict xn, float* __restrict yo, int64_t Wd, int64_t C, int64_t h0,
                       int64_t w0, Taps th, Taps tw, int64_t dv) {
    typedef typename Vec<W>::type vf;
    vf s = vf{};
    for (int32_t j = tw.lo; j < tw.hi; ++j) {
        vf col = vf{};
        for (int32_t i = th.lo; i < th.hi; ++i) col += load<W>(xn + ((h0 + i) * Wd + w0 + j) * C);
        s += col;
    }
    store<W>(yo, dv > 0 ? s / (float)dv : vf{});
}

// The divisor along one axis (pooling.py:_avg_divisor): begin pad p0, end pad p1.
inline int64_t divisor(int64_t o, int64_t size, int32_t k, int32_t s, int32_t p0, int32_t p1, int32_t cip) {
    const int64_t start = o * s - p0;
    const int64_t end = start + k < size + p1 ? start + k : size + p1;
    if (cip) return end - start;
    const int64_t valid = (end < size ? end : size) - (start > 0 ? start : 0);
    return valid > 0 ? valid : 0;
}

void max_pool_rows(const float* __restrict x, float* __restrict y, int64_t H, int64_t W,
                                    int64_t C, int64_t OH, int64_t OW, int32_t kh, int32_t kw, int32_t sh,
                                    int32_t sw, int32_t ph, int32_t pw, int32_t dh, int32_t dw, int64_t r0,
                                    int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / OH, oh = r % OH;
        const float* xn = x + n * H * W * C;
        const Taps th = taps(oh, sh, ph, dh, kh, H);
        for (int64_t ow = 0; ow < OW; ++ow) {
            float* yo = y + (r * OW + ow) * C;
            const Taps tw = taps(ow, sw, pw, dw, kw, W);
            const int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
            int64_t c = 0;
            for (; c + V <= C; c += V) max_window<V>(xn + c, yo + c, W, C, h0, w0, dh, dw, th, tw);
            for (; c < C; ++c) max_window<1>(xn + c, yo + c, W, C, h0, w0, dh, dw, th, tw);
        }
    }
}

void avg_pool_rows(const float* __restrict x, float* __restrict y, int64_t H, int64_t W,
                                    int64_t C, int64_t OH, int64_t OW, int32_t kh, int32_t kw, int32_t sh,
                                    int32_t sw, int32_t pt, int32_t pb, int32_t pl, int32_t pr, int32_t cip,
                                    int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / OH, oh = r % OH;
        const float* xn = x + n * H * W * C;
        const Taps th = taps(oh, sh, pt, 1, kh, H);
        const int64_t dv_h = divisor(oh, H, kh, sh, pt, pb, cip);
        for (int64_t ow = 0; ow < OW; ++ow) {
            float* yo = y + (r * OW + ow) * C;
            const Taps tw = taps(ow, sw, pl, 1, kw, W);
            const int64_t dv = dv_h * divisor(ow, W, kw, sw, pl, pr, cip);
            const int64_t h0 = oh * sh - pt, w0 = ow * sw - pl;
            int64_t c = 0;
            for (; c + V <= C; c += V) avg_window<V>(xn + c, yo + c, W, C, h0, w0, th, tw, dv);
            for (; c < C; ++c) avg_window<1>(xn + c, yo + c, W, C, h0, w0, th, tw, dv);
        }
    }
}

// NCHW avg: output rows [r0, r1) of the flattened (N * C * OH) planes' rows
void avg_pool_nchw_rows(const float* __restrict x, float* __restrict y, int64_t H, int64_t W, int64_t OH,
                        int64_t OW, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt, int32_t pb,
                        int32_t pl, int32_t pr, int32_t cip, int64_t r0, int64_t r1) {
    std::vector<float> colbuf(static_cast<size_t>(W > 0 ? W : 1));
    float* __restrict col = colbuf.data();
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t plane = r / OH, oh = r % OH;
        const float* xp = x + plane * H * W;
        float* yr = y + r * OW;
        const Taps th = taps(oh, sh, pt, 1, kh, H);
        for (int64_t w = 0; w < W; ++w) col[w] = 0.0f;
        for (int32_t i = th.lo; i < th.hi; ++i) {
            const float* xr = xp + (oh * sh - pt + i) * W;
            for (int64_t w = 0; w < W; ++w) col[w] += xr[w];
        }
        const int64_t dv_h = divisor(oh, H, kh, sh, pt, pb, cip);
        for (int64_t ow = 0; ow < OW; ++ow) {
            const Taps tw = taps(ow, sw, pl, 1, kw, W);
            const int64_t w0 = ow * sw - pl;
            float s = 0.0f;
            for (int32_t j = tw.lo; j < tw.hi; ++j) s += col[w0 + j];
            const int64_t dv = dv_h * divisor(ow, W, kw, sw, pl, pr, cip);
            yr[ow] = dv > 0 ? s / (float)dv : 0.0f;
        }
    }
}

}  // namespace

PYGPU_EXPORT void avg_pool_nchw_f32(const float* x, float* y, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                    int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt, int32_t pb,
                                    int32_t pl, int32_t pr, int32_t cip, int64_t rows, int32_t nt) {
    pygpu::parallel_rows(0, rows, nt, [&](int64_t a, int64_t b) {
        avg_pool_nchw_rows(x, y, H, W, OH, OW, kh, kw, sh, sw, pt, pb, pl, pr, cip, a, b);
    });
}

// output rows [0, rows) of the flattened (N * OH) split over nt threads
PYGPU_EXPORT void max_pool_nhwc_f32(const float* x, float* y, int64_t H, int64_t W, int64_t C, int64_t OH,
                                    int64_t OW, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t ph,
                                    int32_t pw, int32_t dh, int32_t dw, int64_t rows, int32_t nt) {
    pygpu::parallel_rows(0, rows, nt, [&](int64_t a, int64_t b) {
        max_pool_rows(x, y, H, W, C, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, a, b);
    });
}

PYGPU_EXPORT void avg_pool_nhwc_f32(const float* x, float* y, int64_t H, int64_t W, int64_t C, int64_t OH,
                                    int64_t OW, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt,
                                    int32_t pb, int32_t pl, int32_t pr, int32_t cip, int64_t rows, int32_t nt) {
    pygpu::parallel_rows(0, rows, nt, [&](int64_t a, int64_t b) {
        avg_pool_rows(x, y, H, W, C, OH, OW, kh, kw, sh, sw, pt, pb, pl, pr, cip, a, b);
    });
}
