// Simple (Elman) RNN cell with tanh: one time step of every batch row and
// direction, after the two GEMMs (see cell_common.cuh for the whole layer).
//
//   h' = tanh(xw + hr)
//
// xw already holds both biases (b_ih + b_hh, added by the input-projection
// GEMM).
//
// Shapes (float32):
//   xw  time t, row b, direction d at xw + t*xw_st + b*xw_sb + d*H, (H,)
//   hr  (D, B, H)  h_prev @ R^T for this step
//   h   (D, B, H)  state, updated in place
//   y   time t, direction d, row b at y + t*y_st + d*y_sd + b*y_sb, (H,)
//   lens (B,) int32, each in [0, S]
// reverse_bits: bit d set when direction d runs backwards in time.
//
// Launch: block (256), grid (ceil_div(B*H, 256), D) (recurrent.cell_launch).

#include "cell_common.cuh"

extern "C" __global__ void rnn_tanh_cell(const float* __restrict__ xw, long long xw_st, long long xw_sb,
                                         const float* __restrict__ hr, float* __restrict__ h,
                                         float* __restrict__ y, long long y_st, long long y_sd, long long y_sb,
                                         const int* __restrict__ lens, int B, int H, int step,
                                         int reverse_bits)
{
    CellIndex ci;
    if (!cell_index(B, H, step, reverse_bits, lens, ci))
        return;
    const long long s = dbj(ci, B, H);
    float h_new = 0.0f;
    if (ci.t >= 0) {
        h_new = tanh_acc(xw[xw_offset(ci, xw_st, xw_sb, H)] + hr[s]);
        h[s] = h_new;
    }
    store_y(y, y_st, y_sd, y_sb, ci, step, h_new);
}
