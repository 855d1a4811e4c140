// Strided copy: dst[i] = src[i] over one shape, both operands through their
// own strides. transpose() reads a permuted view of x into a new
// C-contiguous array; concat() copies each input into its slice of the
// output (a view whose strides are the output's, offset along the axis).
//
// Shapes: src and dst views of the same shape, up to 8 dimensions after the
// host merges neighbouring ones (strided_common.cuh), walked as (rows,
// inner); any size (64-bit indices). T is an unsigned integer of the element
// size (1, 2, 4 or 8 bytes): a copy only moves bits, so NaN payloads and
// -0.0 survive and one instantiation per size serves every dtype.
//
// Memory traffic: reads n and writes n elements. The writes walk dst's
// inner dimension (unit stride for transpose and, in practice, for concat);
// the reads follow src's inner stride, which for a transpose that moves the
// last axis is not 1, so reads are then uncoalesced (one 32-byte sector per
// element in the worst case). conv.py's transpose_tiled stages a tile in
// shared memory for the NCHW <-> NHWC case; this kernel is the general one.
//
// Launch: as broadcast_binary.cu (elementwise.rows_launch).

#include "strided_common.cuh"

// src (view, strides g.s0) -> dst (view, strides g.s1), shape g.n.
template <typename T>
__global__ void strided_copy(
    const T* __restrict__ src, T* __restrict__ dst, StridedGeometry g)
{
    geometry_for_each(g, [&](long long is, long long id, long long) { dst[id] = src[is]; });
}
