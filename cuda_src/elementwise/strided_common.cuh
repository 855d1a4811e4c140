// Shared by broadcast_binary.cu and strided_copy.cu: the geometry of a
// strided walk over an array of up to 8 dimensions, split into rows.
//
// The host merges every pair of neighbouring dimensions that it can (both
// operands' strides chain: s[d] == s[d + 1] * n[d + 1]) and drops size-1
// dimensions, so most calls arrive here with 1 to 3 dimensions. The last
// dimension is the "inner" one: threadIdx.x walks it, with the operands'
// inner strides (1 for contiguous data, 0 for a broadcast operand). The
// others are flattened into "rows": a row index is split into coordinates
// once per row (at most 7 32-bit divisions), not once per element.
//
// All sizes, strides and offsets are 64-bit and in elements; strides may be
// 0 (broadcast) or negative (a reversed view: the pointer is the address of
// the element at coordinate 0, as CuPy and the emulator pass it).
#pragma once

constexpr int GEOM_MAX_DIMS = 8;

struct StridedGeometry {
    long long n[GEOM_MAX_DIMS];   // sizes, outermost first; n[nd - 1] is the inner size
    long long s0[GEOM_MAX_DIMS];  // first operand's strides (elements)
    long long s1[GEOM_MAX_DIMS];  // second operand's strides (elements)
    long long rows;               // n[0] * ... * n[nd - 2] (1 when nd == 1), below 2^31
    int nd;                       // 1 .. GEOM_MAX_DIMS
};

// Offsets (elements) of row `r`'s first element in both operands. The host
// keeps rows (so every outer size and every row index) below 2^31, so the
// splits are 32-bit unsigned divisions, inlined; a 64-bit division is a
// called subroutine whose register saves ptxas reports as spills.
__device__ __forceinline__ void geometry_row_offsets(const StridedGeometry& g, long long row,
                                                     long long& o0, long long& o1)
{
    o0 = 0;
    o1 = 0;
    unsigned int r = (unsigned int)row;
    for (int d = g.nd - 2; d >= 0; --d) {
        const unsigned int n = (unsigned int)g.n[d];
        const unsigned int q = r / n;
        const long long i = (long long)(r - q * n);
        o0 += i * g.s0[d];
        o1 += i * g.s1[d];
        r = q;
    }
}

// Calls f(offset0, offset1, linear) for every element of the geometry that
// this thread owns: offsets into both operands and the element's position in
// C order (the index into a contiguous output). Block (bx, by): threadIdx.x
// walks the inner dimension, threadIdx.y the rows; both loops stride by the
// whole grid, so any grid covers everything exactly once.
template <typename F>
__device__ __forceinline__ void geometry_for_each(const StridedGeometry& g, F f)
{
    const long long inner = g.n[g.nd - 1];
    const long long si0 = g.s0[g.nd - 1], si1 = g.s1[g.nd - 1];
    const long long j0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long jstep = (long long)gridDim.x * blockDim.x;
    const long long rstep = (long long)gridDim.y * blockDim.y;
    const long long step0 = jstep * si0, step1 = jstep * si1;
    for (long long r = (long long)blockIdx.y * blockDim.y + threadIdx.y; r < g.rows; r += rstep) {
        long long o0, o1;
        geometry_row_offsets(g, r, o0, o1);
        // Running offsets: one add per operand and element, no multiplies in the loop.
        o0 += j0 * si0;
        o1 += j0 * si1;
        long long lin = r * inner + j0;
        for (long long j = j0; j < inner; j += jstep, o0 += step0, o1 += step1, lin += jstep)
            f(o0, o1, lin);
    }
}
