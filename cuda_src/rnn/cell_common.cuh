// Shared pieces of the recurrent cell kernels (lstm_cell.cu, gru_cell.cu,
// rnn_cell.cu): accurate float32 sigmoid / tanh and the mapping of one time
// step to each batch row's time index under sequence lengths.
//
// How a recurrent layer runs (pygpu_ops/recurrent.py):
//   xw = X @ W^T + b       one GEMM over all S time steps and all directions:
//                          xw[t, b, d * G*H + g*H + j] (time-major) or
//                          xw[b, t, ...] (batch-major), seen through the two
//                          strides xw_st (time) and xw_sb (batch);
//   per step s:
//     hr = h @ R^T         one batched GEMM, batch = direction: (D, B, G*H);
//     cell kernel          gates, nonlinearities and the state update for
//                          every batch row and both directions (gridDim.y).
// The state h (and c) is (D, B, H) contiguous and updated in place: the
// thread of (d, b, j) is the only one that reads or writes h[d, b, j], and the
// GEMM that read h for this step has finished before the cell kernel starts
// (same stream), so there is no race.
//
// Sequence lengths (ONNX sequence_lens, PyTorch packed sequences): row b has
// len[b] valid steps. At step s a forward direction reads time t = s and a
// reverse one t = len[b] - 1 - s; both only while s < len[b]. Once s >= len[b]
// the row keeps its state and the thread writes 0 to Y[s], so every position
// t >= len[b] of Y is zeroed exactly once (ONNX: "outputs past the sequence
// length are 0") and each valid position is written once by the step that
// computes it.
#pragma once

// 1 / (1 + e^-v) taking the branch whose expf cannot overflow (as
// elementwise/unary_vec128.cu): within 4 ulp of the exact value (expf is at
// most 2 ulp, then one rounded add and one rounded division; CUDA
// Programming Guide, single precision table). expf, not __expf: the fast
// intrinsic has a relative error that grows with |v|.
__device__ __forceinline__ float sigmoid_acc(float v)
{
    if (v >= 0.0f)
        return 1.0f / (1.0f + expf(-v));
    const float t = expf(v);
    return t / (1.0f + t);
}

// tanhf: at most 2 ulp (CUDA Programming Guide), no fast-math.
__device__ __forceinline__ float tanh_acc(float v) { return tanhf(v); }

// One thread's element: direction d (blockIdx.y), row b and feature j of the
// flat index i = b * H + j, and the time index t the row reads at this step
// (-1 once the row is past its length: keep the state, write 0 to Y[step]).
struct CellIndex {
    int d, b, j, t;
};

// False for the threads past B * H (the grid is rounded up to whole blocks).
__device__ __forceinline__ bool cell_index(int B, int H, int step, int reverse_bits,
                                           const int* __restrict__ lens, CellIndex& ci)
{
    const int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= B * H)
        return false;
    ci.d = (int)blockIdx.y;
    ci.b = i / H;
    ci.j = i - ci.b * H;
    const int len = lens[ci.b];
    const bool reverse = (reverse_bits >> ci.d) & 1;
    ci.t = step >= len ? -1 : (reverse ? len - 1 - step : step);
    return true;
}

// Offset of (d, b, j) in a (D, B, width) array: the state (width H) and the
// recurrent GEMM's output (width G*H).
__device__ __forceinline__ long long dbj(const CellIndex& ci, int B, long long width)
{
    return ((long long)ci.d * B + ci.b) * width + ci.j;
}

// Offset of gate 0 of the thread's element in xw (direction blocks of width
// G*H; valid rows only).
__device__ __forceinline__ long long xw_offset(const CellIndex& ci, long long xw_st, long long xw_sb, long long GH)
{
    return (long long)ci.t * xw_st + (long long)ci.b * xw_sb + ci.d * GH + ci.j;
}

// Y at the element's time when valid, else 0 at the step's own time.
__device__ __forceinline__ void store_y(float* __restrict__ y, long long y_st, long long y_sd, long long y_sb,
                                        const CellIndex& ci, int step, float v)
{
    const long long t = ci.t < 0 ? step : ci.t;
    y[t * y_st + (long long)ci.d * y_sd + (long long)ci.b * y_sb + ci.j] = ci.t < 0 ? 0.0f : v;
}
