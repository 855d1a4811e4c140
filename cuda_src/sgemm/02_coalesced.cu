// SGEMM ladder, step 2: global memory coalescing.
//
// Same arithmetic as step 1 (one thread per element of C, dot product from
// global memory), only the thread-to-element mapping changes: threadIdx.x now
// walks N, so the 32 threads of a warp own 32 consecutive *columns* of one
// row. Each B load and each C access of a warp is one contiguous 128-byte
// segment (coalesced), and the A load is the same address for the whole warp
// (a broadcast). Still 2 loads per FMA, but each warp-wide load now moves
// useful bytes only, so the kernel runs several times faster: published
// ladders put it at ~8-12% of cuBLAS.
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// BM * BN threads covering one BM x BN tile of C. Default
// sgemm_coalesced<32, 32>: 1024 threads, no shared memory. BN should be a
// multiple of 32 so that a warp stays within one row. Any M, N, K >= 1.
template <int BM, int BN>
__global__ void __launch_bounds__(BM * BN) sgemm_coalesced(
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

    // Consecutive threads take consecutive columns (the coalesced mapping).
    const int row = (int)blockIdx.y * BM + (int)(threadIdx.x / BN);
    const int col = (int)blockIdx.x * BN + (int)(threadIdx.x % BN);
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k)
            acc += A[(long long)row * lda + k] * B[(long long)k * ldb + col];
        float* c = C + (long long)row * ldc + col;
        // beta == 0: C may be uninitialised, so it must not be read.
        *c = (beta == 0.0f) ? alpha * acc : alpha * acc + beta * *c;
    }
}
