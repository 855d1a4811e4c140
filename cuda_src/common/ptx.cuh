// Inline-PTX wrappers shared by the kernels in cuda_src/.
//
// Every wrapper here is a small __device__ __forceinline__ function with a
// plain-CUDA twin that has the same effect, chosen at compile time in this
// header only (kernels never test macros):
//  * the CUDA emulator (PYGPU_EMULATOR) and sm_75 (no cp.async) get the
//    plain versions;
//  * everything else gets the PTX.
// The plain twins are synchronous, so the asynchronous semantics (data is
// visible only after cp_async_wait_all()) hold trivially for them.
// Exceptions: the int8 mma and the ldmatrix wrappers have PTX forms for sm_75
// too (see there).
#pragma once

#if defined(PYGPU_EMULATOR) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800)
#define PYGPU_PTX_PLAIN 1
#else
#define PYGPU_PTX_PLAIN 0
#endif

// Asynchronously copy 16 bytes from global to shared memory (cp.async.cg:
// bypasses L1). Both addresses must be 16-byte aligned. The data may be read
// from shared memory only after cp_async_commit() + cp_async_wait_all() and
// a barrier that makes other threads' copies visible.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem)
{
#if PYGPU_PTX_PLAIN
    *static_cast<float4*>(smem) = *static_cast<const float4*>(gmem);
#else
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(s), "l"(gmem) : "memory");
#endif
}

// Close the group of cp.async copies issued so far by this thread.
__device__ __forceinline__ void cp_async_commit()
{
#if !PYGPU_PTX_PLAIN
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until all of this thread's cp.async copies have landed in shared
// memory. Other threads' copies still need a __syncthreads() to be visible.
__device__ __forceinline__ void cp_async_wait_all()
{
#if !PYGPU_PTX_PLAIN
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// cp_async_16 with a source size: copies the first src_bytes (0..16) bytes
// from gmem and zero-fills the rest of the 16 (src_bytes 0: reads nothing).
// gmem must be 16-byte aligned even when fewer bytes are read. The plain twin
// is one 16-byte load when src_bytes >= 16, else byte loads, and always one
// 16-byte store.
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, int src_bytes)
{
#if PYGPU_PTX_PLAIN
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (src_bytes >= 16) {
        v = *static_cast<const uint4*>(gmem);
    } else {
        const unsigned char* p = static_cast<const unsigned char*>(gmem);
        unsigned w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
        for (int j = 0; j < 16; ++j)
            if (j < src_bytes)
                w[j / 4] |= (unsigned)p[j] << (8 * (j % 4));
        v = make_uint4(w[0], w[1], w[2], w[3]);
    }
    *static_cast<uint4*>(smem) = v;
#else
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(s), "l"(gmem), "r"(src_bytes) : "memory");
#endif
}

// Wait until at most N of this thread's most recent cp.async groups are still
// in flight (the older ones have landed): the wait of an N + 1 stage pipeline.
template <int N>
__device__ __forceinline__ void cp_async_wait_group()
{
#if !PYGPU_PTX_PLAIN
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
#endif
}

