// The epilogue every int8 GEMM kernel shares: zero-point correction, then
// either the int32 store (MatMulInteger) or requantization to int8 / uint8
// (QLinearMatMul), inside the GEMM kernel.
//
// Operands reach the kernels as signed bytes a', b' (a uint8 operand is read
// with its top bit flipped: a' = a - 128, and its zero point is shifted the
// same way by the wrapper), so every kernel multiplies s8 x s8. The kernels
// accumulate acc = sum_k a' b' (|acc| <= 16384 K, within int32 for the K the
// wrapper allows) and the epilogue applies (gemmlowp)
//   sum_k (a' - za)(b' - zb) = acc - zb * rowsum(a') - za * colsum(b') + K za zb
// with rowsum / colsum precomputed by zero_point_sums.cu (only when some zero
// point is non-zero: has_zp). The terms may exceed int32, but the identity
// holds modulo 2^32 and the wrapper guarantees the true result fits in int32,
// so wrapping unsigned 32-bit arithmetic gives it exactly (and is cheaper in
// registers than 64-bit products).
//
// Requantization (TC = signed char / unsigned char):
//   y = saturate(round_half_to_even(float(r) * mult[n]) + y_zp)
// float(r) rounds to nearest even (exact below 2^24) and the product is one
// correctly rounded float32 multiplication (__fmul_rn, never an FMA); mult is
// computed by the wrapper in float32 as (a_scale * b_scale[n]) / y_scale.
#pragma once
#include "../quant/qcommon.cuh"

struct Int8GemmEpilogue {
    int K;
    const int* a_zp;        // effective (shifted) zero point of row m: a_zp[m * a_zp_step]
    int a_zp_step;
    const int* b_zp;        // of column n: b_zp[n * b_zp_step]
    int b_zp_step;
    const int* row_sum_a;   // (M,): sum_k a'[m, k]; read only when has_zp
    const int* col_sum_b;   // (N,): sum_k b'[k, n]; read only when has_zp
    int has_zp;
    const float* y_mult;    // requantization multiplier of column n: y_mult[n * y_mult_step]
    int y_mult_step;
    int y_zp;
};

template <typename TC> struct Int8GemmOut;
template <> struct Int8GemmOut<int> {
    static __device__ __forceinline__ int convert(int r, int, const Int8GemmEpilogue&) { return r; }
};
template <typename TQ> struct Int8GemmRequant {
    static __device__ __forceinline__ TQ convert(int r, int n, const Int8GemmEpilogue& e)
    {
        return round_saturate<TQ>(__fmul_rn(__int2float_rn(r), e.y_mult[(long long)n * e.y_mult_step]), e.y_zp);
    }
};
template <> struct Int8GemmOut<signed char> : Int8GemmRequant<signed char> {};
template <> struct Int8GemmOut<unsigned char> : Int8GemmRequant<unsigned char> {};

// The output value of element (m, n) from its raw accumulator.
template <typename TC>
__device__ __forceinline__ TC int8_gemm_finish(int acc, int m, int n, const Int8GemmEpilogue& e)
{
    unsigned r = (unsigned)acc;
    if (e.has_zp) {
        const unsigned za = (unsigned)e.a_zp[(long long)m * e.a_zp_step];
        const unsigned zb = (unsigned)e.b_zp[(long long)n * e.b_zp_step];
        r = r - zb * (unsigned)e.row_sum_a[m] - za * (unsigned)e.col_sum_b[n] + (unsigned)e.K * za * zb;
    }
    return Int8GemmOut<TC>::convert((int)r, n, e);
}

// Stores the finished values of row m, columns n..n+3 (those inside the
// matrix), from their accumulators; one 16-byte (int32) or 4-byte (8-bit)
// store when vec allows it and all 4 are inside. Values are finished one at a
// time so that few temporaries are live next to the accumulators.
__device__ __forceinline__ void int8_gemm_store4(int* C, int ldc, int M, int N, int m, int n, bool vec,
                                                 const int acc[4], const Int8GemmEpilogue& e)
{
    if (m >= M)
        return;
    int* p = C + (long long)m * ldc + n;
    if (vec && n + 4 <= N) {
        *reinterpret_cast<int4*>(p) = make_int4(int8_gemm_finish<int>(acc[0], m, n, e),
                                                int8_gemm_finish<int>(acc[1], m, n + 1, e),
                                                int8_gemm_finish<int>(acc[2], m, n + 2, e),
                                                int8_gemm_finish<int>(acc[3], m, n + 3, e));
    } else {
        for (int j = 0; j < 4; ++j)
            if (n + j < N)
                p[j] = int8_gemm_finish<int>(acc[j], m, n + j, e);
    }
}

// (8-bit outputs; call without explicit template arguments so that int* picks the overload above)
template <typename TQ>
__device__ __forceinline__ void int8_gemm_store4(TQ* C, int ldc, int M, int N, int m, int n, bool vec,
                                                 const int acc[4], const Int8GemmEpilogue& e)
{
    if (m >= M)
        return;
    TQ* p = C + (long long)m * ldc + n;
    if (vec && n + 4 <= N) {
        unsigned packed = 0;
        for (int j = 0; j < 4; ++j)
            packed |= (unsigned)(unsigned char)int8_gemm_finish<TQ>(acc[j], m, n + j, e) << (8 * j);
        *reinterpret_cast<unsigned*>(p) = packed;
    } else {
        for (int j = 0; j < 4; ++j)
            if (n + j < N)
                p[j] = int8_gemm_finish<TQ>(acc[j], m, n + j, e);
    }
}
