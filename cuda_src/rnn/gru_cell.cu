// GRU cells: one time step of every batch row and direction (see
// cell_common.cuh for the whole layer). Gate order is PyTorch's (r, z, n);
// the ONNX importer permutes ONNX's (z, r, h) into it.
//
// gru_cell, linear_before_reset = 1 (PyTorch's GRU): the reset gate scales
// the recurrent product after the GEMM, so a step is one GEMM + this kernel:
//   r = sigmoid(xw_r + hr_r)    z = sigmoid(xw_z + hr_z)
//   n = tanh(xw_n + r * (hr_n + bhn))
//   h' = (1 - z) * n + z * h
// xw_r, xw_z hold b_ih + b_hh of their gates; xw_n holds only b_in, because
// b_hn sits inside r * (...) and is passed separately as bhn (D, H).
//
// linear_before_reset = 0 (ONNX's default, the original GRU): the reset gate
// scales h before it is multiplied by R_n, n = tanh(xw_n + (r * h) @ R_n^T),
// so (r * h) must exist before the second GEMM and a step is two GEMMs and
// two kernels:
//   hr = h @ [R_r; R_z]^T                 (D, B, 2H)
//   gru_reset_lbr0:  rh = sigmoid(xw_r + hr_r) * h          (D, B, H)
//   hn = rh @ R_n^T                       (D, B, H)
//   gru_update_lbr0: z = sigmoid(xw_z + hr_z) (recomputed: cheaper than a
//                    buffer), n = tanh(xw_n + hn), h' = (1 - z) * n + z * h
// Here b_hn adds outside the product, so xw_n holds b_in + b_hn.
//
// Shapes (float32):
//   xw   time t, row b, direction d at xw + t*xw_st + b*xw_sb + d*3H, (3H,)
//   hr   (D, B, 3H) for gru_cell, (D, B, 2H) for the lbr0 kernels
//   hn   (D, B, H), rh (D, B, H), bhn (D, H)
//   h    (D, B, H) state, updated in place (by gru_cell / gru_update_lbr0)
//   y    time t, direction d, row b at y + t*y_st + d*y_sd + b*y_sb, (H,)
//   lens (B,) int32, each in [0, S]
// reverse_bits: bit d set when direction d runs backwards in time.
//
// Launch: block (256), grid (ceil_div(B*H, 256), D) (recurrent.cell_launch).

#include "cell_common.cuh"

// (1 - z) * n + z * h, the update both GRU variants end with.
__device__ __forceinline__ float gru_blend(float z, float n, float h) { return (1.0f - z) * n + z * h; }

extern "C" __global__ void gru_cell(const float* __restrict__ xw, long long xw_st, long long xw_sb,
                                    const float* __restrict__ hr, const float* __restrict__ bhn,
                                    float* __restrict__ h, float* __restrict__ y, long long y_st,
                                    long long y_sd, long long y_sb, const int* __restrict__ lens, int B,
                                    int H, int step, int reverse_bits)
{
    CellIndex ci;
    if (!cell_index(B, H, step, reverse_bits, lens, ci))
        return;
    float h_new = 0.0f;
    if (ci.t >= 0) {
        const float* x = xw + xw_offset(ci, xw_st, xw_sb, 3LL * H);
        const float* r = hr + dbj(ci, B, 3LL * H);
        const long long s = dbj(ci, B, H);
        const float rg = sigmoid_acc(x[0] + r[0]);
        const float zg = sigmoid_acc(x[H] + r[H]);
        const float ng = tanh_acc(x[2 * H] + rg * (r[2 * H] + bhn[(long long)ci.d * H + ci.j]));
        h_new = gru_blend(zg, ng, h[s]);
        h[s] = h_new;
    }
    store_y(y, y_st, y_sd, y_sb, ci, step, h_new);
}

// rh = r * h for the second GEMM of a linear_before_reset = 0 step. Rows past
// their length get rh = 0: gru_update_lbr0 ignores their hn, and 0 keeps the
// GEMM's input finite.
extern "C" __global__ void gru_reset_lbr0(const float* __restrict__ xw, long long xw_st, long long xw_sb,
                                          const float* __restrict__ hr, const float* __restrict__ h,
                                          float* __restrict__ rh, const int* __restrict__ lens, int B,
                                          int H, int step, int reverse_bits)
{
    CellIndex ci;
    if (!cell_index(B, H, step, reverse_bits, lens, ci))
        return;
    const long long s = dbj(ci, B, H);
    rh[s] = ci.t < 0 ? 0.0f : sigmoid_acc(xw[xw_offset(ci, xw_st, xw_sb, 3LL * H)] + hr[dbj(ci, B, 2LL * H)]) * h[s];
}

// The state update of a linear_before_reset = 0 step, after hn = rh @ R_n^T.
extern "C" __global__ void gru_update_lbr0(const float* __restrict__ xw, long long xw_st, long long xw_sb,
                                           const float* __restrict__ hr, const float* __restrict__ hn,
                                           float* __restrict__ h, float* __restrict__ y, long long y_st,
                                           long long y_sd, long long y_sb, const int* __restrict__ lens,
                                           int B, int H, int step, int reverse_bits)
{
    CellIndex ci;
    if (!cell_index(B, H, step, reverse_bits, lens, ci))
        return;
    float h_new = 0.0f;
    if (ci.t >= 0) {
        const float* x = xw + xw_offset(ci, xw_st, xw_sb, 3LL * H);
        const long long s = dbj(ci, B, H);
        const float zg = sigmoid_acc(x[H] + hr[dbj(ci, B, 2LL * H) + H]);
        const float ng = tanh_acc(x[2 * H] + hn[s]);
        h_new = gru_blend(zg, ng, h[s]);
        h[s] = h_new;
    }
    store_y(y, y_st, y_sd, y_sb, ci, step, h_new);
}
