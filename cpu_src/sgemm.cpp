// float32 GEMM of the numpy backend: C = act(A @ B + bias), and the NHWC convolution with its
// im2col folded into the A operand (no column buffer). Called from pygpu_ops/linalg.py and
// pygpu_ops/conv.py through pygpu_ops/_runtime/native.py with a list of (rows, columns) blocks of
// C, which OpenMP threads take one at a time (`pygpu::run_blocks`).
//
//   A is read through MR row pointers per tile: rows of a row-major (M, K) matrix for the GEMM;
//   for the convolution, the pixel's input vector x[n, ih, iw, :] of the current kernel tap, or a
//   row of zeros where the tap lands in the padding. Either way a K block's A rows are contiguous,
//   so A is never packed or copied: one tile's MR x kc slice (at most 14 x 512 floats, 28 KiB)
//   stays in L1 while the tile runs across every B panel of the block.
//   B (K, N), any strides, is packed per K block into NR-wide panels, [panel][k][NR], the columns
//   past N zero (a 16 x 16 register transpose when B is column-major, e.g. conv weights (O, K)).
//   The micro-kernel keeps MR x NR = 14 x 32 sums in 28 of the 32 zmm registers: per k, two loads
//   of B, 14 broadcasts of A (folded into the FMA), 28 FMAs; 4-cycle FMA latency over two FMA
//   pipes needs at least 8 independent sums, 28 hide it with room.
//
// Numerics: each C[i, j] is one float32 FMA chain over k = 0 .. K-1 in order (K blocks reload
// the partial sum from C), then + bias[j], then the activation, in float32. No term is skipped:
// 0 * inf and 0 * NaN are NaN as in a plain dot product. Padding lanes (rows past M point at a
// real row, columns past N are zero in packed B) are computed but never stored, so they cannot
// leak a NaN into a real output.
// act: 0 none, 1 relu (max(v, 0), NaN kept), 2 leaky (v < 0 ? slope * v : v), 3 relu6.
//
// Without AVX-512F (or with PYGPU_SGEMM_PORTABLE defined) the same loops run a plain C++
// micro-kernel over a float[MR][NR] tile (a * b + c, rounded twice: no FMA contraction in
// -std=c++17); the results then differ from the AVX-512 path in the last bits only.
#include "common.h"
#include <cstdlib>
#include <vector>

#if defined(__AVX512F__) && !defined(PYGPU_SGEMM_PORTABLE)
#include <immintrin.h>
#define PYGPU_SGEMM_AVX512 1
#endif

namespace {

constexpr int MR = 14;
constexpr int NR = 32;
constexpr int64_t KC_MAX = 512;     // K block: the tile's A rows (14 x 512 x 4 B = 28 KiB) fit in L1
constexpr int64_t NC_MAX = 512;     // columns per packed B block (512 x 512 x 4 B = 1 MiB of L2 at most)
constexpr int64_t CONV_KC = 3072;   // rows of B per convolution K block: a panel of 384 KiB in L2

#ifdef PYGPU_SGEMM_AVX512
// o[l][c] = r[c][l]: a 16 x 16 transpose in registers (unpack pairs, then pairs of pairs, then
// 128-bit lanes across rows).
inline void transpose16(const __m512* r, __m512* o) {
    __m512 t[16], u[16];
    for (int c = 0; c < 16; c += 2) {   // per 128-bit lane: (a0 b0 a1 b1), (a2 b2 a3 b3)
        t[c] = _mm512_unpacklo_ps(r[c], r[c + 1]);
        t[c + 1] = _mm512_unpackhi_ps(r[c], r[c + 1]);
    }
    for (int c = 0; c < 16; c += 4) {   // per lane, u[c + q] = rows c .. c+3 at element q
        const __m512d a = _mm512_castps_pd(t[c]), b = _mm512_castps_pd(t[c + 2]);
        const __m512d e = _mm512_castps_pd(t[c + 1]), f = _mm512_castps_pd(t[c + 3]);
        u[c] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[c + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[c + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(e, f));
        u[c + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(e, f));
    }
    for (int q = 0; q < 4; ++q) {      // lane L of u[q], u[4+q], u[8+q], u[12+q] is column 4 L + q
        const __m512 v = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x44);
        const __m512 v2 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xEE);
        const __m512 w = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x44);
        const __m512 w2 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xEE);
        o[q] = _mm512_shuffle_f32x4(v, w, 0x88);
        o[4 + q] = _mm512_shuffle_f32x4(v, w, 0xDD);
        o[8 + q] = _mm512_shuffle_f32x4(v2, w2, 0x88);
        o[12 + q] = _mm512_shuffle_f32x4(v2, w2, 0xDD);
    }
}
#endif

