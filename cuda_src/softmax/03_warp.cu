// Softmax ladder, step 3: one warp per row, the row held in registers,
// read and written with 128-bit accesses.
//
// Changes from step 2: a group of WIDTH lanes (a whole warp for rows longer
// than 16) owns a row. Each warp-wide load is one contiguous, coalesced
// segment, the row is read from global memory once, and the max and sum are
// butterfly shuffles (no shared memory, no __syncthreads). Rows of up to
// 32 * ELEMS elements are held in registers; the wrapper picks the smallest
// ELEMS (a power of two, <= 32, so rows up to 1024) and, for rows of at most
// 16, the smallest WIDTH so that short rows do not leave most lanes idle.
// Whole warps move the row in 16-byte packs (float4 / double2, see Pack in
// softmax_common.cuh): pack c of the row (after a scalar head of up to 3
// floats or 1 double before x's first 16-byte boundary) is held by lane
// c % 32, so a warp-wide access is 512 contiguous bytes, 16 sectors per
// request (32-bit accesses: 4), and a quarter of the load and store
// instructions; lanes 0 .. 2 also hold the head and the tail (row_head). exp
// is computed once per element: the sum pass keeps exp(x - m) (log_softmax:
// x - m) in the registers it read x into, and the output is one multiply
// (subtract) away. WIDTH < 32 (rows of at most 16) stays scalar: each row is
// at most 64 bytes.
// ELEMS == 0 is the fallback for longer rows: nothing is cached, the warp
// makes an online (max, sum) pass, one rescale per pack (online_add_pack),
// and a normalizing pass over global memory, both with 128-bit accesses; it
// computes exp twice per element (pass 1 for the sum, pass 2 for the
// output), which a row that does not stay on chip cannot avoid.
// __launch_bounds__(128, 4): with the block size alone, ptxas for sm_90
// aimed at a register count that spilled the double-precision rows; asking
// for 4 resident blocks (512 threads / SM) lets a lane keep its 32 doubles.
// SASS (NVRTC 13.5, sm_90; static counts), float: ELEMS = 32 is 974
// straight-line instructions (scalar version: 1,550), 34 MUFU.EX2 for 32
// elements plus head and tail (was 64), 8 LDG.128 and 8 STG.128 (was 32
// LDG.32, 32 STG.32), 59 registers, no spills. ELEMS = 0, per element on the
// loops' fast paths (no new max): online pass 16.4 instructions (scalar: 22.8
// with the exp of each element), output pass 14.1 (was 18.8).
//
// Memory traffic: reads rows * L, writes rows * L (ELEMS == 0: reads
// 2 * rows * L, the second mostly from L2). Launch: block 128 threads, i.e.
// 128 / WIDTH rows per block; grid ceil_div(rows, 128 / WIDTH). Any rows;
// L <= WIDTH * ELEMS, or any L up to 2^31 - 4097 when ELEMS == 0 (the int
// counters reach L - 1 + WIDTH; the wrapper checks).
#include "softmax_common.cuh"

