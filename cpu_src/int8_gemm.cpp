// Exact int8 GEMM of the numpy backend (pygpu_ops/quantization.py `_native_acc` calls it with
// blocks of the output for OpenMP threads, `int8_gemm` at the end): c (M, N) int32 = sum_k (a[m, k] - za[m]) (b[k, n] - zb[n])
// for a (M, K) and b (K, N) of int8 or uint8 (independently; the bytes are passed with a flag),
// za per row or scalar, zb per column or scalar, both in their operand's own range.
//
// With AVX512-VNNI (this file is compiled with -march=native, so the choice is made at compile
// time for this CPU) the raw products go through vpdpbusd, which multiplies 4 unsigned bytes by 4
// signed bytes and adds the 4 products to an int32 lane:
//   * the roles: a is read as it is, as the signed operand when a is int8 and as the unsigned one
//     when a is uint8, so a is never copied; b is packed as the other kind, d = b + beta with
//     beta = +128 (both int8: xor 0x80 makes b unsigned), -128 (both uint8: xor 0x80 makes it
//     signed) or 0 (mixed kinds). Then, with zd = zb + beta,
//       (a - za)(b - zb) = (a - za)(d - zd) = a d - za d - zd a + za zd, so
//       c = sum_k a d - za colsum(d) - zd rowsum(a) + K za zd
//         = sum_k a d - za (colsum(d) - K zd) - zd rowsum(a).
//     Everything is computed modulo 2**32 (unsigned or vpmulld/vpaddd wraparound), which gives
//     the exact result whenever it fits int32; the caller limits K so that it does. A lane's 4
//     products are at most 4 * 255 * 128 in magnitude, so vpdpbusd's own sum cannot overflow.
//   * b is packed per call into panels of NR columns: for each group of 4 k, the 4 bytes of a
//     column are adjacent (the vpdpbusd layout), NR columns after each other, K padded to a
//     multiple of 4 and the columns to NR with zeros; colsum(d) comes from the packed panel.
//   * the micro-kernel keeps an MR x NR tile of int32 accumulators in zmm registers (6 x 64:
//     24 accumulators, 4 b vectors, 1 broadcast of 4 a bytes), and per group of 4 k loads 4 b
//     vectors and 6 broadcasts for 24 vpdpbusd.
//   * blocking: a b panel of KC k (KC * NR = 32 KiB) stays in the 48 KiB L1 while the rows of a
//     (MC rows x KC, <= 256 KiB) stream through it from L2; for K > KC the tile is added to c
//     and the zero-point terms are applied with the last K block.
// Without AVX512-VNNI a portable loop computes each row as sum_k (a - za) * (b - zb) in unsigned
// 32-bit arithmetic (each product is exact in int32; the wrapped sum is exact as above).
#include "common.h"

#include <cstddef>
#include <vector>

#if defined(__AVX512VNNI__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define PYGPU_I8GEMM_VNNI 1
#endif