// Columns n0 .. n1 of rows 0 .. kc of B (element (k, j) at B[k * rs + j * cs]) into panels of
// NR columns, pstride floats apart: dst[p * pstride + k * NR + c] = B[k, n0 + p * NR + c], zero
// past n1.
void pack_b(const float* B, int64_t rs, int64_t cs, int64_t kc, int64_t n0, int64_t n1, int64_t pstride,
            float* __restrict dst) {
    for (int64_t j0 = n0; j0 < n1; j0 += NR, dst += pstride) {
        const int nc = (int)(n1 - j0 < NR ? n1 - j0 : NR);
        const float* src = B + j0 * cs;
#ifdef PYGPU_SGEMM_AVX512
        if (cs == 1) {                  // row-major B: each k is a (masked) copy of nc floats
            const __mmask16 m0 = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
            const __mmask16 m1 = nc <= 16 ? 0 : nc >= 32 ? 0xFFFF : (__mmask16)((1u << (nc - 16)) - 1);
            for (int64_t k = 0; k < kc; ++k) {
                _mm512_store_ps(dst + k * NR, _mm512_maskz_loadu_ps(m0, src + k * rs));
                _mm512_store_ps(dst + k * NR + 16, _mm512_maskz_loadu_ps(m1, src + k * rs + 16));
            }
            continue;
        }
        if (rs == 1) {                  // column-major B: 16 x 16 transposes, columns as rows
            for (int h = 0; h < 2; ++h)
                for (int64_t k = 0; k < kc; k += 16) {
                    const int kn = (int)(kc - k < 16 ? kc - k : 16);
                    const __mmask16 km = kn == 16 ? 0xFFFF : (__mmask16)((1u << kn) - 1);
                    __m512 r[16];
                    for (int c = 0; c < 16; ++c)
                        r[c] = h * 16 + c < nc ? _mm512_maskz_loadu_ps(km, src + (h * 16 + c) * cs + k)
                                               : _mm512_setzero_ps();
                    __m512 o[16];
                    transpose16(r, o);
                    for (int l = 0; l < kn; ++l) _mm512_store_ps(dst + (k + l) * NR + h * 16, o[l]);
                }
            continue;
        }
        if (cs > 0 && cs <= INT32_MAX / NR) {   // strided both ways (NCHW conv weights): gathers
            const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                   _mm512_set1_epi32((int32_t)cs));
            const __mmask16 m0 = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
            const __mmask16 m1 = nc <= 16 ? 0 : nc >= 32 ? 0xFFFF : (__mmask16)((1u << (nc - 16)) - 1);
            for (int64_t k = 0; k < kc; ++k) {
                const float* row = src + k * rs;
                _mm512_store_ps(dst + k * NR, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, idx, row, 4));
                _mm512_store_ps(dst + k * NR + 16,
                                _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1, idx, row + 16 * cs, 4));
            }
            continue;
        }
#endif
        for (int64_t k = 0; k < kc; ++k)
            for (int c = 0; c < NR; ++c)
                dst[k * NR + c] = c < nc ? src[k * rs + c * cs] : 0.0f;
    }
}

