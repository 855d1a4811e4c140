// Global average pooling, NHWC: the mean over H * W of each (n, c).
//
// Threads map to C: a block of TX x TY threads (TX * TY = 256, TX =
// next_pow2(min(C, 32)) chosen by the wrapper) covers TX consecutive
// channels of one image; threadIdx.y splits the HW pixels TY ways, so every
// warp-wide load reads contiguous channels of TY' neighbouring pixels
// (coalesced), and small C still leaves 256 threads busy. The TY partial
// sums of a channel are added by a tree in shared memory. Sums accumulate in T.
//
// Memory traffic: reads N*H*W*C, writes N*C. Launch: block (TX, TY), grid
// ceil_div(C, TX) * N. Any HW and C up to 2^31 - 4097: the int counters reach
// HW - 1 + TY and C - 1 + TX (the wrapper checks).
template <typename T>
__global__ void __launch_bounds__(256) global_avg_pool2d_nhwc(
    const T* __restrict__ x, T* __restrict__ y, long long N, int HW, int C, int ctiles)
{
    // x is (N, HW, C), y is (N, C).
    __shared__ T part[256];
    const int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    const int TX = (int)blockDim.x, TY = (int)blockDim.y;
    const long long n = (long long)blockIdx.x / ctiles;
    const int c = (int)((long long)blockIdx.x % ctiles) * TX + tx;
    // Threads past the last channel add nothing but still reach the barriers.
    const bool valid = n < N && c < C;
    const int count = valid ? HW : 0;
    const T* xn = x + (valid ? n * HW * C + c : 0);
    T s = T(0);
    for (int p = ty; p < count; p += TY)
        s += xn[(long long)p * C];
    part[ty * TX + tx] = s;
    for (int h = TY / 2; h > 0; h /= 2) {
        // Why: the partner's partial (written above or in the previous step)
        // must be visible before it is added.
        __syncthreads();
        if (ty < h)
            part[ty * TX + tx] += part[(ty + h) * TX + tx];
    }
    if (ty == 0 && valid)
        y[n * C + c] = part[tx] / T(HW);
}
