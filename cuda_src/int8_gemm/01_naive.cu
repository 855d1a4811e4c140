// int8 GEMM ladder, step 1: naive. One thread per output element walks the
// whole row of A and column of B, one byte at a time, accumulating in int32.
// Consecutive threads (threadIdx.x) own consecutive columns, so the B reads of
// a warp are contiguous and its A reads are one broadcast byte.
//
// Common to the ladder (the wrapper in pygpu_ops/quantization.py prepares it):
//   A is (M, K) and B is (K, N), row-major bytes with leading dimensions lda,
//   ldb; C is (M, N) of TC with leading dimension ldc. A byte is used as
//   (signed char)(byte ^ flip): a_flip / b_flip are 0x80808080 for a uint8
//   operand (x - 128) and 0 for int8. The zero points a_zp / b_zp are the
//   shifted ones, steps 0 (scalar) or 1 (per row of A / column of B); the
//   epilogue (epilogue.cuh) corrects for them exactly and, for TC = signed
//   char / unsigned char, requantizes (QLinearMatMul).
// Assumes K * 16384 < 2^31 (the wrapper checks it), so acc never overflows.
// Launch: grid (ceil_div(N, 16), ceil_div(M, 16)), block (16, 16).
#include "epilogue.cuh"

template <typename TC>
__global__ void int8_gemm_naive(int M, int N, int K,
                                const signed char* __restrict__ A, int lda, unsigned a_flip,
                                const signed char* __restrict__ B, int ldb, unsigned b_flip,
                                const int* __restrict__ a_zp, int a_zp_step,
                                const int* __restrict__ b_zp, int b_zp_step,
                                const int* __restrict__ row_sum_a, const int* __restrict__ col_sum_b,
                                int has_zp, const float* __restrict__ y_mult, int y_mult_step, int y_zp,
                                TC* __restrict__ C, int ldc)
{
    const int n = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    const int m = (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (m >= M || n >= N)
        return;
    const unsigned fa = a_flip & 0xffu, fb = b_flip & 0xffu;
    const signed char* a = A + (long long)m * lda;
    int acc = 0;
    for (int k = 0; k < K; ++k)
        acc += (int)(signed char)((unsigned char)a[k] ^ fa) *
               (int)(signed char)((unsigned char)B[(long long)k * ldb + n] ^ fb);
    const Int8GemmEpilogue e{K, a_zp, a_zp_step, b_zp, b_zp_step, row_sum_a, col_sum_b,
                             has_zp, y_mult, y_mult_step, y_zp};
    C[(long long)m * ldc + n] = int8_gemm_finish<TC>(acc, m, n, e);
}