#ifdef PYGPU_SGEMM_AVX512
// NCHW conv weights, a K block of every one of the T taps: B(t, c, o) = w[o * cs + c * T + t] is
// contiguous over q = c * T + t for each output channel o, so 16 x 16 transposes of 16 channels
// by 16 consecutive q give whole 16-wide rows of packed B (as pack_b: dst[p * pstride + (t * C +
// c) * NR + col]), where per-tap packing would gather element by element.
void pack_b_taps(const float* w, int64_t T, int64_t C, int64_t cs, int64_t n0, int64_t n1, int64_t pstride,
                 float* __restrict dst) {
    const int64_t Q = C * T;
    for (int64_t j0 = n0; j0 < n1; j0 += NR, dst += pstride) {
        const int nc = (int)(n1 - j0 < NR ? n1 - j0 : NR);
        for (int h = 0; h < 2; ++h)
            for (int64_t q = 0; q < Q; q += 16) {
                const int kn = (int)(Q - q < 16 ? Q - q : 16);
                const __mmask16 km = kn == 16 ? 0xFFFF : (__mmask16)((1u << kn) - 1);
                __m512 r[16], o[16];
                for (int c = 0; c < 16; ++c)
                    r[c] = h * 16 + c < nc ? _mm512_maskz_loadu_ps(km, w + (j0 + h * 16 + c) * cs + q)
                                           : _mm512_setzero_ps();
                transpose16(r, o);
                int64_t c0 = q / T, t0 = q % T;
                for (int l = 0; l < kn; ++l) {
                    _mm512_store_ps(dst + (t0 * C + c0) * NR + h * 16, o[l]);
                    if (++t0 == T) t0 = 0, ++c0;
                }
            }
    }
}
#endif

#ifdef PYGPU_SGEMM_AVX512
inline __m512 activate(__m512 v, int act, __m512 slope) {
    const __m512 zero = _mm512_setzero_ps();
    if (act == 1 || act == 3) v = _mm512_max_ps(zero, v);             // NaN in v: v (the second operand)
    if (act == 3) v = _mm512_min_ps(_mm512_set1_ps(6.0f), v);
    if (act == 2) v = _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v, slope);
    return v;
}

// C tile (rows x cols of it real) = [C +] A rows . B panel over kc; on the last K block + bias, act.
void kernel(const float* const* a, int64_t nseg, int64_t seg, const float* __restrict b, float* c, int64_t ldc,
            int rows, int cols, bool first, bool last, const float* bias, int act, float slope,
            float* const* fin, int64_t fcs) {
    const __mmask16 m0 = cols >= 16 ? 0xFFFF : (__mmask16)((1u << cols) - 1);
    const __mmask16 m1 = cols <= 16 ? 0 : cols >= 32 ? 0xFFFF : (__mmask16)((1u << (cols - 16)) - 1);
    __m512 acc[MR][2];
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
        if (first || i >= rows) {
            acc[i][0] = _mm512_setzero_ps();
            acc[i][1] = _mm512_setzero_ps();
        } else {
            acc[i][0] = _mm512_maskz_loadu_ps(m0, c + i * ldc);
            acc[i][1] = _mm512_maskz_loadu_ps(m1, c + i * ldc + 16);
        }
    }
    for (int64_t sg = 0; sg < nseg; ++sg, a += MR) {   // segment sg: its own MR row pointers
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5], *a6 = a[6];
    const float *a7 = a[7], *a8 = a[8], *a9 = a[9], *a10 = a[10], *a11 = a[11], *a12 = a[12], *a13 = a[13];
    for (int64_t k = 0; k < seg; ++k, b += NR) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#define PYGPU_ROW(i)                                                         \
        {   const __m512 av = _mm512_set1_ps(a##i[k]);                       \
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);                  \
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]); }
        PYGPU_ROW(0) PYGPU_ROW(1) PYGPU_ROW(2) PYGPU_ROW(3) PYGPU_ROW(4) PYGPU_ROW(5) PYGPU_ROW(6)
        PYGPU_ROW(7) PYGPU_ROW(8) PYGPU_ROW(9) PYGPU_ROW(10) PYGPU_ROW(11) PYGPU_ROW(12) PYGPU_ROW(13)