namespace i8gemm {

constexpr int64_t MR = 6;         // rows of the register tile
constexpr int64_t NV = 4;         // zmm vectors (16 int32 columns each) of the register tile
constexpr int64_t NR = 16 * NV;   // columns of a panel
constexpr int64_t KC = 512;       // k per L1 block (a multiple of 4)
constexpr int64_t MC = 510;       // rows per L2 block of a (a multiple of MR)

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct Ws {              // a chunk's workspace, laid out in the caller's buffer
    uint8_t* bp;         // packed b: panels x (K4 / 4) groups x NR columns x 4 bytes
    int32_t* colterm;    // per column of the chunk: colsum(d) - K zd, times za when za is one scalar (mod 2**32)
    int32_t* zd;         // per column: zb + beta
    int32_t* rowsum;     // per row: rowsum(a), times zd when zd is one scalar (mod 2**32)
};

inline int64_t panels(int64_t ncols) { return (ncols + NR - 1) / NR; }

// bytes a chunk of ncols columns needs (64 for the alignment of the start)
inline int64_t workspace_bytes(int64_t M, int64_t K, int64_t ncols) {
    const int64_t P = panels(ncols), K4 = round_up(K, 4);
    return 64 + round_up(P * K4 * NR, 64) + 2 * round_up(P * NR * 4, 64) + round_up(M * 4, 64);
}

inline Ws layout(void* ws, int64_t K, int64_t ncols) {
    const int64_t P = panels(ncols), K4 = round_up(K, 4);
    uint8_t* p = reinterpret_cast<uint8_t*>(round_up(reinterpret_cast<intptr_t>(ws), 64));
    Ws w;
    w.bp = p;
    p += round_up(P * K4 * NR, 64);
    w.colterm = reinterpret_cast<int32_t*>(p);
    p += round_up(P * NR * 4, 64);
    w.zd = reinterpret_cast<int32_t*>(p);
    p += round_up(P * NR * 4, 64);
    w.rowsum = reinterpret_cast<int32_t*>(p);
    return w;
}

#ifdef PYGPU_I8GEMM_VNNI

// Packs columns [n0, n0 + nc) of b (nc <= NR) into one panel, xor-ing each byte with bx, and
// returns colsum(d) per column in cs (NR lanes, 0 past nc). A group of 4 rows of a whole panel
// (nc == NR) is read as 4 zmm rows of 64 columns: unpacking bytes then words interleaves them as
// r0 r1 r2 r3 per column (the vpdpbusd order) within each 128-bit lane, which leaves lane L of
// the 4 results holding columns 16 L + 0-3, 4-7, 8-11, 12-15; a 4 x 4 transpose of the lanes
// (vshufi64x2) puts columns 16 v .. 16 v + 15 in vector v. The last, partial group and a partial
// panel take 16 columns at a time through masked loads, so only the chunk's own columns are read
// and xor-ed, and the padding stays 0.
template <bool D_SIGNED>
void pack_panel(const uint8_t* b, int64_t ldb, int64_t K, int64_t n0, int64_t nc, uint8_t bx,
                uint8_t* __restrict out, int32_t* cs) {
    const __m128i x = _mm_set1_epi8(static_cast<char>(bx));
    const __m512i x4 = _mm512_set1_epi8(static_cast<char>(bx));
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i sum[NV];
    for (int v = 0; v < NV; ++v) sum[v] = _mm512_setzero_si512();
    auto add = [&](int v, __m512i g) {
        _mm512_store_si512(reinterpret_cast<__m512i*>(out + 64 * v), g);
        sum[v] = D_SIGNED ? _mm512_dpbusd_epi32(sum[v], ones, g) : _mm512_dpbusd_epi32(sum[v], g, ones);
    };
    int64_t k = 0;
    if (nc == NR) {
        static_assert(NV == 4, "the lane transpose below is for 4 vectors of 16 columns");
        for (; k + 4 <= K; k += 4, out += NR * 4) {
            const uint8_t* r = b + k * ldb + n0;
            const __m512i r0 = _mm512_xor_si512(_mm512_loadu_si512(r), x4);
            const __m512i r1 = _mm512_xor_si512(_mm512_loadu_si512(r + ldb), x4);
            const __m512i r2 = _mm512_xor_si512(_mm512_loadu_si512(r + 2 * ldb), x4);
            const __m512i r3 = _mm512_xor_si512(_mm512_loadu_si512(r + 3 * ldb), x4);
            const __m512i lo01 = _mm512_unpacklo_epi8(r0, r1), hi01 = _mm512_unpackhi_epi8(r0, r1);
            const __m512i lo23 = _mm512_unpacklo_epi8(r2, r3), hi23 = _mm512_unpackhi_epi8(r2, r3);
            const __m512i x0 = _mm512_unpacklo_epi16(lo01, lo23), x1 = _mm512_unpackhi_epi16(lo01, lo23);
            const __m512i x2 = _mm512_unpacklo_epi16(hi01, hi23), x3 = _mm512_unpackhi_epi16(hi01, hi23);
            const __m512i t0 = _mm512_shuffle_i64x2(x0, x1, 0x44), t1 = _mm512_shuffle_i64x2(x2, x3, 0x44);
            const __m512i t2 = _mm512_shuffle_i64x2(x0, x1, 0xEE), t3 = _mm512_shuffle_i64x2(x2, x3, 0xEE);
            add(0, _mm512_shuffle_i64x2(t0, t1, 0x88));
            add(1, _mm512_shuffle_i64x2(t0, t1, 0xDD));
            add(2, _mm512_shuffle_i64x2(t2, t3, 0x88));
            add(3, _mm512_shuffle_i64x2(t2, t3, 0xDD));
        }
    }
    for (; k < K; k += 4, out += NR * 4) {
        for (int v = 0; v < NV; ++v) {
            const int64_t c0 = n0 + 16 * v, cols = nc - 16 * v;
            __m128i r[4];
            for (int t = 0; t < 4; ++t) {
                if (cols <= 0 || k + t >= K) {
                    r[t] = _mm_setzero_si128();
                    continue;
                }
                const __mmask16 m = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
                r[t] = _mm_maskz_mov_epi8(m, _mm_xor_si128(_mm_maskz_loadu_epi8(m, b + (k + t) * ldb + c0), x));
            }
            const __m128i lo01 = _mm_unpacklo_epi8(r[0], r[1]), hi01 = _mm_unpackhi_epi8(r[0], r[1]);
            const __m128i lo23 = _mm_unpacklo_epi8(r[2], r[3]), hi23 = _mm_unpackhi_epi8(r[2], r[3]);
            __m512i g = _mm512_castsi128_si512(_mm_unpacklo_epi16(lo01, lo23));      // columns 0-3
            g = _mm512_inserti32x4(g, _mm_unpackhi_epi16(lo01, lo23), 1);             // 4-7
            g = _mm512_inserti32x4(g, _mm_unpacklo_epi16(hi01, hi23), 2);             // 8-11
            g = _mm512_inserti32x4(g, _mm_unpackhi_epi16(hi01, hi23), 3);             // 12-15
            add(v, g);
        }
    }
    for (int v = 0; v < NV; ++v) _mm512_storeu_si512(reinterpret_cast<__m512i*>(cs + 16 * v), sum[v]);
}

// The 4 bytes of a row from k (tail < 4: only those, the rest 0; b's padding is 0 there anyway).
inline int32_t a_quad(const uint8_t* p, int tail) {
    int32_t q = 0;
    std::memcpy(&q, p, tail ? tail : 4);
    return q;
}

struct Tile {
    const uint8_t* a;        // row m0, column k0 of a
    int64_t lda;
    int64_t mr;              // valid rows (<= MR)
    const uint8_t* bp;       // the panel at group k0 / 4
    int64_t groups;          // full groups of 4 k
    int tail;                // k left over after them (last K block only)
    int32_t* c;              // row m0, first column of the panel
    int64_t ldc;
    int64_t nr;              // valid columns (<= NR)
    bool first, last;        // the first K block (start from 0), the last (apply zero points)
    // The zero-point terms of the last K block (`gemm` says which form each takes):
    //   za_mode 0: none (za is 0 throughout); 1: c -= colterm (already times the scalar za);
    //           2: c -= za[i] * colterm (a zero point per row);
    //   zd_mode 0: none (zd is 0 throughout); 1: c -= rowterm[i] (rowsum(a) times the one zd);
    //           2: c -= rowsum[i] * zd (a zero point per column).
    int za_mode, zd_mode;
    const int32_t* za;       // a's zero point at row m0 (za_mode 2), za[i * za_step] for row i
    int64_t za_step;
    const int32_t* rowsum;   // rowsum (zd_mode 2) or rowterm (zd_mode 1) at row m0
    const int32_t* colterm;  // at the panel's first column
    const int32_t* zd;
};

template <bool A_SIGNED>
inline __m512i dp(__m512i acc, __m512i av, __m512i bv) {
    return A_SIGNED ? _mm512_dpbusd_epi32(acc, bv, av) : _mm512_dpbusd_epi32(acc, av, bv);
}

template <bool A_SIGNED>
void tile(const Tile& t) {
    __m512i acc[MR][NV];
    const uint8_t* ar[MR];
    // rows past mr repeat row 0 (computed, never stored): the loop keeps one shape
    for (int i = 0; i < MR; ++i) ar[i] = t.a + (i < t.mr ? i : 0) * t.lda;
    __mmask16 mask[NV];
    for (int v = 0; v < NV; ++v) {
        const int64_t cols = t.nr - 16 * v;
        mask[v] = cols >= 16 ? __mmask16(0xFFFF) : cols <= 0 ? __mmask16(0) : __mmask16((1u << cols) - 1);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
            acc[i][v] = t.first || i >= t.mr ? _mm512_setzero_si512()
                                             : _mm512_maskz_loadu_epi32(mask[v], t.c + i * t.ldc + 16 * v);
    const uint8_t* bp = t.bp;
    for (int64_t g = 0; g < t.groups; ++g, bp += NR * 4) {
        __m512i bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(reinterpret_cast<const __m512i*>(bp + 64 * v));
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            int32_t q;
            std::memcpy(&q, ar[i] + 4 * g, 4);
            const __m512i av = _mm512_set1_epi32(q);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = dp<A_SIGNED>(acc[i][v], av, bv[v]);
        }
    }
    if (t.tail) {
        __m512i bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(reinterpret_cast<const __m512i*>(bp + 64 * v));
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m512i av = _mm512_set1_epi32(a_quad(ar[i] + 4 * t.groups, t.tail));
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = dp<A_SIGNED>(acc[i][v], av, bv[v]);
        }
    }
    // constant trip counts everywhere (rows past mr are skipped by a test): an index the compiler
    // cannot resolve would put the accumulators in memory
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
        if (i >= t.mr) continue;
        // the zero-point terms (see Tile): with scalar zero points, the usual case, they are
        // subtractions of terms `gemm` multiplied out once, not 24 vpmulld per tile
        if (t.last && t.za_mode) {
            const __m512i za = _mm512_set1_epi32(t.za_mode == 2 ? t.za[i * t.za_step] : 1);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                const __m512i ct = _mm512_loadu_si512(t.colterm + 16 * v);
                acc[i][v] = _mm512_sub_epi32(acc[i][v], t.za_mode == 2 ? _mm512_mullo_epi32(za, ct) : ct);
            }
        }
        if (t.last && t.zd_mode) {
            const __m512i rs = _mm512_set1_epi32(t.rowsum[i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v)
                acc[i][v] = _mm512_sub_epi32(acc[i][v], t.zd_mode == 2 ? _mm512_mullo_epi32(rs, _mm512_loadu_si512(t.zd + 16 * v)) : rs);
        }
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) _mm512_mask_storeu_epi32(t.c + i * t.ldc + 16 * v, mask[v], acc[i][v]);
    }
}

