// int8 GEMM ladder, step 3: tensor cores through mma.sync m16n8k32 s8.
//
// Change from step 2: the multiply-adds move from __dp4a on the CUDA cores
// to warp-wide tensor-core instructions (mma_m16n8k32_s8 in
// common/ptx.cuh): one instruction does 16 x 8 x 32 = 4096 multiply-adds,
// 1024 times the work of a __dp4a, with int32 accumulation. A 256-thread
// block still owns a 128 x 128 tile of C; its 8 warps are arranged 2 (M) x 4
// (N) and each computes a 64 x 32 warp tile as 4 x 4 m16n8 fragments (64
// int32 accumulators per lane). Shared memory holds A row-major (As[m][k])
// and B transposed (Bs[n][k], k contiguous), the layouts the fragments need
// (A "row", B "col"); B is transposed on the way in with the 4 x 4 byte
// __byte_perm transpose of step 2. Rows are padded to BK + 16 bytes so that
// the fragment loads (32-bit, 8 rows x 4 words per warp) hit 32 different
// banks; ldmatrix would issue fewer instructions but move the same number of
// shared-memory wavefronts. Register staging with two shared buffers and one
// barrier per tile, as in step 2.
//
// sm_80 and newer run mma.sync m16n8k32; sm_75 builds each of those from
// four m8n8k16 (its only int8 shape), the emulator runs the plain twin
// (shuffles + __dp4a). The op's "auto" picks this kernel on compute
// capability >= 8.0 only; on sm_75 it is available through variant="mma".
//
// Assumes the ladder's conventions (01_naive.cu). Any M, N, K >= 1: tails are
// zero-filled in the loaders and masked in the epilogue.
// Launch: grid (ceil_div(N, 128), ceil_div(M, 128)), block (256).
// Default int8_gemm_mma<TC, 64>: 2 x 2 x 128 x 80 bytes = 40 KB of static
// shared memory.
#include "../common/ptx.cuh"
#include "epilogue.cuh"
#include "tile_loads.cuh"

