// im2col for NHWC input: rows are output pixels, columns (i, j, c) run along
// the channels, so the GEMM with the weights gives NHWC directly.
//
// x is (N, H, W, C), split into G groups of Cg = C / G channels. Row
// q = n * OH * OW + oh * OW + ow and column k = (i * KW + j) * Cg + cc of
// group g hold
//     x[n, oh * SH - PH + i * DH, ow * SW - PW + j * DW, g * Cg + cc]
// or pad in the padding (0 for conv2d, the input zero point for the quantized
// convolution). Rows q0 <= q < q0 + nrows are produced, in the layout
//     col[g][q - q0][k]   (G, nrows, KH*KW*Cg), contiguous,
// so each group's block is a row-major (nrows, KH*KW*Cg) GEMM operand. With
// G = 1, q0 = 0 and nrows = N*OH*OW this is the public im2col NHWC result
// (N, OH*OW, KH*KW*C).
//
// One thread per output element: consecutive threads take consecutive cc, so
// a warp reads a contiguous run of channels of one input pixel and writes a
// contiguous run of the buffer (both coalesced when Cg is not tiny).
// Memory traffic: reads about KH*KW/(SH*SW) times x (mostly from cache),
// writes G*nrows*KH*KW*Cg elements.
// Launch: 1-D grid of any size (grid-stride loop), 1-D block of any size.
// 64-bit indices: the buffer and x may pass 2^31 elements; KH*KW*Cg < 2^31.

template <typename T>
__global__ void im2col_nhwc(const T* __restrict__ x, int H, int W, int C, int G, int KH, int KW,
                            int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW,
                            long long q0, long long nrows, T* __restrict__ col, T pad)
{
    const int Cg = C / G;
    const int kk = KH * KW * Cg;
    const long long total = (long long)G * nrows * kk;
    const long long ohw = (long long)OH * OW;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long t = e / kk;
        const int k = (int)(e - t * kk);
        const long long g = t / nrows;
        const long long q = q0 + (t - g * nrows);
        const long long n = q / ohw;
        const int p = (int)(q - n * ohw);
        const int oh = p / OW, ow = p - (p / OW) * OW;
        const int ij = k / Cg, cc = k - (k / Cg) * Cg;
        const int i = ij / KW, j = ij - (ij / KW) * KW;
        const int h = oh * SH - PH + i * DH, w = ow * SW - PW + j * DW;
        col[e] = (h >= 0 && h < H && w >= 0 && w < W)
                     ? x[((n * H + h) * W + w) * C + g * Cg + cc]
                     : pad;
    }
}
