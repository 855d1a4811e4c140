// SGEMM ladder, step 7: double buffering (register-staged prefetch).
//
// Change from step 6 (same tiles, float4 paths, transposed A, split 8 x 8
// micro-tile): shared memory holds two copies of each tile. While the block
// computes on buffer `cur`, every thread has already issued the global loads
// of the next K tile into registers; only after its FMAs does it write them
// into the other buffer. The global-load latency (hundreds of cycles) is
// hidden behind 8 x 64 FMAs instead of being waited for with the whole block
// idle at a barrier, and the loop needs one __syncthreads() per tile instead
// of two. Costs: twice the shared memory and 8 staging registers, and no
// instructions: the loop runs two tiles per iteration, one per buffer, so
// the buffer numbers are constants (immediate offsets of the shared loads
// and stores) and no buffer index is computed, and the loaders' row (A)
// and column (B) addresses and checks are made once, before the loop.
// SASS (static, NVRTC 13.5, sm_90): 127 registers, no spills; the loop
// (2 tiles) is 1154 instructions of which 1024 FFMA: fast-path FFMA share
// 88.7%, 1.13 instructions per FFMA (one tile per iteration with a
// computed buffer index: 84.8%; step 6: 86.9%). Published ladders put
// this around ~80-85% of cuBLAS.
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// THREADS = (BM / TM) * (BN / TN) threads. Default
// sgemm_double_buffered<128, 128, 8, 8, 8> (BM, BN, BK, TM, TN): 256
// threads, 16640 bytes of static shared memory. Assumes a thread's B loads
// share one column group (THREADS % (BN / 4) == 0, static_assert).
// Vector paths only where legal, else scalar bounds-checked (any M, N, K >= 1):
//  * A float4 loads: lda % 4 == 0, strideA % 4 == 0, A 16-byte aligned, and
//    the 4 elements inside the matrix; B likewise with ldb, strideB, B;
//  * C float4 loads/stores: ldc % 4 == 0, strideC % 4 == 0, C 16-byte
//    aligned, and the 4 columns inside the matrix.
template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) sgemm_double_buffered(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, long long strideA,
    const float* __restrict__ B, int ldb, long long strideB,
    float beta, float* __restrict__ C, int ldc, long long strideC)
{
    // A is (M, K) row-major with leading dimension lda, B is (K, N) with ldb,
    // C is (M, N) with ldc; blockIdx.z selects the batch.
    constexpr int TY = BM / TM;            // threads along M
    constexpr int TX = BN / TN;            // threads along N
    constexpr int THREADS = TY * TX;
    constexpr int PAD = 4;                 // keeps rows 16-byte aligned
    constexpr int A_LOADS = (BM * BK / 4) / THREADS;   // float4 per thread
    constexpr int B_LOADS = (BK * BN / 4) / THREADS;
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile is made of 4 x 4 blocks");
    static_assert(BM % TM == 0 && BN % TN == 0, "micro-tile must divide the tile");
    static_assert(BK % 8 == 0, "an A tile row is read as whole 32-byte sectors");
    static_assert(A_LOADS * THREADS == BM * BK / 4 && B_LOADS * THREADS == BK * BN / 4,
                  "each thread loads a whole number of float4");
    static_assert(THREADS % (BN / 4) == 0, "a thread's B loads share one column group");
    alignas(16) __shared__ float As[2][BK][BM + PAD];
    alignas(16) __shared__ float Bs[2][BK][BN];

    const long long batch = blockIdx.z;
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;

    const bool vecA = lda % 4 == 0 && strideA % 4 == 0 &&
                      (reinterpret_cast<unsigned long long>(A) & 15ull) == 0;
    const bool vecB = ldb % 4 == 0 && strideB % 4 == 0 &&
                      (reinterpret_cast<unsigned long long>(B) & 15ull) == 0;
    const bool vecC = ldc % 4 == 0 && strideC % 4 == 0 &&
                      (reinterpret_cast<unsigned long long>(C) & 15ull) == 0;

    const int tid = (int)threadIdx.x;
    const int tc = tid % TX;
    const int tr = tid / TX;
    const int bm = (int)blockIdx.y * BM;
    const int bn = (int)blockIdx.x * BN;

    // Staging registers: the next tile travels global -> here -> smem.
    float4 stA[A_LOADS], stB[B_LOADS];

    // Global -> registers for the tile starting at k0, zero outside the
    // matrix. A float4 number f: bit 0 picks the half of an 8-wide k chunk,
    // the next bits the row, the rest the chunk (a warp reads 16 rows x 32
    // bytes, whole sectors). The row (A) and column (B) parts of the
    // addresses and checks do not change from tile to tile: they are made
    // once, here, and a tile adds only k0.
    const float* pA[A_LOADS];
    bool rowOkA[A_LOADS];
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) {
        const int f = tid + l * THREADS;
        const int gr = bm + (f / 2) % BM;
        rowOkA[l] = gr < M;
        pA[l] = A + (long long)(rowOkA[l] ? gr : 0) * lda + (f % 2) * 4 + (f / (2 * BM)) * 8;
    }
    const float* pB[B_LOADS];
    const int gcB = bn + (tid % (BN / 4)) * 4;   // the same for every l (static_assert)
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l)
        pB[l] = B + (long long)((tid + l * THREADS) / (BN / 4)) * ldb + gcB;
    auto loadTile = [&](int k0) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const int f = tid + l * THREADS;
            const int gk = k0 + (f % 2) * 4 + (f / (2 * BM)) * 8;
            const float* src = pA[l] + k0;
            if (vecA && rowOkA[l] && gk + 3 < K) {
                stA[l] = *reinterpret_cast<const float4*>(src);
            } else {
                stA[l].x = (rowOkA[l] && gk + 0 < K) ? src[0] : 0.0f;
                stA[l].y = (rowOkA[l] && gk + 1 < K) ? src[1] : 0.0f;
                stA[l].z = (rowOkA[l] && gk + 2 < K) ? src[2] : 0.0f;
                stA[l].w = (rowOkA[l] && gk + 3 < K) ? src[3] : 0.0f;
            }
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const bool rowOk = k0 + (tid + l * THREADS) / (BN / 4) < K;
            const float* src = pB[l] + (long long)k0 * ldb;   // not read when !rowOk
            if (vecB && rowOk && gcB + 3 < N) {
                stB[l] = *reinterpret_cast<const float4*>(src);
            } else {
                stB[l].x = (rowOk && gcB + 0 < N) ? src[0] : 0.0f;
                stB[l].y = (rowOk && gcB + 1 < N) ? src[1] : 0.0f;
                stB[l].z = (rowOk && gcB + 2 < N) ? src[2] : 0.0f;
                stB[l].w = (rowOk && gcB + 3 < N) ? src[3] : 0.0f;
            }
        }
    };

    // Registers -> shared buffer `buf`, same index mapping as loadTile.
    auto storeTile = [&](int buf) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const int f = tid + l * THREADS;
            const int m = (f / 2) % BM;
            const int kk = (f % 2) * 4 + (f / (2 * BM)) * 8;
            // Transposing store: rows of BM + 4 put the threads holding kk
            // and kk + 4 16 banks apart, so a warp hits 32 distinct banks.
            As[buf][kk + 0][m] = stA[l].x;
            As[buf][kk + 1][m] = stA[l].y;
            As[buf][kk + 2][m] = stA[l].z;
            As[buf][kk + 3][m] = stA[l].w;
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const int f = tid + l * THREADS;
            *reinterpret_cast<float4*>(&Bs[buf][f / (BN / 4)][(f % (BN / 4)) * 4]) = stB[l];
        }
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;
    float regA[TM], regB[TN];

    // The FMAs of the tile in buffer cur.
    auto computeTile = [&](int cur) {
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            // 4 x 4 block g of the micro-tile starts at row g * TY * 4 + tr * 4
            // (column g * TX * 4 + tc * 4): neighbouring threads read
            // neighbouring float4, conflict-free.
#pragma unroll
            for (int g = 0; g < TM / 4; ++g) {
                const float4 v = *reinterpret_cast<const float4*>(&As[cur][k][g * TY * 4 + tr * 4]);
                regA[g * 4 + 0] = v.x; regA[g * 4 + 1] = v.y;
                regA[g * 4 + 2] = v.z; regA[g * 4 + 3] = v.w;
            }
#pragma unroll
            for (int g = 0; g < TN / 4; ++g) {
                const float4 v = *reinterpret_cast<const float4*>(&Bs[cur][k][g * TX * 4 + tc * 4]);
                regB[g * 4 + 0] = v.x; regB[g * 4 + 1] = v.y;
                regB[g * 4 + 2] = v.z; regB[g * 4 + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j)
                    acc[i][j] += regA[i] * regB[j];
        }
    };
    // Compute the tile in buffer cur while tile `next` travels into buffer
    // cur ^ 1: its global loads are issued first, so their latency overlaps
    // the FMAs, and stored after them. Writing buffer cur ^ 1 needs no
    // barrier first: its last readers were in the previous tile, which
    // every thread left through the barrier below. That one barrier does
    // two jobs: tile `next` is complete before anyone reads it, and everyone
    // has finished reading buffer cur before the tile after next
    // overwrites it.
    auto overlapped = [&](int cur, int next) {
        loadTile(next * BK);
        computeTile(cur);
        storeTile(cur ^ 1);
        __syncthreads();
    };

    const int tiles = (K + BK - 1) / BK;
    loadTile(0);
    storeTile(0);
    // Tile 0 must be complete before anyone computes on it.
    __syncthreads();
    // Two tiles per iteration, one per buffer: the buffer numbers are then
    // constants, and the double buffering costs no index arithmetic.
    int t = 0;
    for (; t + 2 < tiles; t += 2) {
        overlapped(0, t + 1);
        overlapped(1, t + 2);
    }
    // The last one or two tiles; the tile in buffer 0 is t.
    if (t + 1 < tiles) {
        overlapped(0, t + 1);
        computeTile(1);
    } else {
        computeTile(0);
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int row = bm + (i / 4) * TY * 4 + tr * 4 + i % 4;
        if (row >= M)
            continue;
#pragma unroll
        for (int g = 0; g < TN / 4; ++g) {
            const int col = bn + g * TX * 4 + tc * 4;
            float* c = C + (long long)row * ldc + col;
            const float* a = &acc[i][g * 4];
            if (vecC && col + 3 < N) {
                float4 v;
                if (beta == 0.0f) {
                    // beta == 0: C may be uninitialised, so it is not read.
                    v.x = alpha * a[0]; v.y = alpha * a[1];
                    v.z = alpha * a[2]; v.w = alpha * a[3];
                } else {
                    v = *reinterpret_cast<const float4*>(c);
                    v.x = alpha * a[0] + beta * v.x; v.y = alpha * a[1] + beta * v.y;
                    v.z = alpha * a[2] + beta * v.z; v.w = alpha * a[3] + beta * v.w;
                }
                *reinterpret_cast<float4*>(c) = v;
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (col + j < N)
                        c[j] = (beta == 0.0f) ? alpha * a[j] : alpha * a[j] + beta * c[j];
            }
        }
    }
}