template <typename TC, int BK>
__global__ void __launch_bounds__(256, 2) int8_gemm_mma(
    int M, int N, int K,
    const signed char* __restrict__ A, int lda, unsigned a_flip,
    const signed char* __restrict__ B, int ldb, unsigned b_flip,
    const int* __restrict__ a_zp, int a_zp_step, const int* __restrict__ b_zp, int b_zp_step,
    const int* __restrict__ row_sum_a, const int* __restrict__ col_sum_b, int has_zp,
    const float* __restrict__ y_mult, int y_mult_step, int y_zp, TC* __restrict__ C, int ldc)
{
    constexpr int BM = 128, BN = 128, THREADS = 256;
    constexpr int LD = BK + 16;                            // bytes per shared row
    constexpr int A_PARTS = BK / 16;                       // 16-byte chunks per A row
    constexpr int A_CHUNKS = BM * A_PARTS / THREADS;
    constexpr int KW = BK / 4;                             // 4-byte k groups per tile
    constexpr int B_BLOCKS = KW * (BN / 4) / THREADS;      // 4 x 4 blocks per thread
    static_assert(BK % 32 == 0 && A_CHUNKS * THREADS == BM * A_PARTS, "A tile: whole chunks per thread");
    static_assert(B_BLOCKS * THREADS == KW * (BN / 4), "B tile: whole blocks per thread");
    alignas(16) __shared__ signed char As[2][BM][LD];
    alignas(16) __shared__ signed char Bs[2][BN][LD];

    const int tid = (int)threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, tg = lane % 4;                 // fragment row / k group (ptx.cuh)
    const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;  // warp tile origin in the block tile
    const int bm = (int)blockIdx.y * BM, bn = (int)blockIdx.x * BN;
    const bool vecA16 = lda % 16 == 0 && (reinterpret_cast<unsigned long long>(A) & 15ull) == 0;
    const bool vecA4 = lda % 4 == 0 && (reinterpret_cast<unsigned long long>(A) & 3ull) == 0;
    const bool vecB4 = ldb % 4 == 0 && (reinterpret_cast<unsigned long long>(B) & 3ull) == 0;

    unsigned ra[A_CHUNKS][4];
    unsigned rb[B_BLOCKS][4];
    // B blocks map k fastest (kw = b % KW): the transposed 32-bit stores of a
    // warp then fall in distinct bank pairs (at most 2-way conflicts).
    auto load_tile = [&](int k0) {
        for (int i = 0; i < A_CHUNKS; ++i) {
            const int c = tid + i * THREADS;
            const int row = bm + c / A_PARTS, k = k0 + (c % A_PARTS) * 16;
            const int valid = row < M ? K - k : 0;
            int8_load16(ra[i], A + (long long)(row < M ? row : 0) * lda + k, valid, vecA16, vecA4, a_flip);
        }
        for (int i = 0; i < B_BLOCKS; ++i) {
            const int b = tid + i * THREADS;
            int8_load_b4x4(rb[i], B, ldb, K, N, k0 + 4 * (b % KW), bn + 4 * (b / KW), vecB4, b_flip);
        }
    };
    auto store_tile = [&](int buf) {
        for (int i = 0; i < A_CHUNKS; ++i) {
            const int c = tid + i * THREADS;
            *reinterpret_cast<uint4*>(&As[buf][c / A_PARTS][(c % A_PARTS) * 16]) =
                make_uint4(ra[i][0], ra[i][1], ra[i][2], ra[i][3]);
        }
        for (int i = 0; i < B_BLOCKS; ++i) {
            const int b = tid + i * THREADS;
            for (int j = 0; j < 4; ++j)
                *reinterpret_cast<unsigned*>(&Bs[buf][4 * (b / KW) + j][4 * (b % KW)]) = rb[i][j];
        }
    };

    int acc[4][4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j)
            for (int r = 0; r < 4; ++r)
                acc[i][j][r] = 0;

    const int tiles = (K + BK - 1) / BK;
    load_tile(0);
    store_tile(0);
    // Tile 0 must be in shared memory, from every thread, before any warp reads fragments.
    __syncthreads();
    for (int t = 0; t < tiles; ++t) {
        const int buf = t & 1;
        if (t + 1 < tiles)
            load_tile((t + 1) * BK);   // in flight while the tensor cores work
        for (int ks = 0; ks < BK; ks += 32) {
            unsigned af[4][4], bf[4][2];
            for (int mi = 0; mi < 4; ++mi) {
                const signed char* p = &As[buf][wm + mi * 16 + g][ks + tg * 4];
                af[mi][0] = *reinterpret_cast<const unsigned*>(p);
                af[mi][1] = *reinterpret_cast<const unsigned*>(p + 8 * LD);
                af[mi][2] = *reinterpret_cast<const unsigned*>(p + 16);
                af[mi][3] = *reinterpret_cast<const unsigned*>(p + 8 * LD + 16);
            }
            for (int ni = 0; ni < 4; ++ni) {
                const signed char* p = &Bs[buf][wn + ni * 8 + g][ks + tg * 4];
                bf[ni][0] = *reinterpret_cast<const unsigned*>(p);
                bf[ni][1] = *reinterpret_cast<const unsigned*>(p + 16);
            }
            for (int mi = 0; mi < 4; ++mi)
                for (int ni = 0; ni < 4; ++ni)
                    mma_m16n8k32_s8(acc[mi][ni], af[mi], bf[ni]);
        }
        if (t + 1 < tiles)
            store_tile(buf ^ 1);
        // The next iteration reads buf ^ 1, just written by other threads; the one after
        // overwrites buf, which slower warps may still be reading now.
        __syncthreads();
    }

    const Int8GemmEpilogue e{K, a_zp, a_zp_step, b_zp, b_zp_step, row_sum_a, col_sum_b,
                             has_zp, y_mult, y_mult_step, y_zp};
    // Fully unrolled, so that acc is only ever indexed by constants: a rolled loop here
    // indexes acc at run time, which puts all 64 accumulators in local memory (a 256-byte
    // stack frame stored on every k-tile, and 24 bytes of spills under NVRTC 13.5 on sm_90).
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int m = bm + wm + mi * 16 + g + 8 * h;
                const int n = bn + wn + ni * 8 + tg * 2;   // c[2h], c[2h+1]: columns n, n + 1
                if (m >= M)
                    continue;
#pragma unroll
                for (int j = 0; j < 2; ++j)
                    if (n + j < N)
                        C[(long long)m * ldc + n + j] = int8_gemm_finish<TC>(acc[mi][ni][2 * h + j], m, n + j, e);
            }
}
