// Softmax ladder, step 3: one warp per row, the row held in registers.
//
// Changes from step 2: a group of WIDTH lanes (a whole warp for rows longer
// than 32) owns a row, lane j holding elements j, j + WIDTH, j + 2 * WIDTH,
// ... in ELEMS registers. Each warp-wide load is one contiguous, coalesced
// segment, the row is read from global memory once, and the max and sum are
// butterfly shuffles (no shared memory, no __syncthreads). Rows of up to
// 32 * ELEMS elements fit; the wrapper picks the smallest ELEMS (a power of
// two, <= 32, so rows up to 1024) and, for rows of at most 32, the smallest
// WIDTH so that short rows do not leave most lanes idle.
// ELEMS == 0 is the fallback for longer rows: nothing is cached, the warp
// makes an online (max, sum) pass and a normalizing pass over global memory.
// __launch_bounds__(128, 4): with the block size alone, ptxas for sm_90
// aimed at a register count that spilled the double-precision rows; asking
// for 4 resident blocks (512 threads / SM) lets a lane keep its 32 doubles.
//
// Memory traffic: reads rows * L, writes rows * L (ELEMS == 0: reads
// 2 * rows * L, the second mostly from L2). Launch: block 128 threads, i.e.
// 128 / WIDTH rows per block; grid ceil_div(rows, 128 / WIDTH). Any rows;
// L <= WIDTH * ELEMS, or any L up to 2^31 - 4097 when ELEMS == 0 (the int
// counter reaches L - 1 + WIDTH; the wrapper checks).
#include "softmax_common.cuh"

// x, y are (rows, L) contiguous; LOG selects log_softmax.
template <typename T, bool LOG, int ELEMS, int WIDTH>
__global__ void __launch_bounds__(128, 4) softmax_warp(
    const T* __restrict__ x, T* __restrict__ y, long long rows, int L)
{
    static_assert(WIDTH >= 1 && WIDTH <= 32 && (WIDTH & (WIDTH - 1)) == 0, "WIDTH: power of two <= 32");
    static_assert(ELEMS == 0 || WIDTH == 32 || ELEMS == 1, "several elements per lane need whole warps");
    constexpr int ROWS_PER_BLOCK = 128 / WIDTH;
    const int lane = (int)threadIdx.x % WIDTH;
    const long long row = (long long)blockIdx.x * ROWS_PER_BLOCK + (int)threadIdx.x / WIDTH;
    // Lanes past the last row stay in the loop with an empty row: the
    // full-mask shuffles below need every lane of the warp.
    const bool valid = row < rows;
    const int n = valid ? L : 0;
    const T* xr = x + (valid ? row : 0) * L;
    T* yr = y + (valid ? row : 0) * L;

    if constexpr (ELEMS > 0) {
        // This lane holds cnt elements of the row: lane + k * WIDTH for
        // k < cnt. Each loop leaves at k == cnt with a break, so every bound
        // test is used once; ELEMS predicates kept alive from the loads to
        // the stores made ptxas spill (there are only 7 predicate registers).
        const int cnt = lane < n ? (n - lane + WIDTH - 1) / WIDTH : 0;
        T v[ELEMS];
        T m = neg_inf<T>();
        // All loads first, nothing using them in between: the branches do not
        // wait for loads, so the cnt loads of the lane are in flight at once.
#pragma unroll
        for (int k = 0; k < ELEMS; ++k) {
            if (k >= cnt)
                break;
            v[k] = xr[lane + k * WIDTH];
        }
#pragma unroll
        for (int k = 0; k < ELEMS; ++k) {
            if (k >= cnt)
                break;
            m = nan_max(m, v[k]);
        }
        m = warp_max<WIDTH>(m);
        T s = T(0);
#pragma unroll
        for (int k = 0; k < ELEMS; ++k) {
            if (k >= cnt)
                break;
            s += sm_exp(v[k] - m);
        }
        s = warp_sum<WIDTH>(s);
        const T scale = softmax_scale<T, LOG>(s);
#pragma unroll
        for (int k = 0; k < ELEMS; ++k) {
            if (k >= cnt)
                break;
            yr[lane + k * WIDTH] = softmax_out<T, LOG>(v[k], m, scale);
        }
    } else {
        T m = neg_inf<T>();
        T s = T(0);
        for (int i = lane; i < n; i += WIDTH)
            online_add(m, s, xr[i]);
        warp_online_merge<WIDTH>(m, s);
        const T scale = softmax_scale<T, LOG>(s);
        for (int i = lane; i < n; i += WIDTH)
            yr[i] = softmax_out<T, LOG>(xr[i], m, scale);
    }
}
