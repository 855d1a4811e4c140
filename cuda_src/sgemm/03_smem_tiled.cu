// SGEMM ladder, step 3: shared-memory tiling.
//
// The block walks K in steps of TILE. Each step, its TILE * TILE threads copy
// one TILE x TILE tile of A and one of B into shared memory (one coalesced
// element each), wait, and then every thread reads its row of the A tile and
// its column of the B tile from shared memory. Each global element now feeds
// TILE FMAs instead of one, so global traffic drops by a factor of TILE; the
// kernel becomes bound by shared-memory loads instead (still 2 per FMA).
// Published ladders put it at ~13-20% of cuBLAS.
//
// Launch: grid (ceil_div(N, TILE), ceil_div(M, TILE), batch); 1-D block of
// TILE * TILE threads; BM = BN = BK = TILE. Default sgemm_smem_tiled<32>:
// 1024 threads, 8 KiB of static shared memory. TILE must be a multiple of 32
// (the bank-conflict argument below). Any M, N, K >= 1: out-of-range tile
// elements are stored as zero, so they add nothing to the dot products.
template <int TILE>
__global__ void __launch_bounds__(TILE * TILE) sgemm_smem_tiled(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, long long strideA,
    const float* __restrict__ B, int ldb, long long strideB,
    float beta, float* __restrict__ C, int ldc, long long strideC)
{
    // A is (M, K) row-major with leading dimension lda, B is (K, N) with ldb,
    // C is (M, N) with ldc; blockIdx.z selects the batch.
    static_assert(TILE % 32 == 0, "a warp must cover one tile row");
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];

    const long long batch = blockIdx.z;
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;

    const int tr = (int)threadIdx.x / TILE;
    const int tc = (int)threadIdx.x % TILE;
    const int row = (int)blockIdx.y * TILE + tr;
    const int col = (int)blockIdx.x * TILE + tc;

    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        // A warp (fixed tr, tc = 0..31) loads 32 consecutive floats of one
        // row of A and one row of B: both loads are coalesced.
        As[tr][tc] = (row < M && k0 + tc < K) ? A[(long long)row * lda + k0 + tc] : 0.0f;
        Bs[tr][tc] = (k0 + tr < K && col < N) ? B[(long long)(k0 + tr) * ldb + col] : 0.0f;
        // The whole tile must be in shared memory before anyone reads it.
        __syncthreads();
        // As[tr][k] is one address per warp (broadcast); Bs[k][tc] is 32
        // consecutive floats (32 distinct banks): no bank conflicts.
        for (int k = 0; k < TILE; ++k)
            acc += As[tr][k] * Bs[k][tc];
        // Everyone must be done reading this tile before the next iteration
        // overwrites it.
        __syncthreads();
    }

    if (row < M && col < N) {
        float* c = C + (long long)row * ldc + col;
        // beta == 0: C may be uninitialised, so it must not be read.
        *c = (beta == 0.0f) ? alpha * acc : alpha * acc + beta * *c;
    }
}
