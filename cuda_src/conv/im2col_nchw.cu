// im2col for NCHW input: the column matrix of a convolution (Caffe's layout).
//
// x is (N, C, H, W). Column q = n * OH * OW + oh * OW + ow (an output pixel of
// image n) and row r = (c * KH + i) * KW + j hold
//     x[n, c, oh * SH - PH + i * DH, ow * SW - PW + j * DW]
// or pad where that position lies in the padding (0 for conv2d; the input zero
// point for the quantized convolution, whose padding must dequantize to 0).
// Only columns
// q0 <= q < q0 + ncols are produced (a chunk of the batch, or of one image),
// and element (r, q) goes to
//     col[(q - q0) + r * ldrow + n * image_skip].
//  * conv2d's chunk buffer (C*KH*KW, ncols): ldrow = ncols, image_skip = 0;
//  * the public im2col (N, C*KH*KW, OH*OW): q0 = 0, ldrow = OH*OW,
//    image_skip = (C*KH*KW - 1) * OH*OW.
// Only PH, PW (top, left) are needed: bottom / right padding just make OH, OW
// larger, and positions past H, W read as 0 either way.
//
// One thread per (c, q) pair writes the KH*KW entries of its channel: the
// decomposition of q is paid once per KH*KW outputs, consecutive threads take
// consecutive q, so both the stores and (for stride 1) the loads of a warp are
// contiguous. Memory traffic: reads about KH*KW/(SH*SW) times x (mostly from
// cache), writes C*KH*KW*ncols elements.
// Launch: 1-D grid of any size (grid-stride loop), 1-D block of any size.
// 64-bit indices throughout: C * ncols and the column buffer may pass 2^31.

template <typename T>
__global__ void im2col_nchw(const T* __restrict__ x, int C, int H, int W, int KH, int KW,
                            int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW,
                            long long q0, long long ncols, T* __restrict__ col,
                            long long ldrow, long long image_skip, T pad)
{
    const long long total = (long long)C * ncols;
    const long long ohw = (long long)OH * OW;
    const long long hw = (long long)H * W;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long c = e / ncols;           // input channel
        const long long qc = e - c * ncols;      // column inside the chunk
        const long long q = q0 + qc;
        const long long n = q / ohw;
        const int p = (int)(q - n * ohw);
        const int oh = p / OW, ow = p - (p / OW) * OW;
        const int h0 = oh * SH - PH, w0 = ow * SW - PW;
        const T* __restrict__ xc = x + (n * C + c) * hw;
        T* __restrict__ dst = col + qc + c * KH * KW * ldrow + n * image_skip;
        for (int i = 0; i < KH; ++i) {
            const int h = h0 + i * DH;
            const bool rowIn = h >= 0 && h < H;
            for (int j = 0; j < KW; ++j) {
                const int w = w0 + j * DW;
                *dst = (rowIn && w >= 0 && w < W) ? xc[(long long)h * W + w] : pad;
                dst += ldrow;
            }
        }
    }
}