// rowsum(a) per row, 64 bytes a vpdpbusd against bytes of 1 (a as the signed operand when it is
// int8, the unsigned one when uint8); the row's last K % 64 bytes through a masked load.
// |sum| <= 255 K < 2**31 (K is limited).
template <bool A_SIGNED>
void row_sums(const uint8_t* a, int64_t lda, int64_t M, int64_t K, int32_t* rs) {
    const __m512i ones = _mm512_set1_epi8(1);
    const int64_t Kv = K / 64 * 64;
    const __mmask64 tail = K % 64 ? (~0ULL >> (64 - K % 64)) : 0;
    for (int64_t m = 0; m < M; ++m) {
        const uint8_t* r = a + m * lda;
        __m512i s = _mm512_setzero_si512();
        for (int64_t k = 0; k < Kv; k += 64) {
            const __m512i v = _mm512_loadu_si512(r + k);
            s = A_SIGNED ? _mm512_dpbusd_epi32(s, ones, v) : _mm512_dpbusd_epi32(s, v, ones);
        }
        if (tail) {
            const __m512i v = _mm512_maskz_loadu_epi8(tail, r + Kv);
            s = A_SIGNED ? _mm512_dpbusd_epi32(s, ones, v) : _mm512_dpbusd_epi32(s, v, ones);
        }
        rs[m] = _mm512_reduce_add_epi32(s);
    }
}

