// Global average pooling, NCHW: the mean of each H * W plane.
//
// Each plane is a contiguous row of HW elements, reduced by one warp: lanes
// read consecutive elements (coalesced), four loads in flight per lane, then a
// butterfly shuffle sum; lane 0 writes the mean. No shared memory and no
// __syncthreads: warps are independent, and a warp past the last plane exits
// as a whole. Sums accumulate in T.
//
// __launch_bounds__(256, 2): the block size alone made ptxas for sm_90 spill
// the double instantiation.
//
// Memory traffic: reads N*C*H*W, writes N*C. Launch: block 256 (8 planes per
// block), grid ceil_div(N*C, 8). Any HW up to
// 2^31 - 4097: the int counter reaches HW - 1 + 128 (the wrapper checks).
template <typename T>
__global__ void __launch_bounds__(256, 2) global_avg_pool2d_nchw(
    const T* __restrict__ x, T* __restrict__ y, long long planes, int HW)
{
    // x is (N*C, HW), y is (N*C,).
    const int lane = (int)threadIdx.x % 32;
    const long long plane = (long long)blockIdx.x * 8 + (int)threadIdx.x / 32;
    if (plane >= planes)
        return;  // uniform over the warp: the shuffles below see whole warps only
    const T* xp = x + plane * HW;
    T s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0);
    int i = lane;
    for (; i + 96 < HW; i += 128) {
        s0 += xp[i];
        s1 += xp[i + 32];
        s2 += xp[i + 64];
        s3 += xp[i + 96];
    }
    for (; i < HW; i += 32)
        s0 += xp[i];
    T s = (s0 + s1) + (s2 + s3);
#pragma unroll
    for (int off = 16; off > 0; off /= 2)
        s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0)
        y[plane] = s / T(HW);
}