#undef PYGPU_ROW
    }
    }
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    const __m512 vslope = _mm512_set1_ps(slope);
    if (last && bias) {
        bias0 = _mm512_maskz_loadu_ps(m0, bias);
        bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
        if (i >= rows) break;
        __m512 v0 = acc[i][0], v1 = acc[i][1];
        if (last) {
            if (bias) {
                v0 = _mm512_add_ps(v0, bias0);
                v1 = _mm512_add_ps(v1, bias1);
            }
            v0 = activate(v0, act, vslope);
            v1 = activate(v1, act, vslope);
            if (fcs > INT32_MAX / NR) {     // indices past int32: element by element
                alignas(64) float t[NR];
                _mm512_store_ps(t, v0);
                _mm512_store_ps(t + 16, v1);
                for (int j = 0; j < cols; ++j) fin[i][j * fcs] = t[j];
                continue;
            }
            if (fcs) {          // column stride fcs (NCHW output): one scatter per 16 columns
                const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                       _mm512_set1_epi32((int32_t)fcs));
                _mm512_mask_i32scatter_ps(fin[i], m0, idx, v0, 4);
                _mm512_mask_i32scatter_ps(fin[i] + 16 * fcs, m1, idx, v1, 4);
                continue;
            }
        }
        _mm512_mask_storeu_ps(c + i * ldc, m0, v0);
        _mm512_mask_storeu_ps(c + i * ldc + 16, m1, v1);
    }
}
#else
inline float activate(float v, int act, float slope) {
    if (act == 1 || act == 3) v = 0.0f > v ? 0.0f : v;                // NaN: v
    if (act == 3) v = 6.0f < v ? 6.0f : v;
    if (act == 2) v = v < 0.0f ? slope * v : v;
    return v;
}

void kernel(const float* const* a, int64_t nseg, int64_t seg, const float* __restrict b, float* c, int64_t ldc,
            int rows, int cols, bool first, bool last, const float* bias, int act, float slope,
            float* const* fin, int64_t fcs) {
    float acc[MR][NR];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j)
            acc[i][j] = first || i >= rows || j >= cols ? 0.0f : c[i * ldc + j];
    for (int64_t sg = 0; sg < nseg; ++sg, a += MR)
        for (int64_t k = 0; k < seg; ++k, b += NR)
            for (int i = 0; i < MR; ++i) {
                const float av = a[i][k];
                for (int j = 0; j < NR; ++j) acc[i][j] += av * b[j];
            }
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) {
            float v = acc[i][j];
            if (last) v = activate(bias ? v + bias[j] : v, act, slope);
            if (last && fcs) fin[i][j * fcs] = v;
            else c[i * ldc + j] = v;
        }
}
#endif

// This thread's buffer for packed B: 64-byte aligned (aligned vector loads), at least n floats,
// kept between calls. A fresh allocation per call (100s of KiB: an mmap) cost page faults and,
// on release, a TLB shootdown that interrupts the other threads mid-kernel.
float* packed_buffer(int64_t n) {
    struct Buffer {
        float* p = nullptr;
        int64_t size = 0;
        ~Buffer() { std::free(p); }
    };
    thread_local Buffer buf;
    if (n > buf.size) {
        std::free(buf.p);
        buf.size = n > 2 * buf.size ? n : 2 * buf.size;
        buf.p = (float*)std::aligned_alloc(64, (size_t)((buf.size * 4 + 63) / 64 * 64));
    }
    return buf.p;
}

// Balanced pieces of at most KC_MAX.
inline int64_t k_pieces(int64_t K) { return K <= 0 ? 1 : (K + KC_MAX - 1) / KC_MAX; }