template <bool A_SIGNED>
void gemm(const uint8_t* a, int64_t lda, const uint8_t* b, int64_t ldb, int64_t m0, int64_t m1,
          int64_t K, int64_t n0, int64_t n1, const int32_t* za, int64_t za_step, const int32_t* zb,
          int64_t zb_step, int32_t* c, int64_t ldc, void* workspace, bool b_signed) {
    const int64_t M = m1 - m0, ncols = n1 - n0, P = panels(ncols), K4 = round_up(K, 4);
    const Ws w = layout(workspace, K, ncols);
    // d is b in the kind a is not: xor 0x80 when both have the same kind (module comment)
    const bool same = A_SIGNED == b_signed;
    const uint8_t bx = same ? 0x80 : 0;
    const int32_t beta = !same ? 0 : A_SIGNED ? 128 : -128;
    bool any_za = false, any_zd = false;
    for (int64_t m = m0; m < (za_step ? m1 : m0 + 1); ++m) any_za |= za[m * za_step] != 0;
    const uint32_t za_all = za_step || !any_za ? 1u : static_cast<uint32_t>(za[0]);   // the scalar za
    for (int64_t p = 0; p < P; ++p) {
        const int64_t nc = n1 - n0 - p * NR < NR ? n1 - n0 - p * NR : NR;
        int32_t* cs = w.colterm + p * NR;
        if (A_SIGNED)
            pack_panel<false>(b, ldb, K, n0 + p * NR, nc, bx, w.bp + p * K4 * NR, cs);
        else
            pack_panel<true>(b, ldb, K, n0 + p * NR, nc, bx, w.bp + p * K4 * NR, cs);
        for (int64_t j = 0; j < NR; ++j) {
            const int32_t zd = j < nc ? static_cast<int32_t>(zb[(n0 + p * NR + j) * zb_step] + beta) : 0;
            w.zd[p * NR + j] = zd;
            any_zd |= zd != 0;
            cs[j] = static_cast<int32_t>(za_all * (static_cast<uint32_t>(cs[j]) - static_cast<uint32_t>(K) * static_cast<uint32_t>(zd)));
        }
    }
    const uint8_t* a0 = a + m0 * lda;
    if (any_zd) row_sums<A_SIGNED>(a0, lda, M, K, w.rowsum);
    const int za_mode = !any_za ? 0 : za_step ? 2 : 1;
    const int zd_mode = !any_zd ? 0 : zb_step ? 2 : 1;
    if (zd_mode == 1) {      // one zd for every column (a scalar zb): the row terms multiplied out
        const uint32_t zd = static_cast<uint32_t>(zb[0] + beta);
        for (int64_t m = 0; m < M; ++m) w.rowsum[m] = static_cast<int32_t>(static_cast<uint32_t>(w.rowsum[m]) * zd);
    }
    const int64_t Kfull = K / 4 * 4;
    for (int64_t k0 = 0; k0 < K4; k0 += KC) {
        const bool last = k0 + KC >= K4;
        const int64_t kend = last ? Kfull : k0 + KC;
        for (int64_t mc = 0; mc < M; mc += MC) {
            const int64_t mce = mc + MC < M ? mc + MC : M;
            for (int64_t p = 0; p < P; ++p) {
                for (int64_t m = mc; m < mce; m += MR) {
                    Tile t;
                    t.a = a0 + m * lda + k0;
                    t.lda = lda;
                    t.mr = mce - m < MR ? mce - m : MR;
                    t.bp = w.bp + p * K4 * NR + k0 * NR;
                    t.groups = (kend - k0) / 4;
                    t.tail = last ? static_cast<int>(K - Kfull) : 0;
                    t.c = c + (m0 + m) * ldc + n0 + p * NR;
                    t.ldc = ldc;
                    t.nr = n1 - n0 - p * NR < NR ? n1 - n0 - p * NR : NR;
                    t.first = k0 == 0;
                    t.last = last;
                    t.za_mode = za_mode;
                    t.zd_mode = zd_mode;
                    t.za = za + (m0 + m) * za_step;
                    t.za_step = za_step;
                    t.rowsum = w.rowsum + m;
                    t.colterm = w.colterm + p * NR;
                    t.zd = w.zd + p * NR;
                    tile<A_SIGNED>(t);
                }
            }
        }
    }
}

