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
//    warp are 128-byte row segments;
//  * two 256-thread blocks share an SM (__launch_bounds__ minimum of 2
//    blocks, so at most 128 registers) and fill each other's barrier,
//    prologue and epilogue stalls.
// Fitting 64 accumulators, two k-steps of fragments and the prefetch into
// 128 registers without spilling takes a leaner main loop than step 7's:
//  * the prefetch of the next tile is split in halves: A's global loads are
//    issued at the top of a tile and stored to shared memory after its
//    first BK / 2 k-steps, then B's are issued and stored after the last
//    ones, so only 4 staging registers are live at a time (step 7: 8).
//    Each load's latency now hides behind BK / 2 k-steps (256 FMAs per
//    thread, times the other warps of two blocks) instead of BK. The other
//    buffer is free all through the tile (its last readers passed the
//    previous barrier), so one barrier per tile still suffices;
//  * the partial K tile (K % BK != 0) is loaded first, with checks, and the
//    full tiles after it (the order of the sum over K is free), so every
//    prefetch in the loop is a full tile with no K checks and nothing
//    K-dependent stays live after the loop;
//  * whether loads may be float4 is decided once per block: rows of A past
//    M and groups of 4 columns of B wholly past N load row 0 / column 0
//    (they feed only outputs that are never stored), so no row or column
//    check is left in the loop;
//  * where every load of the block is float4, the main loop runs two tiles
//    per iteration, one per shared-memory stage: both stages are then
//    constant offsets of the shared loads and stores and no stage switch,
//    buffer number or vector/scalar branch is left in the loop. The other
//    tiles (one at most there, all of them elsewhere) go through a loop of
//    one tile per iteration whose stages are switched by one XOR of a
//    thread's shared-memory indices (each stage starts at a power-of-two
//    element offset);
//  * global pointers are computed once and advanced by a tile per load.
// SASS (static, NVRTC 13.5, sm_90): 124 registers, no spills, no stack; the
// main loop (2 tiles) is 1116 instructions of which 1024 FFMA: fast-path
// FFMA share 91.8%, 1.09 instructions per FFMA (the first two bullets'
// loop before this change: 89.4%, 1.12). Its non-FFMA instructions are
// 64 LDS.128, 4 LDG.128, 8 STS + 2 STS.128, 2 BAR and 12 of address and
// loop arithmetic. Published ladders reach ~90% of cuBLAS with this
// recipe; not yet measured here.
// The main loop is warptile_body (below), a device function template taking
// the store as a functor, so that other kernels (conv/conv_gemm_warptile.cu)
// reuse it with their own epilogue; sgemm_warptile passes the GEMM store.
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// THREADS = (BM / WM) * (BN / WN) * 32 threads. Default
// sgemm_warptile<128, 128, 8, 32, 64, 2, 2, 4, 4>
// (BM, BN, BK, WM, WN, WMITER, WNITER, TM, TN): 256 threads (8 warps as
// 4 x 2), 20608 bytes of static shared memory.
// Vector paths only where legal, else scalar bounds-checked (any M, N, K >= 1;
// tiles are zero-filled past K, and hold copies of row / column 0 past M / N,
// which reach only outputs that are not stored):
//  * A float4 loads: lda % 4 == 0, strideA % 4 == 0, A 16-byte aligned, and
//    the 4 elements inside the matrix; B likewise with ldb, strideB, B, and
//    in the last block column N % 4 == 0;
//  * C float4 loads/stores: ldc % 4 == 0, strideC % 4 == 0, C 16-byte
//    aligned, and the 4 columns inside the matrix.