// ldmatrix: four 8 x 8 matrices of 16-bit elements (8 rows of 16 bytes each)
// from shared memory into one register per matrix and lane. Lane l gives the
// address of row l % 8 of matrix l / 8 (16-byte aligned; rows need not be
// contiguous). Lane l, with g = l / 4 and t = l % 4, receives in d[j]:
//   ldmatrix_x4:       row g of matrix j, bytes 4t..4t+3 (elements 2t, 2t+1);
//   ldmatrix_x4_trans: element (row 2t, column g) in the low half and
//                      (row 2t + 1, column g) in the high half, i.e. the
//                      transposed matrix; element (r, c) is bytes 2c, 2c+1
//                      of row r.
// That is the A-fragment layout of mma (row g, 4 bytes of k per lane) when a
// row is 16 bytes of k. The instruction exists from sm_75 on, so only the
// emulator runs the plain twin: every lane loads its own 16-byte row (the
// addresses and widths ldmatrix reads, so the emulator's shared-memory
// counters see the same wavefronts and bank conflicts) and the fragments
// travel by 16 __shfl_sync. What the emulator cannot show: ldmatrix's own
// register traffic, and any cost of the shuffles (the GPU has none).
#if defined(PYGPU_EMULATOR)
#define PYGPU_LDMATRIX_PLAIN 1
#else
#define PYGPU_LDMATRIX_PLAIN 0
#endif
__device__ __forceinline__ void ldmatrix_x4(unsigned d[4], const void* row)
{
#if PYGPU_LDMATRIX_PLAIN
    const uint4 v = *static_cast<const uint4*>(row);
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
    const int lane = (int)(threadIdx.x & 31);
    for (int j = 0; j < 4; ++j)
        for (int u = 0; u < 4; ++u) {
            // Row g of matrix j is the row lane 8j + g loaded; this lane wants its word t.
            const unsigned x = __shfl_sync(0xffffffffu, w[u], 8 * j + (lane >> 2));
            if (u == (lane & 3))
                d[j] = x;
        }
#else
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(s) : "memory");
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned d[4], const void* row)
{
#if PYGPU_LDMATRIX_PLAIN
    const uint4 v = *static_cast<const uint4*>(row);
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
    const int lane = (int)(threadIdx.x & 31);
    const int g = lane >> 2, t = lane & 3;
    for (int j = 0; j < 4; ++j)
        for (int u = 0; u < 4; ++u) {
            // Column g is half g % 2 of word g / 2 of rows 2t and 2t + 1 (lanes 8j + 2t, + 1).
            const unsigned lo = __shfl_sync(0xffffffffu, w[u], 8 * j + 2 * t);
            const unsigned hi = __shfl_sync(0xffffffffu, w[u], 8 * j + 2 * t + 1);
            if (u == g / 2) {
                const int sh = 16 * (g % 2);
                d[j] = ((lo >> sh) & 0xffffu) | (((hi >> sh) & 0xffffu) << 16);
            }
        }
#else
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(s) : "memory");
#endif
}

// Warp-wide int8 tensor-core product (mma.sync m16n8k32, s8 x s8 -> s32):
// c (16 x 8, int32) += a (16 x 32, int8, row-major) * b (32 x 8, int8,
// column-major). All 32 lanes must call it together with the same control
// flow. Fragments, per lane with g = lane / 4 and t = lane % 4 (each register
// holds four int8, the lowest byte first; k is the column of a / row of b):
//   a[0]: row g,     k 4t..4t+3        a[1]: row g + 8, k 4t..4t+3
//   a[2]: row g,     k 16+4t..16+4t+3  a[3]: row g + 8, k 16+4t..16+4t+3
//   b[0]: column g,  k 4t..4t+3        b[1]: column g,  k 16+4t..16+4t+3
//   c[0], c[1]: row g, columns 2t, 2t+1; c[2], c[3]: row g + 8, same columns.
// The shape exists from sm_80 on. sm_75 has the int8 tensor-core shape
// m8n8k16, whose fragments are exactly the quarters of these (a[0] is the A
// fragment of rows 0-7, k 0-15; b[0] the B fragment of k 0-15; c[0..1] the C
// fragment of rows 0-7), so there the wrapper issues four m8n8k16. The plain
// twin (emulator) gathers the other lanes' fragments with 24 shuffles and
// accumulates with __dp4a: the same result (integer sums are exact). The PTX
// forms wrap on int32 overflow (no .satfinite); callers keep sums in range.
#if !defined(PYGPU_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define PYGPU_MMA_S8_M8N8K16 1
#else
#define PYGPU_MMA_S8_M8N8K16 0
#endif
// mma_m16n8k32_i8<AU, BU>: the same product with the bytes of a (AU) and / or
// b (BU) read as unsigned (u8, 0..255) instead of signed: mma's .u8 operand
// types, which exist for both shapes. Everything else as above; the plain
// twin multiplies byte by byte.
template <bool U>
__device__ __forceinline__ int pygpu_i8_byte(unsigned w, int j)
{
    return U ? (int)((w >> (8 * j)) & 0xffu) : (int)(signed char)(w >> (8 * j));
}
template <bool AU, bool BU>
__device__ __forceinline__ int pygpu_dot4_i8(unsigned a, unsigned b, int c)
{
    if (!AU && !BU)
        return __dp4a((int)a, (int)b, c);
    for (int j = 0; j < 4; ++j)
        c = (int)((unsigned)c + (unsigned)(pygpu_i8_byte<AU>(a, j) * pygpu_i8_byte<BU>(b, j)));
    return c;
}
#define PYGPU_MMA_M8N8K16(AT, BT, C0, C1, A0, B0, A1, B1)                                        \
    asm volatile(                                                                                \
        "mma.sync.aligned.m8n8k16.row.col.s32." AT "." BT ".s32 {%0, %1}, {%2}, {%3}, {%0, %1};\n" \
        "mma.sync.aligned.m8n8k16.row.col.s32." AT "." BT ".s32 {%0, %1}, {%4}, {%5}, {%0, %1};\n" \
        : "+r"(C0), "+r"(C1) : "r"(A0), "r"(B0), "r"(A1), "r"(B1))
