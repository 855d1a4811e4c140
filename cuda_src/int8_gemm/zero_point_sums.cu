// Row sums of A' and column sums of B' for the int8 GEMM zero-point
// correction (see epilogue.cuh): launched only when a zero point is non-zero.
// Values are the signed bytes the GEMM kernels see: x' = (signed char)(x ^ flip),
// flip being 0x80 for a uint8 operand (x' = x - 128) and 0 for int8.
// |sum| <= 128 K fits in int32 for every K the wrapper accepts.

// A is (M, K) row-major with leading dimension lda; row_sum is (M,).
// One warp per row (8 rows per 256-thread block), lanes stride over k so the
// reads of a warp are contiguous. Launch: grid (ceil_div(M, 8)), block (256).
extern "C" __global__ void int8_gemm_row_sums(int M, int K, const signed char* __restrict__ A, int lda,
                                              unsigned flip, int* __restrict__ row_sum)
{
    const int lane = (int)(threadIdx.x & 31);
    const int m = (int)blockIdx.x * (int)(blockDim.x / 32) + (int)(threadIdx.x / 32);
    if (m >= M)
        return;  // a whole warp leaves together: the shuffles below stay converged
    const signed char* row = A + (long long)m * lda;
    int s = 0;
    for (int k = lane; k < K; k += 32)
        s += (signed char)((unsigned char)row[k] ^ (flip & 0xffu));
    for (int off = 16; off > 0; off >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0)
        row_sum[m] = s;
}

// B is (K, N) row-major with leading dimension ldb; col_sum is (N,).
// One thread per column; consecutive threads read consecutive bytes of a row.
// Launch: grid (ceil_div(N, 256)), block (256).
extern "C" __global__ void int8_gemm_col_sums(int K, int N, const signed char* __restrict__ B, int ldb,
                                              unsigned flip, int* __restrict__ col_sum)
{
    const int n = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (n >= N)
        return;
    int s = 0;
    for (int k = 0; k < K; ++k)
        s += (signed char)((unsigned char)B[(long long)k * ldb + n] ^ (flip & 0xffu));
    col_sum[n] = s;
}