// warptile_body: the whole kernel but the store, shared with kernels that
// need another epilogue (conv/conv_gemm_warptile.cu). A (M, K) row-major
// with leading dimension lda, B (K, N) with ldb, both already offset to this
// block's batch; vecA / vecB: float4 loads are legal (ld % 4 == 0, pointer
// 16-byte aligned). Block tile (blockIdx.y, blockIdx.x). Calls
// epi(row, col, a) once per group of 4 columns col .. col + 3 of a row of
// the result with row < M and col < N (columns col + 1 .. col + 3 may be
// >= N: the epilogue checks them, and a[] holds no sum of zeros there);
// a[0 .. 3] are the sums over K.
template <int BM, int BN, int BK, int WM, int WN, int WMITER, int WNITER, int TM, int TN, class Epilogue>
__device__ __forceinline__ void warptile_body(
    int M, int N, int K,
    const float* __restrict__ A, int lda, bool vecA,
    const float* __restrict__ B, int ldb, bool vecB, const Epilogue& epi)
{
    constexpr int WARPS_N = BN / WN;
    constexpr int THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int WSUBM = WM / WMITER;
    constexpr int WSUBN = WN / WNITER;
    constexpr int LANES_N = WSUBN / TN;
    constexpr int PAD = 4;
    constexpr int A_LOADS = (BM * BK / 4) / THREADS;
    constexpr int B_LOADS = (BK * BN / 4) / THREADS;
    static_assert(BM % WM == 0 && BN % WN == 0, "warp tiles must divide the tile");
    static_assert(WM % WMITER == 0 && WN % WNITER == 0, "sub-tiles must divide the warp tile");
    static_assert((WSUBM / TM) * (WSUBN / TN) == 32, "a sub-tile is one output block per lane");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "lane blocks are read as float4");
    static_assert(BK % 8 == 0, "an A tile row is read as whole 32-byte sectors");
    static_assert(A_LOADS * THREADS == BM * BK / 4 && B_LOADS * THREADS == BK * BN / 4,
                  "each thread loads a whole number of float4");
    static_assert(THREADS % (BN / 4) == 0, "a thread's B loads share one column group");
    // Two stages per operand. Stage s of A is As[s * A_STRIDE + k * (BM + PAD)
    // + m] (transposed, rows of BM + 4 floats), of B Bs[s * B_STRIDE + k * BN
    // + n]. A_STRIDE / B_STRIDE are the powers of two at or above one
    // stage's size, so stage 1's index is stage 0's with one bit set.
    constexpr int A_TILE = BK * (BM + PAD);
    constexpr int B_TILE = BK * BN;
    constexpr int A_STRIDE = A_TILE <= 1024 ? 1024 : A_TILE <= 2048 ? 2048 : A_TILE <= 4096 ? 4096 : 8192;
    constexpr int B_STRIDE = B_TILE <= 1024 ? 1024 : B_TILE <= 2048 ? 2048 : B_TILE <= 4096 ? 4096 : 8192;
    static_assert(A_TILE <= A_STRIDE && B_TILE <= B_STRIDE, "a stage must fit below 8192 floats");
    alignas(16) __shared__ float As[A_STRIDE + A_TILE];
    alignas(16) __shared__ float Bs[B_STRIDE + B_TILE];

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

    // Loader mapping of float4 number f = tid + l * THREADS. A: bit 0 picks
    // the half of an 8-wide k chunk, the next bits the row, the rest the
    // chunk (a warp reads 16 rows x 32 bytes, whole sectors). B: row
    // f / (BN / 4), column group f % (BN / 4).
    auto aRow = [&](int l) { return ((tid + l * THREADS) / 2) % BM; };
    auto aCol = [&](int l) { const int f = tid + l * THREADS; return (f % 2) * 4 + (f / (2 * BM)) * 8; };
    auto bRow = [&](int l) { return (tid + l * THREADS) / (BN / 4); };
    const int bCol = (tid % (BN / 4)) * 4;

    const int colsB = N - bn - bCol;   // columns of B left from this thread's 4
    // Whether this block's loads may be float4, decided once per block so
    // that the test is uniform. Rows of A past M, and groups of 4 columns of
    // B wholly past N, load row 0 / column 0 instead: they feed only outputs
    // that are never stored, so they need no check. A group straddling N
    // (N % 4 != 0, last block column) forbids float4 loads of B there.
    const bool vB = vecB && (N % 4 == 0 || bn + BN <= N);

    // Global pointers of the next tile to load, advanced by a tile per load.
    const float* gA[A_LOADS];
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l)
        gA[l] = A + (long long)(bm + aRow(l) < M ? bm + aRow(l) : 0) * lda + aCol(l);
    const float* gB[B_LOADS];
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l)
        gB[l] = B + (long long)bRow(l) * ldb + (colsB > 0 ? bn + bCol : 0);
    const long long tileB = (long long)ldb * BK;   // B elements per K tile

    // Staging registers: the next tile travels global -> here -> smem.
    float4 stA[A_LOADS], stB[B_LOADS];

    // This thread's shared-memory indices in the stage being read (rA, rB)
    // and in the stage being written (wA, wB). Each is below its stride, so
    // switching stage is an XOR with the stride.
    int rA = rowOff, rB = colOff;
    int wA = aRow(0) + aCol(0) * (BM + PAD);
    int wB = bRow(0) * BN + bCol;

    // Global -> registers, zero past K: the tile `skip` tiles after the one
    // gA / gB point at (which they do not move). full: the whole tile is
    // inside K (no K checks); else kRem = K columns left from the tile
    // start. vec: float4 loads are legal (vecA; vB).
    auto loadA = [&](int skip, int kRem, bool full, bool vec) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const int c = aCol(l);
            const float* src = gA[l] + (long long)skip * BK;
            if (vec && (full || c + 3 < kRem)) {
                stA[l] = *reinterpret_cast<const float4*>(src);
            } else {
                stA[l].x = (full || c + 0 < kRem) ? src[0] : 0.0f;
                stA[l].y = (full || c + 1 < kRem) ? src[1] : 0.0f;
                stA[l].z = (full || c + 2 < kRem) ? src[2] : 0.0f;
                stA[l].w = (full || c + 3 < kRem) ? src[3] : 0.0f;
            }
        }
    };
    auto loadB = [&](int skip, int kRem, bool full, bool vec) {
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const bool rowOk = full || bRow(l) < kRem;
            const float* src = gB[l] + skip * tileB;
            if (vec && rowOk) {
                stB[l] = *reinterpret_cast<const float4*>(src);
            } else {
                stB[l].x = (rowOk && colsB > 0) ? src[0] : 0.0f;
                stB[l].y = (rowOk && colsB > 1) ? src[1] : 0.0f;
                stB[l].z = (rowOk && colsB > 2) ? src[2] : 0.0f;
                stB[l].w = (rowOk && colsB > 3) ? src[3] : 0.0f;
            }
        }
    };
    auto nextTile = [&]() {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) gA[l] += BK;
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) gB[l] += tileB;
    };
    // Registers -> the stage being written moved by d stages (d = -1, 0, 1),
    // same mapping as the loads.
    auto storeA = [&](int d) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            // Transposing store: rows of BM + 4 put the threads holding kk
            // and kk + 4 16 banks apart, so a warp hits 32 distinct banks.
            float* dst = &As[wA + d * A_STRIDE + (aRow(l) - aRow(0)) + (aCol(l) - aCol(0)) * (BM + PAD)];
            dst[0 * (BM + PAD)] = stA[l].x;
            dst[1 * (BM + PAD)] = stA[l].y;
            dst[2 * (BM + PAD)] = stA[l].z;
            dst[3 * (BM + PAD)] = stA[l].w;
        }
    };
    auto storeB = [&](int d) {
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l)
            *reinterpret_cast<float4*>(&Bs[wB + d * B_STRIDE + (bRow(l) - bRow(0)) * BN]) = stB[l];
    };

    // acc[wm * TM + i][wn * TN + j] is the output at row
    // rowOff + wm * WSUBM + i, column colOff + wn * WSUBN + j of the tile.
    float acc[WMITER * TM][WNITER * TN];
