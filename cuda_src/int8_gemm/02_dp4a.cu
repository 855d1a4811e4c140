// int8 GEMM ladder, step 2: shared-memory tiles of packed int8x4 and __dp4a,
// 2-D register blocking.
//
// Change from step 1: a 256-thread block computes a 128 x 128 tile of C, each
// thread an 8 x 8 block (rows ty*4 + {0..3} and 64 + ty*4 + {0..3}, the same
// split for columns). K advances in tiles of BK bytes. In shared memory both
// operands are stored k-packed: As[kw][m] holds A[m, 4kw..4kw+3] and
// Bs[kw][n] holds B[4kw..4kw+3, n] in one 32-bit word, so one __dp4a does 4
// multiply-adds and per packed word a thread issues 4 128-bit shared loads
// for 64 __dp4a (step 1: 2 byte loads per multiply-add). B rows arrive
// n-contiguous from global memory; each thread reads a 4 x 4 byte block and
// transposes it in registers with __byte_perm. The next tile's global loads
// are issued before the current tile is computed (register staging, two
// shared buffers, one barrier per tile), hiding their latency.
// Shared memory: As padded by 4 words per row, so the transposing stores of a
// warp hit 32 different banks; the compute-loop loads are broadcasts (As) or
// 2 wavefronts (Bs).
//
// Assumes the ladder's conventions (01_naive.cu). Any M, N, K >= 1: tails in
// K, M and N are zero-filled in the loaders and masked in the epilogue; 16-,
// 4- and 1-byte load paths by alignment (A: 16-byte if A is 16-byte aligned
// and lda % 16 == 0; B: 4-byte if aligned and ldb % 4 == 0).
// The main loop is int8_gemm_dp4a_body (below), a device function template
// taking the store as a functor: int8_gemm_dp4a passes the ladder's epilogue
// (epilogue.cuh), int8_gemm/qconv_gemm_dp4a.cu the quantized convolution's.
// Launch: grid (ceil_div(N, 128), ceil_div(M, 128)), block (256).
// Default int8_gemm_dp4a<TC, 32>: 2 x (8 x 132 + 8 x 128) words = 16.6 KB of
// static shared memory.
#include "epilogue.cuh"
#include "tile_loads.cuh"

