// int8 GEMM ladder, step 3: tensor cores (mma.sync m16n8k32) fed by ldmatrix
// from swizzled shared memory, filled by a cp.async pipeline.
//
// Change from step 2: the multiply-adds move from __dp4a on the CUDA cores to
// warp-wide tensor-core instructions (mma_m16n8k32_i8 in common/ptx.cuh): one
// instruction does 16 x 8 x 32 = 4096 multiply-adds with int32 accumulation.
// A 256-thread block owns a 128 x 128 tile of C; its 8 warps are arranged
// 2 (M) x 4 (N), each computing a 64 x 32 warp tile as 4 x 4 m16n8 fragments
// (64 int32 accumulators per lane, indexed only by constants: every loop that
// touches them is unrolled, so they never leave the registers).
//
// Shared memory, per stage (BK = 128: 16 KiB of A + 16 KiB of B), dynamic:
//  * A tile as in global memory, 128 rows x 128 bytes of k. An A fragment (row
//    g, 4 bytes of k per lane) is what ldmatrix.x4 delivers: one instruction
//    per m16 x k32 fragment. Chunks are swizzled (mma_offset_a) so that both
//    the 8 rows an ldmatrix phase reads and the chunks a copy phase stores
//    fall in 8 different 16-byte bank groups: no bank conflicts either side.
//  * B tile as in global memory too, 128 rows of k x 128 bytes of n, so that
//    cp.async copies it unchanged. int8 mma needs B's bytes grouped by column
//    (4 k per register) and ldmatrix.trans only transposes 16-bit elements, so
//    one ldmatrix.x4.trans reads, per 16 columns and 32 k, 8-row matrices X
//    (k = 4i, 4i+3) and Y (k = 4i+1, 4i+2), i = 0..3, for k 0-15 and 16-31:
//    lane (g, t) holds two k of columns 2g, 2g+1 in each, and two __byte_perm
//    make the B fragments of column 2g (even) and 2g+1 (odd), k 4t..4t+3. The
//    even and odd fragments are two m16n8 products whose columns interleave,
//    so a lane ends with 4 consecutive columns of C per row: one 16-byte
//    (int32) or 4-byte (8-bit) store, fully coalesced. The B swizzle
//    (mma_offset_b) keeps X, Y and the copies conflict-free.
//
// Pipeline: 2 stages (the next tile's cp.async copies run while the tensor
// cores work on this one); one cp.async.wait_group and one barrier per tile,
// the loop unrolled by the stage count so that stage offsets are immediates.
// Why 2 and not 3: a stage is 32 KiB, and 3 (96 KiB) would exceed sm_75's
// 64 KiB per block and leave sm_80 one block per SM; BK = 128 (not 64) halves
// the per-tile overhead (copies, barrier, loop), which is what brings the
// IMMA share of the loop above 40% (BK = 64 with 3 stages: 29%). Tiles are
// laid out from the end of K: tile 0 is the partial one, [K - T*BK,
// K - (T-1)*BK), copied with bounds checks before the loop, so the copies in
// the loop have no per-tile bounds arithmetic (row and column edges are
// loop-invariant predicates: cp.async with source size 0 or 16).
//
// Paths (chosen per launch, uniform across the block):
//  * fast: A, B 16-byte aligned; lda, ldb, K and N multiples of 16. Each lane
//    pair copies one 128-byte row of A and one of B, 16 bytes a copy: one warp
//    copy reads 16 whole 32-byte sectors. uint8 operands (a_flip / b_flip) go
//    to the tensor cores as .u8 (no byte flipping in the loop, so the loop is
//    the same for all four type pairs) and the epilogue subtracts what the
//    flip would have removed: 128 colsum(b') for A, 128 rowsum(a') for B,
//    16384 K for both. That needs the zero-point sums (has_zp; the wrapper
//    computes them for this variant whenever an operand is uint8) and the raw
//    sum inside int32, K * 255 * 255 for u8 x u8 (K <= 33025): wrapping of the
//    mma's int32 accumulator is not relied on.
//  * general, anything else (any pointer, lda, ldb, K, N): the same pipeline
//    with byte loads (flip applied in registers) and 16-byte shared stores in
//    rolled loops. Slow, exact; its tile loop holds those loops, so it is not
//    an innermost loop and the SASS figures below are the fast path's.
// sm_75 compiles cp.async as plain synchronous copies and builds each
// m16n8k32 from four m8n8k16 (common/ptx.cuh); ldmatrix exists there. The
// emulator runs the plain twins of all three.
//
// SASS, fast path of the hot loop (`python -m pygpu_ops.analysis.sass`): one
// iteration is 2 K tiles, 298 instructions on sm_90 / NVRTC 13.5: 128 IMMA,
// 48 LDSM, 16 LDGSTS, 64 PRMT, 2 BAR, and 6 `@!PT LDS RZ, [RZ]` that ptxas
// puts next to LDGSTS and never executes (counted as LDS.32).
//   NVRTC 13.5 sm_90: 126 registers, no spills, no stack frame, no STL/LDL;
//   IMMA 43.0% of the fast path (2.33 instructions per IMMA); 240 LDSM,
//   96 LDGSTS, 0 LDS.128 in the kernel. sm_80 / sm_86: 124 registers, 43.7%
//   (2.29). NVRTC 12.9: sm_90 43.5%, sm_80 / sm_86 43.7%. sm_75 (4 IMMA per
//   m16n8k32, synchronous copies): 125 registers, 70.9%. Was (BK 64, register
//   staging, scalar LDS fragments): 126 registers, 9.0% (11.1 per IMMA).
//
// Assumes the ladder's conventions (01_naive.cu). Any M, N, K >= 1.
// Launch: grid (ceil_div(N, 128), ceil_div(M, 128)), block (256), dynamic
// shared memory STAGES * 2 * 128 * BK bytes (64 KiB for int8_gemm_mma<TC,
// 128, 2>, the registered instantiation; Device.launch opts in above 48 KiB).
#include "../common/ptx.cuh"
#include "epilogue.cuh"

