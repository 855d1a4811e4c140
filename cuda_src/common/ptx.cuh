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
// Exception: the int8 mma wrapper has a PTX form for sm_75 too (see there).
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
__device__ __forceinline__ void mma_m16n8k32_s8(int c[4], const unsigned a[4], const unsigned b[2])
{
#if PYGPU_MMA_S8_M8N8K16
    // c[0..1] += rows 0-7 (k 0-15, then 16-31); c[2..3] += rows 8-15.
    asm volatile(
        "mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32 {%0, %1}, {%2}, {%3}, {%0, %1};\n"
        "mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32 {%0, %1}, {%4}, {%5}, {%0, %1};\n"
        : "+r"(c[0]), "+r"(c[1])
        : "r"(a[0]), "r"(b[0]), "r"(a[2]), "r"(b[1]));
    asm volatile(
        "mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32 {%0, %1}, {%2}, {%3}, {%0, %1};\n"
        "mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32 {%0, %1}, {%4}, {%5}, {%0, %1};\n"
        : "+r"(c[2]), "+r"(c[3])
        : "r"(a[1]), "r"(b[0]), "r"(a[3]), "r"(b[1]));
#elif PYGPU_PTX_PLAIN
    const int lane = (int)(threadIdx.x & 31);
    const int g = lane >> 2;
    const int t = lane & 3;
    for (int j = 0; j < 4; ++j) {
        // Row g's k-chunk j (and 16 + 4j) lives in lane 4g + j; column n's in lane 4n + j.
        const int a0 = (int)__shfl_sync(0xffffffffu, a[0], 4 * g + j);
        const int a1 = (int)__shfl_sync(0xffffffffu, a[1], 4 * g + j);
        const int a2 = (int)__shfl_sync(0xffffffffu, a[2], 4 * g + j);
        const int a3 = (int)__shfl_sync(0xffffffffu, a[3], 4 * g + j);
        for (int h = 0; h < 2; ++h) {
            const int col = 2 * t + h;
            const int b0 = (int)__shfl_sync(0xffffffffu, b[0], 4 * col + j);
            const int b1 = (int)__shfl_sync(0xffffffffu, b[1], 4 * col + j);
            c[h] = __dp4a(a2, b1, __dp4a(a0, b0, c[h]));
            c[2 + h] = __dp4a(a3, b1, __dp4a(a1, b0, c[2 + h]));
        }
    }
#else
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
