// Softmax ladder, step 4: one block per row, shared-memory reductions.
//
// Changes from step 3: a row longer than a warp can hold in registers gets a
// whole block of BLOCK threads, so one row is spread over BLOCK / 32 warps
// and the per-thread work stays short. Reductions go through shared memory:
// each warp reduces with shuffles, the warp leaders publish one partial each,
// and after one barrier every thread folds the BLOCK / 32 partials itself (in
// the same order, so all threads agree bit for bit).
// Global memory is moved in 16-byte packs (float4 / double2, see Pack in
// softmax_common.cuh): a scalar head up to x's first 16-byte boundary, then
// pack c of the row by thread c % BLOCK (a warp-wide access is 512
// contiguous bytes, 16 sectors per request), then a scalar tail; threads
// 0 .. 2 also own the head and tail elements.
// With cache_row != 0 the row also goes to dynamic shared memory on its
// single read from global memory (L * sizeof(T) bytes; the wrapper enables it
// while that fits), and the sum and the output passes read it from there:
// global traffic is one read and one write. The cache holds the packs first,
// on 16-byte boundaries whatever the row's alignment (LDS.128 / STS.128), and
// the head and tail elements in its last head + tail slots.
// The sum pass writes exp(x - m) (log_softmax: x - m) back over x, so exp is
// computed once per element and the output pass is one multiply (subtract).
// Otherwise the block makes an online (max, sum) pass, one rescale per pack
// (online_add_pack), and a normalizing pass over global memory; a row is
// re-read soon after its first read, so the second read mostly hits L2, and
// exp is computed again there (the row is not on chip to keep it).
// Loops over packs are unrolled by 2 so that each thread has two 16-byte
// loads in flight. __launch_bounds__(BLOCK, 1024 / BLOCK): 1024 resident
// threads per SM, so up to 64 registers; with the block size alone ptxas for
// sm_90 aimed at 32 to 48 and spilled the double (and NVRTC 12.9's float
// 1024-thread) instantiations of the unrolled pack loops. Half the threads
// of the scalar version, each with twice the bytes in flight.
// SASS (NVRTC 13.5, sm_90; static counts), float, BLOCK = 256: 1,744
// instructions (scalar version: 1,545), 40 registers, no spills; per element
// on the loops' fast paths: cached row 5.8 (load, cache, max) + 12.3 (exp,
// sum) + 3.5 (output) = 21.5 (was 6.4 + 12.5 + 15.5 = 34.4, exp twice);
// streaming: online pass 16.4 (was 22.3), output pass 14.1 (was 15.8).
//
// Memory traffic: reads rows * L (cache_row) or 2 * rows * L (the second
// mostly from L2), writes rows * L. Launch: grid rows, block BLOCK (a multiple
// of 32), dynamic shared memory L * sizeof(T) when cache_row else 0. Any L up to 2^31 - 4097: the int counters reach
// L - 1 + 2 * BLOCK (the wrapper checks).
#include "softmax_common.cuh"

// x, y are (rows, L) contiguous; LOG selects log_softmax.
template <typename T, bool LOG, int BLOCK>
__global__ void __launch_bounds__(BLOCK, 1024 / BLOCK) softmax_block(
    const T* __restrict__ x, T* __restrict__ y, long long rows, int L, int cache_row)
{
    static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "BLOCK: whole warps, at most 1024 threads");
    constexpr int WARPS = BLOCK / 32;
    constexpr int N = Pack<T>::N;
    extern __shared__ __align__(16) unsigned char softmax_block_smem[];
    __shared__ T part_m[WARPS];
    __shared__ T part_s[WARPS];

    if ((long long)blockIdx.x >= rows)
        return;  // uniform over the block, before any barrier
    const int tid = (int)threadIdx.x;
    const int lane = tid % 32;
    const int warp = tid / 32;
    const T* xr = x + (long long)blockIdx.x * L;
    T* yr = y + (long long)blockIdx.x * L;
    const RowPacks<T> r(x, y, xr, yr, L);
    const int head = r.head, nvec = r.nvec, tail = r.tail;
    const T* xb = r.xb;     // the packs: xb[c * N .. c * N + N - 1]
    T* yb = r.yb;
    // This thread's scalar: head element tid, else tail element tid - head
    // (head + tail < 2 * N <= 8 <= BLOCK).
    const bool hasS = tid < head + tail;
    const int si = tid < head ? tid : head + nvec * N + (tid - head);

    if (cache_row) {
        // cb[c * N ..] holds pack c, cb[nvec * N + tid] this thread's scalar
        // (nvec * N + head + tail == L slots). Each thread touches only its
        // own scalar and packs c == tid (mod BLOCK), in all three passes, so
        // the cache needs no barrier of its own.
        T* cb = reinterpret_cast<T*>(softmax_block_smem);
        T* cs = cb + nvec * N + tid;
        // Pass 1: global -> shared, and the max.
        T m = neg_inf<T>();
        if (hasS) {
            const T a = xr[si];
            *cs = a;
            m = a;
        }
#pragma unroll 2
        for (int c = tid; c < nvec; c += BLOCK) {
            const Pack<T> p = Pack<T>::load(xb + c * N);
            p.store(cb + c * N);
#pragma unroll
            for (int j = 0; j < N; ++j)
                m = nan_max(m, p.e[j]);
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

        // Pass 2: the sum, from shared memory; exp(x - m) (LOG: x - m)
        // replaces x, so pass 3 needs no second exp.
        T s = T(0);
        if (hasS) {
            const T d = *cs - m;
            const T e = sm_exp(d);
            s = e;
            *cs = LOG ? d : e;
        }
#pragma unroll 2
        for (int c = tid; c < nvec; c += BLOCK) {
            Pack<T> p = Pack<T>::load(cb + c * N);
#pragma unroll
            for (int j = 0; j < N; ++j) {
                const T d = p.e[j] - m;
                const T e = sm_exp(d);
                s += e;
                p.e[j] = LOG ? d : e;
            }
            p.store(cb + c * N);
        }
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
        if (hasS)
            yr[si] = LOG ? *cs - scale : *cs * scale;
#pragma unroll 2
        for (int c = tid; c < nvec; c += BLOCK) {
            Pack<T> p = Pack<T>::load(cb + c * N);
#pragma unroll
            for (int j = 0; j < N; ++j)
                p.e[j] = LOG ? p.e[j] - scale : p.e[j] * scale;
            store_pack(yb + c * N, p, r.vecY);
        }
    } else {
        // Pass 1: online (max, sum) over global memory.
        T m = neg_inf<T>();
        T s = T(0);
        if (hasS)
            online_add(m, s, xr[si]);
#pragma unroll 2
        for (int c = tid; c < nvec; c += BLOCK)
            online_add_pack(m, s, Pack<T>::load(xb + c * N).e);
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
        if (hasS)
            yr[si] = softmax_out<T, LOG>(xr[si], m, scale);
#pragma unroll 2
        for (int c = tid; c < nvec; c += BLOCK) {
            Pack<T> p = Pack<T>::load(xb + c * N);
#pragma unroll
            for (int j = 0; j < N; ++j)
                p.e[j] = softmax_out<T, LOG>(p.e[j], m, scale);
            store_pack(yb + c * N, p, r.vecY);
        }
    }
}
