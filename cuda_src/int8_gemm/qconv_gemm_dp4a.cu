// The quantized convolution's GEMM (ONNX QLinearConv): the int8 dp4a GEMM
// (int8_gemm/02_dp4a.cu, main loop int8_gemm_dp4a_body unchanged) with an
// epilogue that adds the int32 bias, requantizes with a per-output-channel
// multiplier, optionally clamps at the output zero point (fused ReLU) and
// stores straight into the convolution's NCHW or NHWC output.
//
// Operands follow the int8 GEMM ladder's conventions (01_naive.cu): bytes read
// as (signed char)(byte ^ flip), flip 0x80808080 for a uint8 operand. Weights
// have zero point 0, so the only zero-point term is the input's:
//   sum_k w (x' - zx') = acc - zx' * sum_k w,
// a per-output-channel constant the wrapper folds into the bias it passes:
//   bias[o] = bias_onnx[o] - zx' * sum_k w[o, k]   (int32, wrapping).
// The wrapper pads the column buffer with the input zero point, so padding
// contributes w * (zx' - zx') = 0, as a padded 0.0 would in float.
//
// Per element, with o the output channel of (row, col):
//   r = acc + bias[o]           (unsigned 32-bit, wrapping: the identity holds
//                                modulo 2^32 and the wrapper guarantees the
//                                true r fits in int32)
//   y = saturate(rint(float(r) * mult[o]) + y_zp)   (round_saturate, qcommon.cuh)
//   relu: y = max(y, y_zp)      (ReLU of the dequantized value (y - y_zp) * s_y)
// float(r) rounds to nearest even and the product is one correctly rounded
// float32 multiplication (__fmul_rn, never an FMA), as in qlinear_matmul;
// mult[o] = float32(float32(x_scale * w_scale[o]) / y_scale), from the host.
//
// Layouts (blockIdx.z is the convolution group: A, B, C advance by strideA,
// strideB, strideC, bias and mult by strideChan per group):
//  * NCHW (chanMode 1, channel = row): A = weights of the group (O/G, Kg),
//    B = im2col rows of the group (Kg, ncols) for output pixels q0 .. q0 +
//    ncols of possibly several images; GEMM column col is pixel q = q0 + col
//    of image n = q / P (P = OH*OW) and goes to C[n * strideP + row * ldc +
//    q % P] with ldc = P, strideP = O*OH*OW: (N, O, OH, OW) directly.
//  * NHWC (chanMode 2, channel = col): A = im2col rows (pixels, Kg), B = the
//    group's weights transposed (Kg, O/G), C rows of ldc = O; pass P >= N and
//    strideP = 0 so the address is C[row * ldc + col].
// One 4-byte store when the 4 columns of a thread lie in one image and the
// address is 4-byte aligned, else byte stores.
//
// Assumes K * 16384 < 2^31 (raw dp4a sums stay in int32; the wrapper checks
// it). Any M, N, K >= 1. 64-bit output addressing: a chunk's output may pass
// 2^31 elements.
// Launch: grid (ceil_div(N, 128), ceil_div(M, 128), groups), block (256).
// Default qconv_gemm_dp4a<TC, 32> (TC = signed char / unsigned char): 16.6 KB
// of static shared memory, as int8_gemm_dp4a.
#include "02_dp4a.cu"

template <typename TC>
struct QConvEpilogue {
    TC* __restrict__ C;
    int ldc, M, N;
    long long q0, P, strideP;
    const int* __restrict__ bias;
    const float* __restrict__ mult;
    int chanMode;   // 1: channel = row (NCHW), 2: channel = col (NHWC)
    int y_zp, relu;

    __device__ __forceinline__ TC finish(int acc, int ch) const
    {
        const int r = (int)((unsigned)acc + (unsigned)bias[ch]);
        const int lo = relu ? y_zp : QRange<TC>::lo;
        const TC y = round_saturate<TC>(__fmul_rn(__int2float_rn(r), mult[ch]), y_zp);
        return (int)y < lo ? (TC)lo : y;
    }

    __device__ __forceinline__ void operator()(int row, int col, const int acc[4]) const
    {
        if (row >= M || col >= N)
            return;
        const long long q = q0 + col;
        const long long n = q / P;
        const long long p = q - n * P;
        TC* c = C + n * strideP + (long long)row * ldc + p;
        if (col + 3 < N && p + 3 < P && (reinterpret_cast<unsigned long long>(c) & 3ull) == 0) {
            unsigned packed = 0;
            for (int j = 0; j < 4; ++j)
                packed |= (unsigned)(unsigned char)finish(acc[j], chanMode == 1 ? row : col + j) << (8 * j);
            *reinterpret_cast<unsigned*>(c) = packed;
        } else {
            for (int j = 0; j < 4; ++j) {
                if (col + j >= N)
                    break;
                // Columns may cross into the next image (NCHW): re-derive.
                const long long qj = q + j;
                const long long nj = qj / P;
                C[nj * strideP + (long long)row * ldc + (qj - nj * P)] =
                    finish(acc[j], chanMode == 1 ? row : col + j);
            }
        }
    }
};

template <typename TC, int BK>
__global__ void __launch_bounds__(256, 2) qconv_gemm_dp4a(
    int M, int N, int K,
    const signed char* __restrict__ A, int lda, long long strideA, unsigned a_flip,
    const signed char* __restrict__ B, int ldb, long long strideB, unsigned b_flip,
    TC* __restrict__ C, int ldc, long long strideC,
    long long q0, long long P, long long strideP,
    const int* __restrict__ bias, const float* __restrict__ mult, long long strideChan, int chanMode,
    int y_zp, int relu)
{
    // A (M, K) row-major, B (K, N), both per group; C as described above.
    const long long g = blockIdx.z;
    A += g * strideA;
    B += g * strideB;
    C += g * strideC;
    bias += g * strideChan;
    mult += g * strideChan;
    const QConvEpilogue<TC> epi{C, ldc, M, N, q0, P, strideP, bias, mult, chanMode, y_zp, relu};
    int8_gemm_dp4a_body<BK>(M, N, K, A, lda, a_flip, B, ldb, b_flip, epi);
}