// Rows m0 .. m1, columns n0 .. n1 of C, over nblocks K blocks. K block kb is `nseg(kb)` segments
// of `seg(kb)` rows of B each; `pack(kb, nseg, seg, j0, j1, pstride, dst)` packs its B (as
// pack_b: panels pstride apart, segment s at rows s * seg ..) and `rows_at(i, rows, kb, ptrs)` fills the MR row pointers of A of every segment of the
// tile starting at row i (ptrs[s * MR + r]); rows past m1 must point at readable memory (their
// sums are dropped). Partial sums between K blocks are kept in C. With fcs != 0 the last K block
// stores column j of row i at fin_at(i)[j * fcs] instead of C.
//   tile_outer: for each tile, every panel of the block (the tile's A rows stay in L1, B streams
//   from L2: the GEMM, K blocks of KC_MAX); otherwise for each panel every tile (the panel, up
//   to CONV_KC x NR floats, stays in L2; the convolution, whose taps re-read the same input
//   pixels, so one K block spans all of them and the sums never leave the registers).
template <class Seg, class Pack, class Rows, class Fin>
void drive(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t nblocks, int64_t max_seg, Seg seg_of,
           Pack pack, Rows rows_at, Fin fin_at, int64_t fcs, float* C, int64_t ldc,
           const float* bias, int act, float slope, bool tile_outer) {
    if (m1 <= m0 || n1 <= n0) return;
    int64_t kc_max = 1;
    for (int64_t kb = 0; kb < nblocks; ++kb) {
        int64_t nseg, seg;
        seg_of(kb, nseg, seg);
        kc_max = nseg * seg > kc_max ? nseg * seg : kc_max;
    }
    const int64_t nc_max = tile_outer ? (n1 - n0 < NC_MAX ? n1 - n0 : NC_MAX) : NR;
    float* const packed = packed_buffer(kc_max * ((nc_max + NR - 1) / NR) * NR);
    std::vector<const float*> ptrs((size_t)(max_seg * MR));
    float* fin[MR];
    float* fcol[MR];
    auto run = [&](int64_t i, int rows, int64_t j, int64_t j1, int64_t kb, int64_t nseg, int64_t seg,
                   const float* panel) {
        const bool last = kb == nblocks - 1;
        if (last && fcs)
            for (int r = 0; r < rows; ++r) fcol[r] = fin[r] + j * fcs;
        kernel(ptrs.data(), nseg, seg, panel, C + i * ldc + j, ldc, rows, (int)(j1 - j < NR ? j1 - j : NR),
               kb == 0, last, bias ? bias + j : nullptr, act, slope, fcol, fcs);
    };
    for (int64_t j0 = n0; j0 < n1; j0 += nc_max) {
        const int64_t j1 = n1 - j0 < nc_max ? n1 : j0 + nc_max;
        for (int64_t kb = 0; kb < nblocks; ++kb) {
            int64_t nseg, seg;
            seg_of(kb, nseg, seg);
            pack(kb, nseg, seg, j0, j1, nseg * seg * NR, packed);
            for (int64_t i = m0; i < m1; i += MR) {
                const int rows = (int)(m1 - i < MR ? m1 - i : MR);
                rows_at(i, rows, kb, ptrs.data());
                if (kb == nblocks - 1 && fcs) fin_at(i, rows, fin);
                for (int64_t j = j0; j < j1; j += NR)
                    run(i, rows, j, j1, kb, nseg, seg, packed + (j - j0) * nseg * seg);
            }
        }
    }
}

}  // namespace

// C[m0:m1, n0:n1] = act(A @ B + bias): A (M, K) row-major with leading dimension lda, B (K, N)
// with element (k, j) at B[k * rs + j * cs], C row-major with leading dimension ldc, bias (N,) or
// null. Blocks of one C on different threads must not overlap.
static void sgemm_block(const float* A, int64_t lda, const float* B, int64_t rs, int64_t cs, float* C,
                        int64_t ldc, int64_t K, const float* bias, int32_t act, float slope,
                        int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const int64_t nb = k_pieces(K);
    auto p0_of = [&](int64_t kb) { return K * kb / nb; };
    auto seg_of = [&](int64_t kb, int64_t& nseg, int64_t& seg) { nseg = 1; seg = p0_of(kb + 1) - p0_of(kb); };
    auto pack = [&](int64_t kb, int64_t, int64_t seg, int64_t j0, int64_t j1, int64_t pstride, float* dst) {
        pack_b(B + p0_of(kb) * rs, rs, cs, seg, j0, j1, pstride, dst);
    };
    auto rows_at = [&](int64_t i, int rows, int64_t kb, const float** ptrs) {
        for (int r = 0; r < MR; ++r) ptrs[r] = A + (i + (r < rows ? r : 0)) * lda + p0_of(kb);
    };
    auto no_fin = [](int64_t, int, float**) {};
    drive(m0, m1, n0, n1, nb, 1, seg_of, pack, rows_at, no_fin, 0, C, ldc, bias, act, slope, true);
}