#else  // portable

template <typename TA, typename TB>
void gemm_portable(const uint8_t* a, int64_t lda, const uint8_t* b, int64_t ldb, int64_t m0, int64_t m1,
                   int64_t K, int64_t n0, int64_t n1, const int32_t* za, int64_t za_step,
                   const int32_t* zb, int64_t zb_step, int32_t* c, int64_t ldc) {
    for (int64_t m = m0; m < m1; ++m) {
        uint32_t* __restrict acc = reinterpret_cast<uint32_t*>(c + m * ldc);
        const TA* ar = reinterpret_cast<const TA*>(a + m * lda);
        const int32_t zam = za[m * za_step];
        for (int64_t n = n0; n < n1; ++n) acc[n] = 0;
        for (int64_t k = 0; k < K; ++k) {
            const int32_t av = static_cast<int32_t>(ar[k]) - zam;          // |av| <= 255
            const TB* br = reinterpret_cast<const TB*>(b + k * ldb);
            for (int64_t n = n0; n < n1; ++n)   // each product <= 255 * 255: exact in int32
                acc[n] += static_cast<uint32_t>(av * (static_cast<int32_t>(br[n]) - zb[n * zb_step]));
        }
    }
}

#endif

}  // namespace i8gemm

namespace i8gemm {

// one block of the output: rows [m0, m1), columns [n0, n1)
void block(const uint8_t* a, int64_t lda, int32_t a_signed, const uint8_t* b, int64_t ldb, int32_t b_signed,
           int64_t m0, int64_t m1, int64_t K, int64_t n0, int64_t n1, const int32_t* za, int64_t za_step,
           const int32_t* zb, int64_t zb_step, int32_t* c, int64_t ldc) {
    if (m1 <= m0 || n1 <= n0) return;
    if (K == 0) {    // an empty sum: no zero-point term either
        for (int64_t m = m0; m < m1; ++m) std::memset(c + m * ldc + n0, 0, static_cast<size_t>(n1 - n0) * 4);
        return;
    }
#ifdef PYGPU_I8GEMM_VNNI
    // each thread keeps its workspace (packed b, column and row terms) for the next call up to
    // 8 MiB, so a repeated GEMM neither allocates nor faults in fresh pages
    thread_local std::vector<uint8_t> ws;
    const size_t need = static_cast<size_t>(workspace_bytes(m1 - m0, K, n1 - n0));
    if (ws.size() < need) ws.resize(need);
    if (a_signed)
        gemm<true>(a, lda, b, ldb, m0, m1, K, n0, n1, za, za_step, zb, zb_step, c, ldc, ws.data(), b_signed);
    else
        gemm<false>(a, lda, b, ldb, m0, m1, K, n0, n1, za, za_step, zb, zb_step, c, ldc, ws.data(), b_signed);
    if (ws.size() > (8u << 20)) std::vector<uint8_t>().swap(ws);
#else
    if (a_signed && b_signed) gemm_portable<int8_t, int8_t>(a, lda, b, ldb, m0, m1, K, n0, n1, za, za_step, zb, zb_step, c, ldc);
    else if (a_signed) gemm_portable<int8_t, uint8_t>(a, lda, b, ldb, m0, m1, K, n0, n1, za, za_step, zb, zb_step, c, ldc);
    else if (b_signed) gemm_portable<uint8_t, int8_t>(a, lda, b, ldb, m0, m1, K, n0, n1, za, za_step, zb, zb_step, c, ldc);
    else gemm_portable<uint8_t, uint8_t>(a, lda, b, ldb, m0, m1, K, n0, n1, za, za_step, zb, zb_step, c, ldc);
#endif
}

}  // namespace i8gemm