constexpr int MMA_BM = 128, MMA_BN = 128, MMA_THREADS = 256;

// A compile-time bool passed as a value (no <type_traits> under NVRTC).
template <bool V> struct MmaFlag { static constexpr bool value = V; };

// Byte offset of chunk c (16 bytes of k) of row m of an A tile (rows of 128 bytes). The
// chunk moves to c ^ h(m), h(m) = 2 (m % 4) + (m / 4) % 2: a permutation of m % 8, so the
// 8 consecutive rows of an ldmatrix phase hit 8 bank groups, and 4 consecutive rows differ
// in bits 1-2 of h, so the chunk pairs (2i, 2i + 1) that a copy phase stores do too.
__device__ __forceinline__ int mma_offset_a(int m, int c)
{
    return m * 128 + 16 * (c ^ (((m & 3) << 1) | ((m >> 2) & 1)));
}

// Byte offset of chunk c (16 columns) of row k of a B tile (rows of 128 bytes). The chunk
// moves to c ^ f(k), f(k) = k0 + 2 (k0 ^ k3) + 4 (k1 ^ k2) (k_i: bit i of k): 4 consecutive
// rows differ in bits 1-2 of f (copies, as for A), and so do the 8 rows of an ldmatrix
// matrix X (k = 4i and 4i + 3: k0 == k1) or Y (4i + 1, 4i + 2: k0 != k1), except for pairs
// whose bits all differ, which bit 0 (k0) separates.
__device__ __forceinline__ int mma_offset_b(int k, int c)
{
    const int f = (k & 1) | ((((k & 1) ^ (k >> 3)) & 1) << 1) | ((((k >> 1) ^ (k >> 2)) & 1) << 2);
    return k * 128 + 16 * (c ^ f);
}

// The 4 bytes at p + lo .. p + hi - 1 (0 <= lo, hi <= 4; the others 0), each XORed with
// its byte of flip. One byte at a time in a rolled loop: the general path only.
__device__ __forceinline__ unsigned mma_load4_bytes(const signed char* p, int lo, int hi, unsigned flip)
{
    unsigned w = 0;
#pragma unroll 1
    for (int j = 0; j < 4; ++j)
        if (j >= lo && j < hi)
            w |= ((unsigned)(unsigned char)p[j] ^ (flip & 0xffu)) << (8 * j);
    return w;
}

