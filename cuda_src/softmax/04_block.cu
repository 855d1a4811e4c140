// Softmax ladder, step 4: one block per row, shared-memory reductions.
//
// Changes from step 3: a row longer than a warp can hold in registers gets a
// whole block of BLOCK threads, so one row is spread over BLOCK / 32 warps
// and the per-thread work stays short. Reductions go through shared memory:
// each warp reduces with shuffles, the warp leaders publish one partial each,
// and after one barrier every thread folds the BLOCK / 32 partials itself (in
// the same order, so all threads agree bit for bit).
// With cache_row != 0 the row also goes to dynamic shared memory on its
// single read from global memory (L * sizeof(T) bytes; the wrapper enables it
// while that fits), and the sum and the output passes read it from there:
// global traffic is one read and one write. Otherwise the block makes an
// online (max, sum) pass and a normalizing pass over global memory; a row is
// re-read soon after its first read, so the second read mostly hits L2.
// Loads are unrolled by 4 so that each thread has several in flight.
//
// Memory traffic: reads rows * L (cache_row) or 2 * rows * L (the second
// mostly from L2), writes rows * L. Launch: grid rows, block BLOCK (a multiple
// of 32), dynamic shared memory L * sizeof(T) when cache_row else 0. Any L up to
// 2^31 - 4097: the int counters reach L - 1 + 4 * BLOCK (the wrapper checks).
#include "softmax_common.cuh"

// x, y are (rows, L) contiguous; LOG selects log_softmax.
template <typename T, bool LOG, int BLOCK>
__global__ void __launch_bounds__(BLOCK) softmax_block(
    const T* __restrict__ x, T* __restrict__ y, long long rows, int L, int cache_row)
{
    static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "BLOCK: whole warps, at most 1024 threads");
    constexpr int WARPS = BLOCK / 32;
    extern __shared__ __align__(16) unsigned char softmax_block_smem[];
    T* cache = reinterpret_cast<T*>(softmax_block_smem);
    __shared__ T part_m[WARPS];
    __shared__ T part_s[WARPS];

    if ((long long)blockIdx.x >= rows)
        return;  // uniform over the block, before any barrier
    const int tid = (int)threadIdx.x;
    const int lane = tid % 32;
    const int warp = tid / 32;
    const T* xr = x + (long long)blockIdx.x * L;
    T* yr = y + (long long)blockIdx.x * L;

    if (cache_row) {
        // Pass 1: global -> shared, and the max. Each thread touches only the
        // slots i == tid (mod BLOCK), in all three passes, so the cache needs
        // no barrier of its own.
        T m = neg_inf<T>();
        int i = tid;
        for (; i + 3 * BLOCK < L; i += 4 * BLOCK) {
            const T a = xr[i], b = xr[i + BLOCK], c = xr[i + 2 * BLOCK], d = xr[i + 3 * BLOCK];
            cache[i] = a;
            cache[i + BLOCK] = b;
            cache[i + 2 * BLOCK] = c;
            cache[i + 3 * BLOCK] = d;
            m = nan_max(nan_max(m, a), nan_max(nan_max(b, c), d));
        }
        for (; i < L; i += BLOCK) {
            const T a = xr[i];
            cache[i] = a;
            m = nan_max(m, a);
        }
        m = warp_max<32>(m);
        if (lane == 0)
            part_m[warp] = m;
        // Why: every warp's partial max must be in shared memory before any
        // thread folds them.
        __syncthreads();
        m = part_m[0];
        for (int w = 1; w < WARPS; ++w)
            m = nan_max(m, part_m[w]);

        // Pass 2: the sum, from shared memory.
        T s = T(0);
        for (i = tid; i < L; i += BLOCK)
            s += sm_exp(cache[i] - m);
        s = warp_sum<32>(s);
        if (lane == 0)
            part_s[warp] = s;
        // Why: as above, for the partial sums (part_s is a separate array, so
        // no thread can still be reading what is written here).
        __syncthreads();
        s = part_s[0];
        for (int w = 1; w < WARPS; ++w)
            s += part_s[w];

        // Pass 3: normalize from shared memory.
        const T scale = softmax_scale<T, LOG>(s);
        for (i = tid; i < L; i += BLOCK)
            yr[i] = softmax_out<T, LOG>(cache[i], m, scale);
    } else {
        // Pass 1: online (max, sum) over global memory.
        T m = neg_inf<T>();
        T s = T(0);
        int i = tid;
        for (; i + 3 * BLOCK < L; i += 4 * BLOCK) {
            const T a = xr[i], b = xr[i + BLOCK], c = xr[i + 2 * BLOCK], d = xr[i + 3 * BLOCK];
            online_add(m, s, a);
            online_add(m, s, b);
            online_add(m, s, c);
            online_add(m, s, d);
        }
        for (; i < L; i += BLOCK)
            online_add(m, s, xr[i]);
        warp_online_merge<32>(m, s);
        if (lane == 0) {
            part_m[warp] = m;
            part_s[warp] = s;
        }
        // Why: every warp's partial (max, sum) must be visible before any
        // thread merges them.
        __syncthreads();
        m = part_m[0];
        s = part_s[0];
        for (int w = 1; w < WARPS; ++w)
            online_merge(m, s, part_m[w], part_s[w]);

        // Pass 2: normalize, re-reading the row (mostly from L2).
        const T scale = softmax_scale<T, LOG>(s);
        for (i = tid; i < L; i += BLOCK)
            yr[i] = softmax_out<T, LOG>(xr[i], m, scale);
    }
}
