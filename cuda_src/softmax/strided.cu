// Softmax along a non-last axis, without a transposing copy.
//
// x is viewed as (outer, L, inner) around the softmax axis: the L elements of
// one softmax are inner elements apart, and consecutive inner indices are
// adjacent in memory. A block is a TX x TY grid of threads (TX * TY = 256, TX
// a power of two <= 32 chosen by the wrapper as next_pow2(min(inner, 32))):
// threadIdx.x maps to TX consecutive inner indices, so every warp-wide load
// covers contiguous runs of memory (coalesced), and threadIdx.y splits the L
// axis TY ways, so a long axis still gets 256 threads' worth of loads in
// flight when inner is small. Each thread makes an online (max, sum) pass
// over its share of the axis; the TY partial states of a column are merged
// by a tree in shared memory; a second pass writes the outputs.
//
// __launch_bounds__(256, 2): the block size alone made ptxas for sm_90 spill
// the double instantiations at 40-48 registers.
//
// Memory traffic: reads 2 * outer * L * inner (the second read mostly from
// L2), writes outer * L * inner. Launch: block (TX, TY), grid
// (tiles * outer_chunk) with tiles = ceil_div(inner, TX); any inner, any L up
// to 2^31 - 4097 (the int counter reaches L - 1 + TY; the wrapper checks).
#include "softmax_common.cuh"

// x, y are (outer, L, inner) contiguous; LOG selects log_softmax.
template <typename T, bool LOG>
__global__ void __launch_bounds__(256, 2) softmax_strided(
    const T* __restrict__ x, T* __restrict__ y, long long outer, int L, long long inner, long long tiles)
{
    __shared__ T part_m[256];
    __shared__ T part_s[256];
    const int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    const int TX = (int)blockDim.x, TY = (int)blockDim.y;
    const long long o = (long long)blockIdx.x / tiles;
    const long long i = ((long long)blockIdx.x % tiles) * TX + tx;
    // Threads past the last column keep an empty axis: they must reach the
    // barriers below like everyone else.
    const bool valid = o < outer && i < inner;
    const int n = valid ? L : 0;
    const long long base = valid ? o * L * inner + i : 0;

    T m = neg_inf<T>();
    T s = T(0);
    for (int l = ty; l < n; l += TY)
        online_add(m, s, x[base + (long long)l * inner]);
    part_m[ty * TX + tx] = m;
    part_s[ty * TX + tx] = s;
    // Tree merge over ty (TY is a power of two).
    for (int h = TY / 2; h > 0; h /= 2) {
        // Why: the partner's state (written in the previous step, or above)
        // must be visible before it is merged.
        __syncthreads();
        if (ty < h) {
            T m0 = part_m[ty * TX + tx], s0 = part_s[ty * TX + tx];
            online_merge(m0, s0, part_m[(ty + h) * TX + tx], part_s[(ty + h) * TX + tx]);
            part_m[ty * TX + tx] = m0;
            part_s[ty * TX + tx] = s0;
        }
    }
    // Why: the merged state of the column (row ty == 0) must be visible to
    // every thread of the column.
    __syncthreads();
    m = part_m[tx];
    s = part_s[tx];

    const T scale = softmax_scale<T, LOG>(s);
    for (int l = ty; l < n; l += TY) {
        const long long k = base + (long long)l * inner;
        y[k] = softmax_out<T, LOG>(x[k], m, scale);
    }
}
