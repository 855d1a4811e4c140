// conv2d's GEMM: the SGEMM ladder's warp-tiled kernel (sgemm/08_warptile.cu)
// with a convolution epilogue: C = act(A @ B + bias), written straight to the
// convolution's output, so bias and activation cost no extra pass.
//
// The main loop is warptile_body, unchanged; only the store differs
// (ConvEpilogue below). blockIdx.z selects the convolution group: A, B, C and
// bias advance by strideA, strideB, strideC and strideBias per group.
//  * NCHW: A = weights of group g (O/G, C/G*KH*KW), B = im2col chunk rows of
//    group g (C/G*KH*KW, ncols), and GEMM column col is output pixel
//    q = q0 + col of image n = q / P (P = OH*OW): the result (row, col) goes
//    to C[n * strideP + row * ldc + q % P] with ldc = P, strideP = O*OH*OW,
//    i.e. directly into (N, O, OH, OW). A whole chunk of images is one GEMM
//    (wide N) instead of one small GEMM per image. bias is per row.
//  * NHWC: A = im2col chunk of group g (nrows, KH*KW*C/G), B = weights of
//    group g transposed (KH*KW*C/G, O/G), C = output rows (ldc = O); pass
//    P >= N and strideP = 0 so the address is C[row * ldc + col]. bias is
//    per column.
// Epilogue, per element: v = acc (+ bias); then act 0: v, 1: ReLU
// (v < 0 ? 0 : v), 2: leaky ReLU (v < 0 ? slope * v : v). NaN compares false
// and passes through (no fmaxf). float4 stores where the 4 columns are in one
// image and the address is 16-byte aligned, else scalar stores.
//
// Launch: as sgemm_warptile, grid (ceil_div(N, BN), ceil_div(M, BM), groups);
// 1-D block of (BM / WM) * (BN / WN) * 32 threads. Default
// conv_gemm_warptile<128, 128, 8, 32, 64, 2, 2, 4, 4>. Any M, N, K >= 1.
#include "../sgemm/08_warptile.cu"

struct ConvEpilogue {
    float* __restrict__ C;
    int ldc, N;
    long long q0, P, strideP;
    const float* __restrict__ bias;
    int biasMode;  // 0 none, 1 bias[row], 2 bias[col]
    int act;       // 0 none, 1 relu, 2 leaky relu
    float slope;

    __device__ __forceinline__ float finish(float v, int row, int col) const
    {
        if (biasMode == 1)
            v += bias[row];
        else if (biasMode == 2)
            v += bias[col];
        if (act != 0 && v < 0.0f)
            v = act == 1 ? 0.0f : slope * v;
        return v;
    }

    __device__ __forceinline__ void operator()(int row, int col, const float* a) const
    {
        // 64-bit: the output of a chunk may pass 2^31 elements.
        const long long q = q0 + col;
        const long long n = q / P;
        const long long p = q - n * P;
        float* c = C + n * strideP + (long long)row * ldc + p;
        if (col + 3 < N && p + 3 < P && (reinterpret_cast<unsigned long long>(c) & 15ull) == 0) {
            float4 v;
            v.x = finish(a[0], row, col + 0); v.y = finish(a[1], row, col + 1);
            v.z = finish(a[2], row, col + 2); v.w = finish(a[3], row, col + 3);
            *reinterpret_cast<float4*>(c) = v;
        } else {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                if (col + j >= N)
                    break;
                // Columns may cross into the next image (NCHW): re-derive.
                const long long qj = q + j;
                const long long nj = qj / P;
                C[nj * strideP + (long long)row * ldc + (qj - nj * P)] = finish(a[j], row, col + j);
            }
        }
    }
};

template <int BM, int BN, int BK, int WM, int WN, int WMITER, int WNITER, int TM, int TN>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, 2) conv_gemm_warptile(
    int M, int N, int K,
    const float* __restrict__ A, int lda, long long strideA,
    const float* __restrict__ B, int ldb, long long strideB,
    float* __restrict__ C, int ldc, long long strideC,
    long long q0, long long P, long long strideP,
    const float* __restrict__ bias, long long strideBias, int biasMode, int act, float slope)
{
    // A (M, K) row-major, B (K, N), both per group; C as described above.
    const long long g = blockIdx.z;
    A += g * strideA;
    B += g * strideB;
    C += g * strideC;
    if (biasMode != 0)
        bias += g * strideBias;
    const bool vecA = lda % 4 == 0 && (reinterpret_cast<unsigned long long>(A) & 15ull) == 0;
    const bool vecB = ldb % 4 == 0 && (reinterpret_cast<unsigned long long>(B) & 15ull) == 0;
    const ConvEpilogue epi{C, ldc, N, q0, P, strideP, bias, biasMode, act, slope};
    warptile_body<BM, BN, BK, WM, WN, WMITER, WNITER, TM, TN>(M, N, K, A, lda, vecA, B, ldb, vecB, epi);
}