// The convolution of one group as a GEMM over its im2col matrix, without building it:
// y[p, o] (p = (n, oh, ow) flattened) = act(sum over taps t and channels c of
// x[n, oh * sh - pt + th[t] * dh, ow * sw - pl + tw[t] * dw, c] * B(t, c, o) + bias[o]), the input
// taken as 0 outside the image; tap_info = (th, tw, boff), `taps` each; x (N, H, W, C) contiguous;
// B(t, c, o) at w[boff[t] + c * rs + o * cs]
// (NHWC weights (O, kh, kw, C): boff = (kh*KW + kw) * C, rs 1, cs KH*KW*C; NCHW (O, C, kh, kw):
// boff = kh*KW + kw, rs KH*KW, cs C*KH*KW: no copy of the weights either way). Pixels m0 .. m1,
// output channels n0 .. n1. y is `out` (row-major, leading dimension ldc) when nchw_out is null;
// otherwise y[p, o] goes to nchw_out[n * O * OH*OW + o * OH*OW + q] (q = oh * OW + ow) and `out`
// holds only partial sums between K blocks.
// A segment of the K sum is one tap's C channels (C <= KC_MAX) or a balanced piece of them; a
// tile's A rows for a segment are slices of its pixels' channel vectors, or of `zeros` (at least
// min(C, KC_MAX) floats) where the tap is in the padding. A K block is as many whole taps as fit
// CONV_KC rows of B (one K block for 3x3 kernels up to C = 341), or one piece of a tap.
static void conv_block(const float* x, int64_t H, int64_t W, int64_t C, int64_t OH, int64_t OW,
                       int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                       const int64_t* tap_info, int64_t taps,
                       const float* zeros, const float* w, int64_t rs, int64_t cs, float* out,
                       int64_t ldc, float* nchw_out, int64_t O, const float* bias, int32_t act,
                       float slope, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const int64_t *th = tap_info, *tw = tap_info + taps, *boff = tap_info + 2 * taps;
    const int64_t per_tap = k_pieces(C), hw = OH * OW;
    // taps per K block (with per_tap > 1 a block is one piece of one tap)
    const int64_t tpb = per_tap > 1 ? 1 : (CONV_KC / C < 1 ? 1 : CONV_KC / C < taps ? CONV_KC / C : taps);
    const int64_t nblocks = per_tap > 1 ? taps * per_tap : (taps + tpb - 1) / tpb;
    auto seg_of = [&](int64_t kb, int64_t& nseg, int64_t& seg) {
        if (per_tap > 1) {
            const int64_t s = kb % per_tap;
            nseg = 1;
            seg = C * (s + 1) / per_tap - C * s / per_tap;
        } else {
            nseg = taps - kb * tpb < tpb ? taps - kb * tpb : tpb;
            seg = C;
        }
    };
    // segment sg of block kb: (tap, first channel)
    auto tap_of = [&](int64_t kb, int64_t sg, int64_t& t, int64_t& c0) {
        if (per_tap > 1) {
            t = kb / per_tap;
            c0 = C * (kb % per_tap) / per_tap;
        } else {
            t = kb * tpb + sg;
            c0 = 0;
        }
    };
    // NCHW weights (rs = taps, boff[t] = t) and a block of every tap: transposes, not gathers
    bool interleaved = rs == taps && taps > 1;
    for (int64_t t = 0; t < taps && interleaved; ++t) interleaved = boff[t] == t;
    auto pack = [&](int64_t kb, int64_t nseg, int64_t seg, int64_t j0, int64_t j1, int64_t pstride, float* dst) {
#ifdef PYGPU_SGEMM_AVX512
        if (interleaved && nseg == taps) return pack_b_taps(w, taps, C, cs, j0, j1, pstride, dst);
#endif
        for (int64_t sg = 0; sg < nseg; ++sg) {
            int64_t t, c0;
            tap_of(kb, sg, t, c0);
            pack_b(w + boff[t] + c0 * rs, rs, cs, seg, j0, j1, pstride, dst + sg * seg * NR);
        }
    };
    auto rows_at = [&](int64_t i, int rows, int64_t kb, const float** ptrs) {
        int64_t nseg, seg;
        seg_of(kb, nseg, seg);
        const int64_t n_i = i / hw, oh_i = i % hw / OW, ow_i = i % OW;   // divisions once per tile
        for (int64_t sg = 0; sg < nseg; ++sg, ptrs += MR) {
            int64_t t, c0;
            tap_of(kb, sg, t, c0);
            const int64_t oy = th[t] * dh - pt, ox = tw[t] * dw - pl;
            int64_t n = n_i, oh = oh_i, ow = ow_i;
            for (int r = 0; r < rows; ++r) {
                const int64_t ih = oh * sh + oy, iw = ow * sw + ox;
                ptrs[r] = ih >= 0 && ih < H && iw >= 0 && iw < W ? x + ((n * H + ih) * W + iw) * C + c0 : zeros;
                if (++ow == OW) {
                    ow = 0;
                    if (++oh == OH) oh = 0, ++n;
                }
            }
            for (int r = rows; r < MR; ++r) ptrs[r] = ptrs[0];
        }
    };
    auto fin_at = [&](int64_t i, int rows, float** fin) {
        int64_t n = i / hw, q = i % hw;
        for (int r = 0; r < rows; ++r) {
            fin[r] = nchw_out + n * O * hw + q;
            if (++q == hw) q = 0, ++n;
        }
    };
    drive(m0, m1, n0, n1, nblocks, per_tap > 1 ? 1 : tpb, seg_of, pack, rows_at, fin_at, nchw_out ? hw : 0,
          out, ldc, bias, act, slope, false);
}