template <typename TC, int BK, int STAGES>
__global__ void __launch_bounds__(256, 2) int8_gemm_mma(
    int M, int N, int K,
    const signed char* __restrict__ A, int lda, unsigned a_flip,
    const signed char* __restrict__ B, int ldb, unsigned b_flip,
    const int* __restrict__ a_zp, int a_zp_step, const int* __restrict__ b_zp, int b_zp_step,
    const int* __restrict__ row_sum_a, const int* __restrict__ col_sum_b, int has_zp,
    const float* __restrict__ y_mult, int y_mult_step, int y_zp, TC* __restrict__ C, int ldc)
{
    constexpr int BM = MMA_BM, BN = MMA_BN, THREADS = MMA_THREADS;
    constexpr int A_BYTES = BM * BK, STAGE_BYTES = A_BYTES + BK * BN;
    static_assert(BK == 128 && BM == 128 && BN == 128 && THREADS == 256,
                  "copies: one 128-byte row per lane pair, A and B alike");
    static_assert(STAGES >= 2, "a pipeline needs two stages");
    extern __shared__ __align__(128) unsigned char int8_mma_smem[];   // STAGES * STAGE_BYTES
    unsigned char* const smem = int8_mma_smem;

    const int tid = (int)threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int bm = (int)blockIdx.y * BM, bn = (int)blockIdx.x * BN;
    const int T = (K + BK - 1) / BK;
    const int k_first = K - T * BK;       // start of tile 0 (<= 0): tile t starts at k_first + t * BK

    // Copies: lanes 2p and 2p + 1 copy row p of the A tile (k) and row p of the B tile (n),
    // 4 chunks each: chunk 2i + (tid & 1) in copy i. One copy of a warp reads one whole
    // 32-byte sector of each of 16 rows (the ideal 16 sectors per request), and a thread's
    // chunks sit at +32 bytes from each other, so one pointer with an immediate offset
    // serves all four. Shared offsets: chunk i's is chunk 0's XOR 32 i (the swizzles only
    // permute chunk bits, and 2i + b = 2i ^ b).
    const int cp_row = tid / 2, cp_half = tid % 2;
    const int a_dst = mma_offset_a(cp_row, cp_half);
    const int b_dst = A_BYTES + mma_offset_b(cp_row, cp_half);

    // Fragment reads (ldmatrix): lane l gives the address of row l % 8 of matrix l / 8.
    // A: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31),
    // (rows 8-15, k 16-31) of each m16 x k32 fragment: a[0..3] in mma's order; k step ks
    // moves the chunk by 2 (offset XOR 32 ks), fragment mi the row by 16 (+ 16 * 128).
    // B: matrices X, Y for k 0-15, then X, Y for k 16-31, of column chunk 2wq (+1 for
    // q = 1: offset XOR 16); k step ks is 32 rows down (f only reads k's low 4 bits).
    const int wm = (warp / 4) * 64, wq = warp % 4;   // warp rows; column chunks 2wq, 2wq + 1
    const int a_frag = mma_offset_a(wm + (lane & 15), lane >> 4);
    const int fj = lane >> 3, fr = lane & 7;
    const int b_frag_k = 16 * (fj >> 1) + 4 * (fr >> 1) + ((fj & 1) ? 1 + (fr & 1) : 3 * (fr & 1));
    const int b_frag = A_BYTES + mma_offset_b(b_frag_k, 2 * wq);

    int acc[4][4][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int q = 0; q < 4; ++q)
                acc[mi][ni][q] = 0;

    // One K tile from stage buffer s: BK / 32 k-steps of 4 x 4 mma per warp.
    auto compute = [&](const unsigned char* s, auto au, auto bu) {
        constexpr bool AU = decltype(au)::value, BU = decltype(bu)::value;
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) {
            unsigned af[4][4], bf[4][2];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
                ldmatrix_x4(af[mi], s + (a_frag ^ (32 * ks)) + mi * 16 * 128);
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                // x: X (k 4t, 4t+3) and Y (k 4t+1, 4t+2) of k 0-15, then of k 16-31; each
                // register holds columns 2g, 2g+1 of two k (mma_offset_b, header).
                unsigned x[4];
                ldmatrix_x4_trans(x, s + (b_frag ^ (16 * q)) + 32 * ks * BN);
                bf[2 * q][0] = __byte_perm(x[0], x[1], 0x2640);       // column 2g, k 4t..4t+3
                bf[2 * q + 1][0] = __byte_perm(x[0], x[1], 0x3751);   // column 2g + 1
                bf[2 * q][1] = __byte_perm(x[2], x[3], 0x2640);       // the same, k 16 + 4t..
                bf[2 * q + 1][1] = __byte_perm(x[2], x[3], 0x3751);
            }
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni)
                    mma_m16n8k32_i8<AU, BU>(acc[mi][ni], af[mi], bf[ni]);
        }
    };

    // The multi-stage loop; copy(stage, first) issues the copies of the next tile (tile 0,
    // the partial one, when first) into a stage buffer. The loop is unrolled by STAGES so
    // that every stage offset is a constant; tile t + STAGES - 1 goes into the buffer tile
    // t - 1 was read from.
    auto pipeline = [&](auto copy, auto au, auto bu) {
        copy(smem, MmaFlag<true>{});
        cp_async_commit();       // one group per tile, empty or not: the wait below counts groups
#pragma unroll
        for (int t = 1; t < STAGES - 1; ++t) {
            if (t < T)
                copy(smem + t * STAGE_BYTES, MmaFlag<false>{});
            cp_async_commit();
        }
#pragma unroll 1
        for (int t0 = 0; t0 < T; t0 += STAGES) {
#pragma unroll
            for (int s = 0; s < STAGES; ++s) {
                if (t0 + s < T) {
                    cp_async_wait_group<STAGES - 2>();   // this thread's copies of the tile landed
                    // Every thread's copies of this tile are visible, and every warp has
                    // finished reading the previous tile, whose buffer the copies below overwrite.
                    __syncthreads();
                    if (t0 + s + STAGES - 1 < T)
                        copy(smem + (s + STAGES - 1) % STAGES * STAGE_BYTES, MmaFlag<false>{});
                    cp_async_commit();
                    compute(smem + s * STAGE_BYTES, au, bu);
                }
            }
        }
    };

    const bool aligned = ((reinterpret_cast<unsigned long long>(A) | reinterpret_cast<unsigned long long>(B)) & 15ull) == 0
                         && lda % 16 == 0 && ldb % 16 == 0 && K % 16 == 0 && N % 16 == 0;
    const int ua = a_flip ? 255 : 128, ub = b_flip ? 255 : 128;   // largest |byte| on each side
    const bool fast = aligned && (!(a_flip | b_flip) || (has_zp && (long long)K * ua * ub <= 2147483647ll));
    if (fast) {
        // Loop-invariant copy sizes (row / column edges); the sources move by one tile a copy.
        const int a_rowg = bm + cp_row;
        const int a_size = a_rowg < M ? 16 : 0;
        const int n0 = bn + 16 * cp_half;
        int b_size[4];   // N % 16 == 0: a chunk is all in or all out
#pragma unroll
        for (int i = 0; i < 4; ++i)
            b_size[i] = n0 + 32 * i < N ? 16 : 0;
        const signed char* a_src = A + (long long)(a_rowg < M ? a_rowg : 0) * lda + 16 * cp_half + k_first;
        const signed char* b_src = B + (long long)(k_first + cp_row) * ldb + n0;
        const long long b_step = (long long)BK * ldb;
        auto copy = [&](unsigned char* s, auto first) {
            if (decltype(first)::value) {
                // The partial tile: chunks before k = 0 are zeros (K % 16 == 0: whole chunks).
                const bool b_in = k_first + cp_row >= 0;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const bool a_in = k_first + 32 * i + 16 * cp_half >= 0;
                    cp_async_16_zfill(s + (a_dst ^ (32 * i)), a_in ? a_src + 32 * i : A, a_in ? a_size : 0);
                    cp_async_16_zfill(s + (b_dst ^ (32 * i)), b_in ? b_src + 32 * i : B, b_in ? b_size[i] : 0);
                }
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    cp_async_16_zfill(s + (a_dst ^ (32 * i)), a_src + 32 * i, a_size);
                    cp_async_16_zfill(s + (b_dst ^ (32 * i)), b_src + 32 * i, b_size[i]);
                }
            }
            a_src += BK;
            b_src += b_step;
        };
        using F = MmaFlag<false>;
        using U = MmaFlag<true>;
        if (a_flip && b_flip)
            pipeline(copy, U{}, U{});
        else if (a_flip)
            pipeline(copy, U{}, F{});
        else if (b_flip)
            pipeline(copy, F{}, U{});
        else
            pipeline(copy, F{}, F{});
    } else {
        // Byte loads with every bound checked, through registers (the flip applied there),
        // one 16-byte shared store per chunk. Rolled over the chunks: a slow path kept small.
        int k0 = k_first;
        auto copy = [&](unsigned char* s, auto) {
#pragma unroll 1
            for (int c = tid; c < BM * (BK / 16); c += THREADS) {
                const int row = bm + c / (BK / 16), k = k0 + 16 * (c % (BK / 16));
                const signed char* p = A + (long long)(row < M ? row : 0) * lda + k;
                unsigned w[4];
#pragma unroll
                for (int u = 0; u < 4; ++u)
                    w[u] = mma_load4_bytes(p + 4 * u, -(k + 4 * u), row < M ? K - (k + 4 * u) : 0, a_flip);
                *reinterpret_cast<uint4*>(s + mma_offset_a(c / (BK / 16), c % (BK / 16))) =
                    make_uint4(w[0], w[1], w[2], w[3]);
            }
#pragma unroll 1
            for (int c = tid; c < BK * (BN / 16); c += THREADS) {
                const int k = k0 + c / (BN / 16), n = bn + 16 * (c % (BN / 16));
                const bool in = k >= 0 && k < K;
                const signed char* p = B + (long long)(in ? k : 0) * ldb + n;
                unsigned w[4];
#pragma unroll
                for (int u = 0; u < 4; ++u)
                    w[u] = mma_load4_bytes(p + 4 * u, 0, in ? N - (n + 4 * u) : 0, b_flip);
                *reinterpret_cast<uint4*>(s + A_BYTES + mma_offset_b(c / (BN / 16), c % (BN / 16))) =
                    make_uint4(w[0], w[1], w[2], w[3]);
            }
            k0 += BK;
        };
        pipeline(copy, MmaFlag<false>{}, MmaFlag<false>{});
    }

    const Int8GemmEpilogue e{K, a_zp, a_zp_step, b_zp, b_zp_step, row_sum_a, col_sum_b,
                             has_zp, y_mult, y_mult_step, y_zp};
    // uint8 operands on the fast path were multiplied as u = a' + 128: remove the extra terms
    // (modulo 2^32, like the epilogue's own correction).
    const unsigned fa = fast && a_flip ? 1u : 0u, fb = fast && b_flip ? 1u : 0u;
    const bool vec = ldc % 4 == 0 && (reinterpret_cast<unsigned long long>(C) & (4 * sizeof(TC) - 1)) == 0;
    // Lane (g, t) holds, per (mi, q, h), row g + 8h and columns 4t..4t+3 of the 16-column
    // group q: fragment 2q's c[2h], 2q+1's c[2h], 2q's c[2h+1], 2q+1's c[2h+1].
    const int g = lane / 4, tg = lane % 4;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = bm + wm + mi * 16 + g + 8 * h;
            const unsigned rfix = fb && m < M ? 128u * (unsigned)row_sum_a[m] + 16384u * fa * (unsigned)K : 0u;
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                const int n = bn + 32 * wq + 16 * q + 4 * tg;
                int v[4] = {acc[mi][2 * q][2 * h], acc[mi][2 * q + 1][2 * h],
                            acc[mi][2 * q][2 * h + 1], acc[mi][2 * q + 1][2 * h + 1]};
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const unsigned cfix = fa && n + u < N ? 128u * (unsigned)col_sum_b[n + u] : 0u;
                    v[u] = (int)((unsigned)v[u] - rfix - cfix);
                }
                int8_gemm_store4(C, ldc, M, N, m, n, vec, v, e);
            }
        }
}