// x, y are (rows, L) contiguous; LOG selects log_softmax.
template <typename T, bool LOG, int ELEMS, int WIDTH>
__global__ void __launch_bounds__(128, 4) softmax_warp(
    const T* __restrict__ x, T* __restrict__ y, long long rows, int L)
{
    static_assert(WIDTH >= 1 && WIDTH <= 32 && (WIDTH & (WIDTH - 1)) == 0, "WIDTH: power of two <= 32");
    static_assert(ELEMS == 0 || WIDTH == 32 || ELEMS == 1, "several elements per lane need whole warps");
    constexpr int ROWS_PER_BLOCK = 128 / WIDTH;
    constexpr int N = Pack<T>::N;
    const int lane = (int)threadIdx.x % WIDTH;
    const long long row = (long long)blockIdx.x * ROWS_PER_BLOCK + (int)threadIdx.x / WIDTH;
    // Lanes past the last row stay in the loop with an empty row: the
    // full-mask shuffles below need every lane of the warp.
    const bool valid = row < rows;
    const int n = valid ? L : 0;
    const T* xr = x + (valid ? row : 0) * L;
    T* yr = y + (valid ? row : 0) * L;

    if constexpr (ELEMS > 0 && WIDTH < 32) {
        // Short rows, one element per lane, scalar.
        T v = lane < n ? xr[lane] : neg_inf<T>();
        const T m = warp_max<WIDTH>(v);
        v -= m;
        const T e = sm_exp(v);
        const T s = warp_sum<WIDTH>(lane < n ? e : T(0));
        const T scale = softmax_scale<T, LOG>(s);
        if (lane < n)
            yr[lane] = LOG ? v - scale : e * scale;
    } else if constexpr (ELEMS > 0) {
        // PACKS packs per lane hold the body: nvec <= L / N <= 32 * PACKS.
        constexpr int PACKS = ELEMS >= N ? ELEMS / N : 1;
        const RowPacks<T> r(x, y, xr, yr, n);
        const int head = r.head, nvec = r.nvec, tail = r.tail;
        const T* xb = r.xb;
        T* yb = r.yb;
        // Lane holds packs lane + 32 k for k < cnt. Each loop leaves at
        // k == cnt with a break, so every bound test is used once (PACKS
        // predicates live from the loads to the stores would not fit the 7
        // predicate registers). Head element lane (lane < head) and tail
        // element head + nvec * N + lane (lane < tail) sit in hv, tv; a missing one
        // is -inf, which adds nothing to the max and exp(-inf - m) = 0 to the
        // sum (m is -inf only in rows that come out NaN anyway).
        const int cnt = lane < nvec ? (nvec - lane + 31) / 32 : 0;
        T v[PACKS][N];
        // All loads first, nothing using them in between: the branches do not
        // wait for loads, so the lane's loads are in flight at once.
        T hv = lane < head ? xr[lane] : neg_inf<T>();
        T tv = lane < tail ? xb[nvec * N + lane] : neg_inf<T>();
#pragma unroll
        for (int k = 0; k < PACKS; ++k) {
            if (k >= cnt)
                break;
            const Pack<T> p = Pack<T>::load(xb + (lane + 32 * k) * N);
#pragma unroll
            for (int j = 0; j < N; ++j)
                v[k][j] = p.e[j];
        }
        T m = nan_max(hv, tv);
#pragma unroll
        for (int k = 0; k < PACKS; ++k) {
            if (k >= cnt)
                break;
#pragma unroll
            for (int j = 0; j < N; ++j)
                m = nan_max(m, v[k][j]);
        }
        m = warp_max<32>(m);
        // v <- x - m (LOG) or exp(x - m): the only exp of each element.
        hv -= m;
        tv -= m;
        T eh = sm_exp(hv), et = sm_exp(tv);
        T s = eh + et;
        if (!LOG) {
            hv = eh;
            tv = et;
        }
#pragma unroll
        for (int k = 0; k < PACKS; ++k) {
            if (k >= cnt)
                break;
#pragma unroll
            for (int j = 0; j < N; ++j) {
                const T e = sm_exp(v[k][j] - m);
                s += e;
                v[k][j] = LOG ? v[k][j] - m : e;
            }
        }
        s = warp_sum<32>(s);
        const T scale = softmax_scale<T, LOG>(s);
        if (lane < head)
            yr[lane] = LOG ? hv - scale : hv * scale;
        if (lane < tail)
            yb[nvec * N + lane] = LOG ? tv - scale : tv * scale;
#pragma unroll
        for (int k = 0; k < PACKS; ++k) {
            if (k >= cnt)
                break;
            Pack<T> p;
#pragma unroll
            for (int j = 0; j < N; ++j)
                p.e[j] = LOG ? v[k][j] - scale : v[k][j] * scale;
            store_pack(yb + (lane + 32 * k) * N, p, r.vecY);
        }
    } else {
        const RowPacks<T> r(x, y, xr, yr, n);
        const int head = r.head, nvec = r.nvec, tail = r.tail;
        const T* xb = r.xb;
        T* yb = r.yb;
        T m = neg_inf<T>();
        T s = T(0);
        if (lane < head)
            online_add(m, s, xr[lane]);
        if (lane < tail)
            online_add(m, s, xb[nvec * N + lane]);
#pragma unroll 2
        for (int c = lane; c < nvec; c += 32)
            online_add_pack(m, s, Pack<T>::load(xb + c * N).e);
        warp_online_merge<32>(m, s);
        const T scale = softmax_scale<T, LOG>(s);
        if (lane < head)
            yr[lane] = softmax_out<T, LOG>(xr[lane], m, scale);
        if (lane < tail)
            yb[nvec * N + lane] = softmax_out<T, LOG>(xb[nvec * N + lane], m, scale);
#pragma unroll 2
        for (int c = lane; c < nvec; c += 32) {
            Pack<T> p = Pack<T>::load(xb + c * N);
#pragma unroll
            for (int j = 0; j < N; ++j)
                p.e[j] = softmax_out<T, LOG>(p.e[j], m, scale);
            store_pack(yb + c * N, p, r.vecY);
        }
    }
}
