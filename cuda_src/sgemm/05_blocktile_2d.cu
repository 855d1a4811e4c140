// SGEMM ladder, step 5: 2-D register blocking (an outer product per thread).
//
// Change from step 4: each thread computes a TM x TN micro-tile of C instead
// of a TM x 1 column. In the inner loop it loads TM values of A and TN values
// of B from shared memory into registers and performs their TM * TN outer
// product: TM + TN shared loads for TM * TN FMAs, 0.25 loads per FMA at
// 8 x 8 (step 4: ~1.1). With a 128 x 128 block tile each global element is
// also reused 128 times instead of 64. Published ladders put this at ~69% of
// cuBLAS; what is left on the table (scalar global and shared loads, 2-way
// and 4-way bank conflicts on the As/Bs reads of this layout, no overlap of
// loads and compute) is what steps 6 to 8 remove.
//
// The k loop over the tile is unrolled, so the loop the SM runs is the whole
// K tile: its loads, its barriers and 8 k-steps of FMAs, with no k-step
// counter or per-k address arithmetic; the loaders' global pointers and
// their row (A) / column (B) checks are made once, before the K loop.
// ptxas merges the scalar shared reads it then sees (a thread's 8
// consecutive As values of a row, 8 consecutive Bs values) into LDS.128;
// the source, and the bank conflicts of this layout, stay as they are.
// SASS (static, NVRTC 13.5, sm_90): 128 registers, no spills; per K tile
// 610 instructions of which 512 FFMA: FFMA share 83.9%, 1.19 instructions
// per FFMA (before the unrolling: 66.9% per K tile, 81.0% per k-step).
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// THREADS = (BM / TM) * (BN / TN) threads. Default
// sgemm_blocktile_2d<128, 128, 8, 8, 8> (BM, BN, BK, TM, TN): 256 threads,
// 8 KiB of static shared memory. Assumes the tile sizes divide THREADS evenly
// and THREADS is a multiple of BK and BN (static_assert). Any M, N, K >= 1:
// out-of-range tile elements are zero.
template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) sgemm_blocktile_2d(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, long long strideA,
    const float* __restrict__ B, int ldb, long long strideB,
    float beta, float* __restrict__ C, int ldc, long long strideC)
{
    // A is (M, K) row-major with leading dimension lda, B is (K, N) with ldb,
    // C is (M, N) with ldc; blockIdx.z selects the batch.
    constexpr int TX = BN / TN;            // threads along N
    constexpr int THREADS = (BM / TM) * TX;
    static_assert(BM % TM == 0 && BN % TN == 0, "micro-tile must divide the tile");
    static_assert((BM * BK) % THREADS == 0 && (BK * BN) % THREADS == 0,
                  "each thread loads a whole number of tile elements");
    static_assert(THREADS % BK == 0 && THREADS % BN == 0,
                  "a thread loads one fixed column of each tile");
    __shared__ float As[BM][BK];
    __shared__ float Bs[BK][BN];

    const long long batch = blockIdx.z;
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;

    const int tid = (int)threadIdx.x;
    const int tc = tid % TX;   // owns columns tc*TN .. tc*TN+TN-1 of the tile
    const int tr = tid / TX;   // owns rows    tr*TM .. tr*TM+TM-1
    const int bm = (int)blockIdx.y * BM;
    const int bn = (int)blockIdx.x * BN;

    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;
    float regA[TM], regB[TN];

    // Loader mapping: with THREADS a multiple of BK and of BN, a thread
    // loads one fixed column of each tile, A column tid % BK in rows
    // tid / BK + l * (THREADS / BK), B column tid % BN in rows
    // tid / BN + l * (THREADS / BN). Consecutive threads still load
    // consecutive addresses (coalesced). Its global pointers are computed
    // once and advanced by a tile per step, and the row (A) and column (B)
    // checks are made once: inside the K loop only the K checks remain.
    constexpr int A_LOADS = (BM * BK) / THREADS, A_STEP = THREADS / BK;
    constexpr int B_LOADS = (BK * BN) / THREADS, B_STEP = THREADS / BN;
    const int aRow = tid / BK, aCol = tid % BK;
    const int bRow = tid / BN, bCol = tid % BN;
    // Rows past M (columns past N) are never read: the load is skipped, and
    // a thread whose first row is past M keeps its pointer in row 0.
    bool okA[A_LOADS];
    for (int l = 0; l < A_LOADS; ++l)
        okA[l] = bm + aRow + l * A_STEP < M;
    const bool okB = bn + bCol < N;
    const float* gA = A + (long long)(okA[0] ? bm + aRow : 0) * lda + aCol;
    const float* gB = B + (long long)bRow * ldb + (okB ? bn + bCol : 0);
    // Between a thread's rows (one base pointer each and these strides need
    // fewer registers than a pointer per load).
    const long long stepA = (long long)A_STEP * lda;
    const long long stepB = (long long)B_STEP * ldb;
    const long long tileB = (long long)BK * ldb;   // B elements per K tile

    for (int k0 = 0; k0 < K; k0 += BK) {
        const bool kOkA = k0 + aCol < K;
        for (int l = 0; l < A_LOADS; ++l)
            As[aRow + l * A_STEP][aCol] = (okA[l] && kOkA) ? gA[l * stepA] : 0.0f;
        for (int l = 0; l < B_LOADS; ++l)
            Bs[bRow + l * B_STEP][bCol] = (okB && k0 + bRow + l * B_STEP < K) ? gB[l * stepB] : 0.0f;
        gA += BK;
        gB += tileB;
        // Both tiles must be complete before anyone computes on them.
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; ++i)
                regA[i] = As[tr * TM + i][k];
#pragma unroll
            for (int j = 0; j < TN; ++j)
                regB[j] = Bs[k][tc * TN + j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j)
                    acc[i][j] += regA[i] * regB[j];
        }
        // Everyone must be done reading before the next iteration overwrites
        // the tiles.
        __syncthreads();
    }

    for (int i = 0; i < TM; ++i) {
        const int row = bm + tr * TM + i;
        if (row >= M)
            continue;
        for (int j = 0; j < TN; ++j) {
            const int col = bn + tc * TN + j;
            if (col < N) {
                float* c = C + (long long)row * ldc + col;
                // beta == 0: C may be uninitialised, so it must not be read.
                *c = (beta == 0.0f) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
            }
        }
    }
}
