// SGEMM ladder, step 1: the naive kernel.
//
// One thread computes one element of C as a K-long dot product read straight
// from global memory: 2 global loads per FMA and no reuse at all, so the
// kernel is bound by memory traffic. Worse, the thread-to-element mapping is
// the "wrong" one: threadIdx.x walks M, so the 32 threads of a warp own 32
// consecutive *rows* of one column. Their A loads are lda floats apart and
// their C accesses ldc floats apart (one memory transaction per thread
// instead of one per warp); only the B load, the same address for the whole
// warp, is a cheap broadcast. Published ladders put this at ~1-2% of cuBLAS.
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// BM * BN threads covering one BM x BN tile of C. Default sgemm_naive<32, 32>:
// 1024 threads, no shared memory. Any M, N, K >= 1 (tails are bounds-checked).
template <int BM, int BN>
__global__ void __launch_bounds__(BM * BN) sgemm_naive(
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

    // Consecutive threads take consecutive rows (the uncoalesced mapping).
    const int row = (int)blockIdx.y * BM + (int)(threadIdx.x % BM);
    const int col = (int)blockIdx.x * BN + (int)(threadIdx.x / BM);
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k)
            acc += A[(long long)row * lda + k] * B[(long long)k * ldb + col];
        float* c = C + (long long)row * ldc + col;
        // beta == 0: C may be uninitialised, so it must not be read.
        *c = (beta == 0.0f) ? alpha * acc : alpha * acc + beta * *c;
    }
}
