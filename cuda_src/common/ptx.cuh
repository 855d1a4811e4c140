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