// The exported entry points take a list of C blocks, blocks[4 k .. 4 k + 3] = (m0, m1, n0, n1)
// (disjoint), run on `threads` threads (`pygpu::run_blocks`, common.h).
PYGPU_EXPORT void sgemm_f32(const float* A, int64_t lda, const float* B, int64_t rs, int64_t cs, float* C,
                            int64_t ldc, int64_t K, const float* bias, int32_t act, float slope,
                            const int64_t* blocks, int64_t nblocks, int32_t threads) {
    auto one = [&](int64_t k) {
        const int64_t* b = blocks + 4 * k;
        sgemm_block(A, lda, B, rs, cs, C, ldc, K, bias, act, slope, b[0], b[1], b[2], b[3]);
    };
    pygpu::run_blocks(nblocks, threads, one);
}

PYGPU_EXPORT void conv_nhwc_f32(const float* x, int64_t H, int64_t W, int64_t C, int64_t OH, int64_t OW,
                                int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                                const int64_t* tap_info, int64_t taps,
                                const float* zeros, const float* w, int64_t rs, int64_t cs, float* out,
                                int64_t ldc, float* nchw_out, int64_t O, const float* bias, int32_t act,
                                float slope, const int64_t* blocks, int64_t nblocks, int32_t threads) {
    auto one = [&](int64_t k) {
        const int64_t* b = blocks + 4 * k;
        conv_block(x, H, W, C, OH, OW, sh, sw, pt, pl, dh, dw, tap_info, taps, zeros, w, rs, cs, out, ldc,
                   nchw_out, O, bias, act, slope, b[0], b[1], b[2], b[3]);
    };
    pygpu::run_blocks(nblocks, threads, one);
}

// *out = 1 when this build runs the AVX-512 micro-kernel, 0 for the portable one (for the tests).
PYGPU_EXPORT void sgemm_f32_avx512(int32_t* out) {
#ifdef PYGPU_SGEMM_AVX512
    *out = 1;
#else
    *out = 0;
#endif
}