#pragma unroll
    for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
        for (int j = 0; j < WNITER * TN; ++j)
            acc[i][j] = 0.0f;

    // One k-step of the read stage moved by d stages: fragments from smem,
    // 8 x 8 FMAs.
    auto compute = [&](int k, int d) {
        float regA[WMITER * TM], regB[WNITER * TN];
#pragma unroll
        for (int wm = 0; wm < WMITER; ++wm)
#pragma unroll
            for (int q = 0; q < TM / 4; ++q) {
                const float4 v = *reinterpret_cast<const float4*>(
                    &As[rA + d * A_STRIDE + k * (BM + PAD) + wm * WSUBM + q * 4]);
                regA[wm * TM + q * 4 + 0] = v.x; regA[wm * TM + q * 4 + 1] = v.y;
                regA[wm * TM + q * 4 + 2] = v.z; regA[wm * TM + q * 4 + 3] = v.w;
            }
#pragma unroll
        for (int wn = 0; wn < WNITER; ++wn)
#pragma unroll
            for (int q = 0; q < TN / 4; ++q) {
                const float4 v = *reinterpret_cast<const float4*>(
                    &Bs[rB + d * B_STRIDE + k * BN + wn * WSUBN + q * 4]);
                regB[wn * TN + q * 4 + 0] = v.x; regB[wn * TN + q * 4 + 1] = v.y;
                regB[wn * TN + q * 4 + 2] = v.z; regB[wn * TN + q * 4 + 3] = v.w;
            }
#pragma unroll
        for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
            for (int j = 0; j < WNITER * TN; ++j)
                acc[i][j] += regA[i] * regB[j];
    };
    auto computeTile = [&]() {
#pragma unroll
        for (int k = 0; k < BK; ++k) compute(k, 0);
    };
    // One pipelined tile: compute on the read stage while the next tile, a
    // full one, travels into the write stage, A during the first half of
    // the k-steps and B during the second, so only one operand's staging
    // registers are live at a time. Writing the write stage needs no
    // barrier first: its last readers were in the previous tile, which
    // every thread left through the barrier below. That one barrier does
    // two jobs: the next tile is complete before anyone reads it, and
    // everyone has finished reading this stage before it is overwritten.
    // dr, dw: the stages read and written, moved as in compute and storeA;
    // vA, vB: the float4 loads are legal.
    auto pipelined = [&](int dr, int dw, bool vA, bool vB) {
        loadA(0, BK, true, vA);
#pragma unroll
        for (int k = 0; k < BK / 2; ++k) compute(k, dr);
        storeA(dw);
        loadB(0, BK, true, vB);
#pragma unroll
        for (int k = BK / 2; k < BK; ++k) compute(k, dr);
        storeB(dw);
        nextTile();
        __syncthreads();
    };

    // The K tiles: fullTiles of BK columns, and a partial one of kTail when
    // K % BK != 0. The partial one is summed first (the order of the sum
    // over K is free): then every tile fetched while computing is a full
    // one, with no K checks, and nothing K-dependent stays live after the
    // main loop.
    const int fullTiles = K / BK;
    const int kTail = K % BK;
    const int tiles = fullTiles + (kTail > 0 ? 1 : 0);
    if (tiles > 0) {
        // Iteration t computes one tile and prefetches the next. Where every
        // load is float4 (vecA && vB) the main loop below runs them in pairs,
        // one per stage, so that both stages are constant offsets from the
        // read (write) indices and no stage switch is left in the loop; the
        // loop before it runs the other tiles (one at most there; all of
        // them where a float4 load is illegal) one per iteration, switching
        // stage by an XOR. The first tile goes to the stage that makes the
        // read stage 0 when the pairs begin.
        const bool vec = vecA && vB;
        const int pairs = vec ? (tiles - 1) / 2 : 0;
        const int single = tiles - 1 - 2 * pairs;
        if (single & 1) {
            rA ^= A_STRIDE; rB ^= B_STRIDE;
            wA ^= A_STRIDE; wB ^= B_STRIDE;
        }
        if (kTail > 0) {
            loadA(fullTiles, kTail, false, vecA);
            loadB(fullTiles, kTail, false, vB);
        } else {
            loadA(0, BK, true, vecA);
            loadB(0, BK, true, vB);
            nextTile();
        }
        storeA(0);
        storeB(0);
        // The first tile must be complete before anyone computes on it.
        __syncthreads();
        wA ^= A_STRIDE; wB ^= B_STRIDE;
        for (int t = 0; t < single; ++t) {
            pipelined(0, 0, vecA, vB);
            rA ^= A_STRIDE; rB ^= B_STRIDE;
            wA ^= A_STRIDE; wB ^= B_STRIDE;
        }
        for (int p = pairs; p > 0; --p) {
            pipelined(0, 0, true, true);
            pipelined(1, -1, true, true);
        }
        // The last tile: nothing left to prefetch.
        computeTile();
    }

    // The lane block's origin again, from the read indices (live anyway).
    const int rowC = bm + (rA & (A_STRIDE - 1));
    const int colC = bn + (rB & (B_STRIDE - 1));
