// conv2d's GEMM: the SGEMM ladder's warp-tiled kernel (sgemm/08_warptile.cu)
// with a convolution epilogue: C = act(A @ B + bias), written straight to the
// convolution's output, so bias and activation cost no extra pass.
//
// The main loop is warptile_body, unchanged; only the store differs
// (ConvEpilogue below). blockIdx.z selects the convolution group: A, B, C and
// bias advance by strideA, strideB, strideC and strideBias per group.
//  * NCHW: A = weights of group g (O/G, C/G*KH*KW), B = im2col chunk rows of
//    group g (C/G*KH*KW, ncols), and GEMM column col is output pixel
//    q = q0 + col, pixel q % P of image q / P (P = OH*OW): the result
//    (row, col) goes to C[(q / P) * strideP + row * ldc + q % P] with ldc = P,
//    strideP = O*OH*OW, i.e. directly into (N, O, OH, OW). A whole chunk of
//    images is one GEMM (wide N) instead of one small GEMM per image. bias is
//    per row.
//  * NHWC: A = im2col chunk of group g (nrows, KH*KW*C/G), B = weights of
//    group g transposed (KH*KW*C/G, O/G), C = output rows (ldc = O); pass
//    n0 = p0 = 0, P = 2^31 (> any column) and strideP = 0, so the address is
//    C[row * ldc + col]. bias is per column.
// Epilogue, per element: v = acc (+ bias); then act 0: v, 1: ReLU
// (v < 0 ? 0 : v), 2: leaky ReLU (v < 0 ? slope * v : v), 3: ReLU6
// (v < 0 ? 0 : v > 6 ? 6 : v, ONNX's Clip(0, 6) after a Conv). The kernel
// turns act into two bounds once (lo: -inf for act 0, else 0; hi: 6 for
// ReLU6, else +inf), so each value costs two compares whatever act is (a
// test of act per value and per activation cost ~400 more instructions).
// NaN compares false and passes through (no fmaxf / fminf). float4 stores
// where the 4 columns are in one image and the address is 16-byte aligned,
// else scalar stores.
//
// Pixel coordinates without a 64-bit division. The host splits the chunk's
// first pixel q0 into image n0 = q0 / P and pixel p0 = q0 % P, so a column's
// offset from image n0 is x = p0 + col, a 32-bit unsigned value: p0 < P <=
// 2^31 - 257 (the wrapper's bound on OH*OW) and col <= N - 1 <= 2^31 - 258, so
// x < 2^32. x / P is then a division of 32-bit values by an invariant divisor,
// done as a multiply-high and two shifts with a multiplier and shifts the host
// computes once (Granlund & Montgomery, "Division by invariant integers using
// multiplication", PLDI 1994, fig. 4.1: exact for every x < 2^32 and every
// divisor 1 <= P < 2^32). The scalar path's columns col + 1 .. col + 3 step
// to the next image when the pixel reaches P (any P >= 1, no division). Only
// the image number is 64-bit (n0 may pass 2^31 with many small images), and
// it enters the address as one wide multiply by strideP.
// The 4 results of a call are finished (bias, activation) once and shared by
// the float4 and the scalar store paths.
// SASS (NVRTC 13.5, sm_90): no division call (before: 256 call sites of
// __cuda_sm20_div_s64), 5,820 instructions, 1.27x sgemm_warptile's 4,578
// (before: 16,901, 4.2x); no spills, no stack. The main loop is
// warptile's. sm_80 (NVRTC 13.5): 5,749 instructions, 1.30x.
//
// Launch: as sgemm_warptile, grid (ceil_div(N, BN), ceil_div(M, BM), groups);
// 1-D block of (BM / WM) * (BN / WN) * 32 threads. Default
// conv_gemm_warptile<128, 128, 8, 32, 64, 2, 2, 4, 4>. Any M, N, K >= 1.
#include "../sgemm/08_warptile.cu"

struct ConvEpilogue {
    float* __restrict__ C;
    int ldc, N;
    long long n0, strideP;      // image of the chunk's first pixel; floats per image
    unsigned p0, P;             // that pixel inside its image; pixels per image
    unsigned magic, sh1, sh2;   // x / P = (t + ((x - t) >> sh1)) >> sh2, t = umulhi(x, magic)
    const float* __restrict__ bias;
    int biasMode;  // 0 none, 1 bias[row], 2 bias[col]
    int act;       // 0 none, 1 relu, 2 leaky relu, 3 relu6
    float slope;
    float lo, hi;  // act's bounds: 0 (-inf for act 0) and 6 (+inf for act != 3)

    __device__ __forceinline__ void operator()(int row, int col, const float* a) const
    {
        // The 4 results first, shared by the float4 and the scalar store
        // paths (each path finishing its own copies doubled the epilogue's
        // code). Columns past N get no bias load (it could be out of bounds)
        // and are never stored.
        float v[4];
        const float rowBias = biasMode == 1 ? bias[row] : 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            float s = a[j];
            if (biasMode == 1)
                s += rowBias;
            else if (biasMode == 2 && col + j < N)
                s += bias[col + j];
            // lo = -inf (no activation) and hi = +inf never bind; NaN
            // compares false with both and passes through.
            if (s < lo)
                s = act == 2 ? slope * s : 0.0f;
            if (s > hi)
                s = hi;
            v[j] = s;
        }
        // x < 2^32 (see the header), so the quotient is exact in 32 bits.
        const unsigned x = p0 + (unsigned)col;
        const unsigned t = __umulhi(x, magic);
        unsigned n = (t + ((x - t) >> sh1)) >> sh2;
        unsigned p = x - n * P;
        // 64-bit: the output of a chunk may pass 2^31 elements.
        float* c = C + (n0 + n) * strideP + (long long)row * ldc + p;
        if (col + 3 < N && p + 3 < P && (reinterpret_cast<unsigned long long>(c) & 15ull) == 0) {
            *reinterpret_cast<float4*>(c) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
            float* cj = c;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                if (col + j >= N)
                    break;
                *cj++ = v[j];
                // The next column is the next pixel, or the first pixel of the
                // next image (NCHW columns may cross images; P may be < 4).
                if (++p == P) {
                    p = 0;
                    cj += strideP - (long long)P;
                }
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
    long long n0, unsigned p0, unsigned P, long long strideP, unsigned magic, unsigned sh1, unsigned sh2,
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
    const float inf = __int_as_float(0x7f800000);
    const ConvEpilogue epi{C, ldc, N, n0, strideP, p0, P, magic, sh1, sh2, bias, biasMode, act, slope,
                           act == 0 ? -inf : 0.0f, act == 3 ? 6.0f : inf};
    warptile_body<BM, BN, BK, WM, WN, WMITER, WNITER, TM, TN>(M, N, K, A, lda, vecA, B, ldb, vecB, epi);
}
