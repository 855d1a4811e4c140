// SGEMM ladder, step 8: warp tiling (the fastest step).
//
// Change from step 7 (double buffering, float4 paths, transposed A tile):
// the thread-to-output mapping gains a warp level. The BM x BN block tile is
// cut into WM x WN warp tiles, one per warp; a warp walks its tile in
// WMITER x WNITER sub-tiles of (WM / WMITER) x (WN / WNITER), and in each
// sub-tile a lane owns a TM x TN block. A thread still computes
// (WMITER * TM) x (WNITER * TN) = 8 x 8 outputs, but
//  * a warp now reads only WM + WN = 96 distinct floats of As/Bs per k
//    (step 7: 16 + 128 = 144), and each float4 shared load is served in one
//    wavefront: lanes read 4 consecutive float4 of As and 8 of Bs, the rest
//    are broadcasts. Fewer shared-memory wavefronts per FMA;
//  * the warp's working set is a compact 2-D region, and the C stores of a
//    warp are 128-byte row segments.
// The kernel is also limited to 128 registers (__launch_bounds__ minimum of
// 2 blocks per SM), so two 256-thread blocks share an SM and fill each
// other's barrier, prologue and epilogue stalls. Published ladders reach
// ~90%+ of cuBLAS with this recipe.
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// THREADS = (BM / WM) * (BN / WN) * 32 threads. Default
// sgemm_warptile<128, 128, 8, 32, 64, 2, 2, 4, 4>
// (BM, BN, BK, WM, WN, WMITER, WNITER, TM, TN): 256 threads (8 warps as
// 4 x 2), 16640 bytes of static shared memory.
// Vector paths only where legal, else scalar bounds-checked (any M, N, K >= 1):
//  * A float4 loads: lda % 4 == 0, strideA % 4 == 0, A 16-byte aligned, and
//    the 4 elements inside the matrix; B likewise with ldb, strideB, B;
//  * C float4 loads/stores: ldc % 4 == 0, strideC % 4 == 0, C 16-byte
//    aligned, and the 4 columns inside the matrix.
template <int BM, int BN, int BK, int WM, int WN, int WMITER, int WNITER, int TM, int TN>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, 2) sgemm_warptile(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, long long strideA,
    const float* __restrict__ B, int ldb, long long strideB,
    float beta, float* __restrict__ C, int ldc, long long strideC)
{
    // A is (M, K) row-major with leading dimension lda, B is (K, N) with ldb,
    // C is (M, N) with ldc; blockIdx.z selects the batch.
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int WSUBM = WM / WMITER;     // warp sub-tile
    constexpr int WSUBN = WN / WNITER;
    constexpr int LANES_N = WSUBN / TN;    // lanes along N in a sub-tile
    constexpr int PAD = 4;                 // keeps rows 16-byte aligned
    constexpr int A_LOADS = (BM * BK / 4) / THREADS;   // float4 per thread
    constexpr int B_LOADS = (BK * BN / 4) / THREADS;
    static_assert(BM % WM == 0 && BN % WN == 0, "warp tiles must divide the tile");
    static_assert(WM % WMITER == 0 && WN % WNITER == 0, "sub-tiles must divide the warp tile");
    static_assert((WSUBM / TM) * (WSUBN / TN) == 32, "a sub-tile is one output block per lane");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "lane blocks are read as float4");
    static_assert(BK % 8 == 0, "an A tile row is read as whole 32-byte sectors");
    static_assert(A_LOADS * THREADS == BM * BK / 4 && B_LOADS * THREADS == BK * BN / 4,
                  "each thread loads a whole number of float4");
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
    const int warp = tid / 32;
    const int lane = tid % 32;
    // Offsets inside the block tile: warp tile origin plus the lane's block
    // inside a sub-tile. Sub-tile (wm, wn) adds wm * WSUBM rows, wn * WSUBN
    // columns.
    const int rowOff = (warp / WARPS_N) * WM + (lane / LANES_N) * TM;
    const int colOff = (warp % WARPS_N) * WN + (lane % LANES_N) * TN;
    const int bm = (int)blockIdx.y * BM;
    const int bn = (int)blockIdx.x * BN;

    // Staging registers: the next tile travels global -> here -> smem.
    float4 stA[A_LOADS], stB[B_LOADS];

    // Global -> registers for the tile starting at k0, zero outside the
    // matrix. A float4 number f: bit 0 picks the half of an 8-wide k chunk,
    // the next bits the row, the rest the chunk (a warp reads 16 rows x 32
    // bytes, whole sectors).
    auto loadTile = [&](int k0) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const int f = tid + l * THREADS;
            const int gr = bm + (f / 2) % BM;
            const int gk = k0 + (f % 2) * 4 + (f / (2 * BM)) * 8;
            if (vecA && gr < M && gk + 3 < K) {
                stA[l] = *reinterpret_cast<const float4*>(A + (long long)gr * lda + gk);
            } else {
                const bool rowOk = gr < M;
                const float* src = A + (long long)(rowOk ? gr : 0) * lda + gk;
                stA[l].x = (rowOk && gk + 0 < K) ? src[0] : 0.0f;
                stA[l].y = (rowOk && gk + 1 < K) ? src[1] : 0.0f;
                stA[l].z = (rowOk && gk + 2 < K) ? src[2] : 0.0f;
                stA[l].w = (rowOk && gk + 3 < K) ? src[3] : 0.0f;
            }
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const int f = tid + l * THREADS;
            const int gr = k0 + f / (BN / 4);
            const int gc = bn + (f % (BN / 4)) * 4;
            if (vecB && gr < K && gc + 3 < N) {
                stB[l] = *reinterpret_cast<const float4*>(B + (long long)gr * ldb + gc);
            } else {
                const bool rowOk = gr < K;
                const float* src = B + (long long)(rowOk ? gr : 0) * ldb + gc;
                stB[l].x = (rowOk && gc + 0 < N) ? src[0] : 0.0f;
                stB[l].y = (rowOk && gc + 1 < N) ? src[1] : 0.0f;
                stB[l].z = (rowOk && gc + 2 < N) ? src[2] : 0.0f;
                stB[l].w = (rowOk && gc + 3 < N) ? src[3] : 0.0f;
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

    // acc[wm * TM + i][wn * TN + j] is the output at row
    // rowOff + wm * WSUBM + i, column colOff + wn * WSUBN + j of the tile.
    float acc[WMITER * TM][WNITER * TN];
#pragma unroll
    for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
        for (int j = 0; j < WNITER * TN; ++j)
            acc[i][j] = 0.0f;
    float regA[WMITER * TM], regB[WNITER * TN];

    const int tiles = (K + BK - 1) / BK;
    loadTile(0);
    storeTile(0);
    // Tile 0 must be complete before anyone computes on it.
    __syncthreads();

    for (int t = 0; t < tiles; ++t) {
        const int cur = t & 1;
        const bool hasNext = t + 1 < tiles;
        // Issue the next tile's global loads now; their latency overlaps
        // the FMAs below.
        if (hasNext)
            loadTile((t + 1) * BK);
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int wm = 0; wm < WMITER; ++wm)
#pragma unroll
                for (int q = 0; q < TM / 4; ++q) {
                    const float4 v = *reinterpret_cast<const float4*>(
                        &As[cur][k][rowOff + wm * WSUBM + q * 4]);
                    regA[wm * TM + q * 4 + 0] = v.x; regA[wm * TM + q * 4 + 1] = v.y;
                    regA[wm * TM + q * 4 + 2] = v.z; regA[wm * TM + q * 4 + 3] = v.w;
                }
#pragma unroll
            for (int wn = 0; wn < WNITER; ++wn)
#pragma unroll
                for (int q = 0; q < TN / 4; ++q) {
                    const float4 v = *reinterpret_cast<const float4*>(
                        &Bs[cur][k][colOff + wn * WSUBN + q * 4]);
                    regB[wn * TN + q * 4 + 0] = v.x; regB[wn * TN + q * 4 + 1] = v.y;
                    regB[wn * TN + q * 4 + 2] = v.z; regB[wn * TN + q * 4 + 3] = v.w;
                }
#pragma unroll
            for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
                for (int j = 0; j < WNITER * TN; ++j)
                    acc[i][j] += regA[i] * regB[j];
        }
        // Writing the other buffer needs no barrier first: its last readers
        // were in iteration t - 1, which every thread left through the
        // barrier below.
        if (hasNext)
            storeTile(cur ^ 1);
        // One barrier per tile, doing two jobs: the next tile is complete in
        // buffer cur ^ 1 before anyone reads it, and everyone has finished
        // reading buffer cur before iteration t + 1 overwrites it with tile
        // t + 2.
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < WMITER * TM; ++i) {
        const int row = bm + rowOff + (i / TM) * WSUBM + i % TM;
        if (row >= M)
            continue;
#pragma unroll
        for (int g = 0; g < WNITER * TN / 4; ++g) {
            // Group g of 4 columns: sub-tile g / (TN / 4), quad g % (TN / 4).
            const int col = bn + colOff + (g / (TN / 4)) * WSUBN + (g % (TN / 4)) * 4;
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