// int8_gemm_dp4a_body: the whole kernel but the store, shared with kernels that
// only change the epilogue (int8_gemm/qconv_gemm_dp4a.cu). It accumulates the
// block's (blockIdx.y, blockIdx.x) 128 x 128 tile of A @ B and hands each
// thread's results to store(m, n, acc) four columns at a time: acc[0..3] are
// the raw int32 sums of row m, columns n..n+3 (m and n may lie past M, N;
// store masks them).
template <int BK, class Store>
__device__ __forceinline__ void int8_gemm_dp4a_body(
    int M, int N, int K,
    const signed char* __restrict__ A, int lda, unsigned a_flip,
    const signed char* __restrict__ B, int ldb, unsigned b_flip, const Store& store)
{
    constexpr int BM = 128, BN = 128, THREADS = 256;
    constexpr int KW = BK / 4;                             // packed words per k-tile
    constexpr int PAD = 4;
    constexpr int A_PARTS = BK / 16;                       // 16-byte chunks per A row
    constexpr int A_CHUNKS = BM * A_PARTS / THREADS;       // per thread
    constexpr int B_BLOCKS = (BK / 4) * (BN / 4) / THREADS;  // 4 x 4 blocks per thread
    static_assert(BK % 16 == 0 && A_CHUNKS * THREADS == BM * A_PARTS, "A tile: whole chunks per thread");
    static_assert(B_BLOCKS * THREADS == (BK / 4) * (BN / 4), "B tile: whole blocks per thread");
    alignas(16) __shared__ int As[2][KW][BM + PAD];
    alignas(16) __shared__ int Bs[2][KW][BN];

    const int tid = (int)threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int bm = (int)blockIdx.y * BM, bn = (int)blockIdx.x * BN;
    const bool vecA16 = lda % 16 == 0 && (reinterpret_cast<unsigned long long>(A) & 15ull) == 0;
    const bool vecA4 = lda % 4 == 0 && (reinterpret_cast<unsigned long long>(A) & 3ull) == 0;
    const bool vecB4 = ldb % 4 == 0 && (reinterpret_cast<unsigned long long>(B) & 3ull) == 0;

    unsigned ra[A_CHUNKS][4];   // staged next tile
    unsigned rb[B_BLOCKS][4];
    auto load_tile = [&](int k0) {
        for (int i = 0; i < A_CHUNKS; ++i) {
            const int c = tid + i * THREADS;
            const int row = bm + c / A_PARTS, k = k0 + (c % A_PARTS) * 16;
            const int valid = row < M ? K - k : 0;
            int8_load16(ra[i], A + (long long)(row < M ? row : 0) * lda + k, valid, vecA16, vecA4, a_flip);
        }
        for (int i = 0; i < B_BLOCKS; ++i) {
            const int b = tid + i * THREADS;
            int8_load_b4x4(rb[i], B, ldb, K, N, k0 + 4 * (b / (BN / 4)), bn + 4 * (b % (BN / 4)), vecB4, b_flip);
        }
    };
    auto store_tile = [&](int buf) {
        for (int i = 0; i < A_CHUNKS; ++i) {
            const int c = tid + i * THREADS;
            for (int j = 0; j < 4; ++j)
                As[buf][(c % A_PARTS) * 4 + j][c / A_PARTS] = (int)ra[i][j];
        }
        for (int i = 0; i < B_BLOCKS; ++i) {
            const int b = tid + i * THREADS;
            *reinterpret_cast<int4*>(&Bs[buf][b / (BN / 4)][4 * (b % (BN / 4))]) =
                make_int4((int)rb[i][0], (int)rb[i][1], (int)rb[i][2], (int)rb[i][3]);
        }
    };

    int acc[8][8];
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 8; ++j)
            acc[i][j] = 0;

    const int tiles = (K + BK - 1) / BK;
    load_tile(0);
    store_tile(0);
    // Tile 0 must be in shared memory, from every thread, before anyone computes on it.
    __syncthreads();
    for (int t = 0; t < tiles; ++t) {
        const int buf = t & 1;
        if (t + 1 < tiles)
            load_tile((t + 1) * BK);   // in flight while we compute
        for (int kw = 0; kw < KW; ++kw) {
            const int4 a0 = *reinterpret_cast<const int4*>(&As[buf][kw][ty * 4]);
            const int4 a1 = *reinterpret_cast<const int4*>(&As[buf][kw][64 + ty * 4]);
            const int a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            // The two column groups one after the other: 4 fewer live registers.
            for (int h = 0; h < 2; ++h) {
                const int4 bv = *reinterpret_cast<const int4*>(&Bs[buf][kw][64 * h + tx * 4]);
                const int b[4] = {bv.x, bv.y, bv.z, bv.w};
                for (int i = 0; i < 8; ++i)
                    for (int j = 0; j < 4; ++j)
                        acc[i][4 * h + j] = __dp4a(a[i], b[j], acc[i][4 * h + j]);
            }
        }
        if (t + 1 < tiles)
            store_tile(buf ^ 1);
        // The next iteration computes on buf ^ 1, just written by other threads; and the
        // iteration after overwrites buf, which slower threads may still be reading now.
        __syncthreads();
    }

    // Column group by column group: the first group's accumulators die before the
    // second group's per-column epilogue data is loaded (fewer live registers).
    for (int h = 0; h < 2; ++h)
        for (int i = 0; i < 8; ++i) {
            const int m = bm + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
            store(m, bn + 64 * h + tx * 4, &acc[i][4 * h]);
        }
}

template <typename TC, int BK>
__global__ void __launch_bounds__(256, 2) int8_gemm_dp4a(
    int M, int N, int K,
    const signed char* __restrict__ A, int lda, unsigned a_flip,
    const signed char* __restrict__ B, int ldb, unsigned b_flip,
    const int* __restrict__ a_zp, int a_zp_step, const int* __restrict__ b_zp, int b_zp_step,
    const int* __restrict__ row_sum_a, const int* __restrict__ col_sum_b, int has_zp,
    const float* __restrict__ y_mult, int y_mult_step, int y_zp, TC* __restrict__ C, int ldc)
{
    const Int8GemmEpilogue e{K, a_zp, a_zp_step, b_zp, b_zp_step, row_sum_a, col_sum_b,
                             has_zp, y_mult, y_mult_step, y_zp};
    const bool vecC = ldc % 4 == 0 && (reinterpret_cast<unsigned long long>(C) % (4 * sizeof(TC))) == 0;
    const auto store = [&](int m, int n, const int acc[4]) {
        int8_gemm_store4(C, ldc, M, N, m, n, vecC, acc, e);
    };
    int8_gemm_dp4a_body<BK>(M, N, K, A, lda, a_flip, B, ldb, b_flip, store);
}