#pragma unroll
    for (int i = 0; i < WMITER * TM; ++i) {
        const int row = rowC + (i / TM) * WSUBM + i % TM;
        if (row >= M)
            continue;
#pragma unroll
        for (int g = 0; g < WNITER * TN / 4; ++g) {
            // Group g of 4 columns: sub-tile g / (TN / 4), quad g % (TN / 4).
            const int col = colC + (g / (TN / 4)) * WSUBN + (g % (TN / 4)) * 4;
            if (col < N)
                epi(row, col, &acc[i][g * 4]);
        }
    }
}

// The GEMM store: C = alpha * acc + beta * C, float4 where vecC and the 4
// columns are inside the matrix; beta == 0 never reads C.
struct WarptileGemmStore {
    float* __restrict__ C;
    int ldc, N;
    float alpha, beta;
    bool vecC;

    __device__ __forceinline__ void operator()(int row, int col, const float* a) const
    {
        float* c = C + (long long)row * ldc + col;
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
};

template <int BM, int BN, int BK, int WM, int WN, int WMITER, int WNITER, int TM, int TN>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, 2) sgemm_warptile(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, long long strideA,
    const float* __restrict__ B, int ldb, long long strideB,
    float beta, float* __restrict__ C, int ldc, long long strideC)
{
    // A is (M, K) row-major with leading dimension lda, B is (K, N) with ldb,
    // C is (M, N) with ldc; blockIdx.z selects the batch.
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
    const WarptileGemmStore store{C, ldc, N, alpha, beta, vecC};
    warptile_body<BM, BN, BK, WM, WN, WMITER, WNITER, TM, TN>(M, N, K, A, lda, vecA, B, ldb, vecB, store);
}
