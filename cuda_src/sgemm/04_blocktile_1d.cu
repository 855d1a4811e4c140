// SGEMM ladder, step 4: 1-D register blocking (block tiling along M).
//
// Change from step 3: each thread computes TM outputs of one column of C
// instead of one, keeping them in registers. In the inner loop a thread loads
// one B value from shared memory and reuses it for TM FMAs, so shared-memory
// loads per FMA drop from 2 to (1 + TM) / TM (about 1.1 for TM = 8). The
// block tile also becomes rectangular (BM x BN with a thin K slice BK), and
// each thread does BM * BN / THREADS times more work per loaded tile, so the
// barrier and global-load overheads are amortised over more FMAs. Published
// ladders put this at ~36% of cuBLAS.
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// THREADS = (BM / TM) * BN threads. Default sgemm_blocktile_1d<64, 64, 8, 8>
// (BM, BN, BK, TM): 512 threads, 4 KiB of static shared memory.
// Assumes BN % 32 == 0 and that the tile sizes divide THREADS evenly (checked
// by static_assert). Any M, N, K >= 1: out-of-range tile elements are zero.
template <int BM, int BN, int BK, int TM>
__global__ void __launch_bounds__((BM / TM) * BN) sgemm_blocktile_1d(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, long long strideA,
    const float* __restrict__ B, int ldb, long long strideB,
    float beta, float* __restrict__ C, int ldc, long long strideC)
{
    // A is (M, K) row-major with leading dimension lda, B is (K, N) with ldb,
    // C is (M, N) with ldc; blockIdx.z selects the batch.
    constexpr int THREADS = (BM / TM) * BN;
    static_assert(BM % TM == 0, "TM must divide BM");
    static_assert(BN % 32 == 0, "a warp must stay within one row of threads");
    static_assert((BM * BK) % THREADS == 0 && (BK * BN) % THREADS == 0,
                  "each thread loads a whole number of tile elements");
    __shared__ float As[BM][BK];
    __shared__ float Bs[BK][BN];

    const long long batch = blockIdx.z;
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;

    const int tid = (int)threadIdx.x;
    const int tc = tid % BN;   // column of C inside the tile
    const int tr = tid / BN;   // this thread owns rows tr*TM .. tr*TM+TM-1
    const int bm = (int)blockIdx.y * BM;
    const int bn = (int)blockIdx.x * BN;

    float acc[TM];
    for (int i = 0; i < TM; ++i)
        acc[i] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
        // Flat index e runs over the tile row by row, so consecutive threads
        // load consecutive addresses of a tile row (coalesced).
        for (int l = 0; l < (BM * BK) / THREADS; ++l) {
            const int e = tid + l * THREADS;
            const int r = e / BK, c = e % BK;
            const int gr = bm + r, gc = k0 + c;
            As[r][c] = (gr < M && gc < K) ? A[(long long)gr * lda + gc] : 0.0f;
        }
        for (int l = 0; l < (BK * BN) / THREADS; ++l) {
            const int e = tid + l * THREADS;
            const int r = e / BN, c = e % BN;
            const int gr = k0 + r, gc = bn + c;
            Bs[r][c] = (gr < K && gc < N) ? B[(long long)gr * ldb + gc] : 0.0f;
        }
        // Both tiles must be complete before anyone computes on them.
        __syncthreads();
        for (int k = 0; k < BK; ++k) {
            // One B value, reused for TM FMAs. All threads of a warp share tr
            // (BN >= 32), so the As reads are broadcasts.
            const float b = Bs[k][tc];
            for (int i = 0; i < TM; ++i)
                acc[i] += As[tr * TM + i][k] * b;
        }
        // Everyone must be done reading before the next iteration overwrites
        // the tiles.
        __syncthreads();
    }

    const int col = bn + tc;
    if (col < N) {
        for (int i = 0; i < TM; ++i) {
            const int row = bm + tr * TM + i;
            if (row < M) {
                float* c = C + (long long)row * ldc + col;
                // beta == 0: C may be uninitialised, so it must not be read.
                *c = (beta == 0.0f) ? alpha * acc[i] : alpha * acc[i] + beta * *c;
            }
        }
    }
}