#define PYGPU_MMA_M16N8K32(AT, BT, c, a, b)                                                       \
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32." AT "." BT ".s32 "                        \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"              \
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])                                 \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
template <bool AU, bool BU>
__device__ __forceinline__ void mma_m16n8k32_i8(int c[4], const unsigned a[4], const unsigned b[2])
{
#if PYGPU_MMA_S8_M8N8K16
    // c[0..1] += rows 0-7 (k 0-15, then 16-31); c[2..3] += rows 8-15.
    if (AU && BU) {
        PYGPU_MMA_M8N8K16("u8", "u8", c[0], c[1], a[0], b[0], a[2], b[1]);
        PYGPU_MMA_M8N8K16("u8", "u8", c[2], c[3], a[1], b[0], a[3], b[1]);
    } else if (AU) {
        PYGPU_MMA_M8N8K16("u8", "s8", c[0], c[1], a[0], b[0], a[2], b[1]);
        PYGPU_MMA_M8N8K16("u8", "s8", c[2], c[3], a[1], b[0], a[3], b[1]);
    } else if (BU) {
        PYGPU_MMA_M8N8K16("s8", "u8", c[0], c[1], a[0], b[0], a[2], b[1]);
        PYGPU_MMA_M8N8K16("s8", "u8", c[2], c[3], a[1], b[0], a[3], b[1]);
    } else {
        PYGPU_MMA_M8N8K16("s8", "s8", c[0], c[1], a[0], b[0], a[2], b[1]);
        PYGPU_MMA_M8N8K16("s8", "s8", c[2], c[3], a[1], b[0], a[3], b[1]);
    }
#elif PYGPU_PTX_PLAIN
    const int lane = (int)(threadIdx.x & 31);
    const int g = lane >> 2;
    const int t = lane & 3;
    for (int j = 0; j < 4; ++j) {
        // Row g's k-chunk j (and 16 + 4j) lives in lane 4g + j; column n's in lane 4n + j.
        const unsigned a0 = __shfl_sync(0xffffffffu, a[0], 4 * g + j);
        const unsigned a1 = __shfl_sync(0xffffffffu, a[1], 4 * g + j);
        const unsigned a2 = __shfl_sync(0xffffffffu, a[2], 4 * g + j);
        const unsigned a3 = __shfl_sync(0xffffffffu, a[3], 4 * g + j);
        for (int h = 0; h < 2; ++h) {
            const int col = 2 * t + h;
            const unsigned b0 = __shfl_sync(0xffffffffu, b[0], 4 * col + j);
            const unsigned b1 = __shfl_sync(0xffffffffu, b[1], 4 * col + j);
            c[h] = pygpu_dot4_i8<AU, BU>(a2, b1, pygpu_dot4_i8<AU, BU>(a0, b0, c[h]));
            c[2 + h] = pygpu_dot4_i8<AU, BU>(a3, b1, pygpu_dot4_i8<AU, BU>(a1, b0, c[2 + h]));
        }
    }
#else
    if (AU && BU)
        PYGPU_MMA_M16N8K32("u8", "u8", c, a, b);
    else if (AU)
        PYGPU_MMA_M16N8K32("u8", "s8", c, a, b);
    else if (BU)
        PYGPU_MMA_M16N8K32("s8", "u8", c, a, b);
    else
        PYGPU_MMA_M16N8K32("s8", "s8", c, a, b);
#endif
}
#undef PYGPU_MMA_M8N8K16
#undef PYGPU_MMA_M16N8K32

__device__ __forceinline__ void mma_m16n8k32_s8(int c[4], const unsigned a[4], const unsigned b[2])
{
    mma_m16n8k32_i8<false, false>(c, a, b);
}
