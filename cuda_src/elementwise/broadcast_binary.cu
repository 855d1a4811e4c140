// Broadcasting binary elementwise ops: y = a OP b, OP one of + - * /, or
// relu(a + b) / relu6(a + b) (add's fused activations).
//
// Shapes: y is the broadcast shape of a and b, C-contiguous; a and b are read
// through their broadcast strides (0 on a dimension the operand broadcasts
// along, so an operand of shape (1, C, 1, 1) against (N, C, H, W) is never
// expanded in memory; a scalar is a 0-d array with all strides 0). The host
// merges dimensions (strided_common.cuh), so y is walked as (rows, inner).
// Up to 8 dimensions after merging; any size (64-bit indices).
//
// Each element is one IEEE operation in T, rounded to nearest, so the result
// is NumPy's bit for bit (division is the correctly rounded one: no
// -use_fast_math). The one exception is CuPy's -ftz=true: on a GPU, float32
// subnormal inputs and results are flushed to zero (the emulator does not
// flush). NaN and Inf propagate as in IEEE arithmetic.
//
// Memory traffic: writes n elements of y; reads n elements of each operand
// that is not broadcast along the inner dimension and one element per row
// of one that is (it stays in L1/L2 for the row).
//
// Launch (elementwise.rows_launch): block (bx, by) with bx * by = 256 and
// bx the power of two >= inner (at most 256), so a short inner dimension
// packs several rows into one block instead of idling threads; grid
// (min(ceil(inner / bx), 65536), min(ceil(rows / by), 65535)). Both loops
// stride by the grid, so any grid is correct.

#include "strided_common.cuh"

struct AddOp { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return a + b; } };
struct SubOp { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return a - b; } };
struct MulOp { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return a * b; } };
struct DivOp { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return a / b; } };
// add with a fused activation (a residual Add + Relu / Clip(0, 6) in one pass
// over y instead of two): the rounded sum, then the comparisons of relu_vec128
// and of conv_gemm_warptile's epilogue (s < 0 ? 0 : s, then s > 6 ? 6 : s), so
// NaN passes through and the result is add's then relu's bit for bit.
struct AddReluOp {
    template <typename T> __device__ __forceinline__ static T apply(T a, T b)
    {
        const T s = a + b;
        return s < T(0) ? T(0) : s;
    }
};
struct AddRelu6Op {
    template <typename T> __device__ __forceinline__ static T apply(T a, T b)
    {
        const T s = AddReluOp::apply(a, b);
        return s > T(6) ? T(6) : s;
    }
};

// a (broadcast view), b (broadcast view) -> y (g.rows, g.n[g.nd - 1]) contiguous.
// g.s0 are a's strides, g.s1 are b's.
template <typename T, typename OP>
__global__ void broadcast_binary(
    const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, StridedGeometry g)
{
    geometry_for_each(g, [&](long long ia, long long ib, long long iy) {
        y[iy] = OP::apply(a[ia], b[ib]);
    });
}