// out[0]: columns per panel (pygpu_ops/quantization.py `INT8_NR`), out[1]: 1 with the VNNI
// kernel, 0 portable (for the tests).
PYGPU_EXPORT void int8_gemm_info(int64_t* out) {
    out[0] = i8gemm::NR;
#ifdef PYGPU_I8GEMM_VNNI
    out[1] = 1;
#else
    out[1] = 0;
#endif
}

// c (M, N) exact int32 (see the top of the file) of a (M, K) and b (K, N) as bytes. Everything
// but the three arrays comes in one int64 block q (pygpu_ops/quantization.py `_native_params`
// prepares it once per problem, strides and thread count, so a call converts 4 arguments, not 16):
//   q[0] lda, q[1] a_signed, q[2] ldb, q[3] b_signed: rows lda / ldb bytes apart, int8 (1) or
//        uint8 (0);
//   q[4] K;
//   q[5] za, q[6] za_step, q[7] zb, q[8] zb_step: za[m * za_step], zb[n * zb_step] (addresses of
//        int32) the zero points in the operands' own ranges;
//   q[9] ldc: c rows ldc int32 apart;
//   q[10] blocks, q[11] nblocks, q[12] threads: the output is computed as the disjoint blocks
//        blocks[4 k .. 4 k + 3] = (m0, m1, n0, n1) (int64; pygpu_ops/linalg.py `native_blocks`:
//        whole panels of columns, so that each block packs only its own columns of b, or blocks
//        of rows), taken by `threads` OpenMP threads (`pygpu::run_blocks`).
PYGPU_EXPORT void int8_gemm(const uint8_t* a, const uint8_t* b, int32_t* c, const int64_t* q) {
    const int64_t lda = q[0], ldb = q[2], K = q[4], za_step = q[6], zb_step = q[8], ldc = q[9];
    const int32_t a_signed = static_cast<int32_t>(q[1]), b_signed = static_cast<int32_t>(q[3]);
    const int32_t* za = reinterpret_cast<const int32_t*>(q[5]);
    const int32_t* zb = reinterpret_cast<const int32_t*>(q[7]);
    const int64_t* blocks = reinterpret_cast<const int64_t*>(q[10]);
    pygpu::run_blocks(q[11], static_cast<int32_t>(q[12]), [&](int64_t k) {
        const int64_t* q = blocks + 4 * k;
        i8gemm::block(a, lda, a_signed, b, ldb, b_signed, q[0], q[1], K, q[2], q[3], za, za_step, zb, zb_step, c, ldc);
    });
}
