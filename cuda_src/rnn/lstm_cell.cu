// LSTM cell: one time step of every batch row and direction, after the two
// GEMMs (see cell_common.cuh for the whole layer). Gate order is PyTorch's
// (i, f, g, o); the ONNX importer permutes ONNX's (i, o, f, c) into it.
//
//   i = sigmoid(xw_i + hr_i [+ p_i * c])    f = sigmoid(xw_f + hr_f [+ p_f * c])
//   g = tanh(xw_g + hr_g)                   c' = f * c + i * g
//   o = sigmoid(xw_o + hr_o [+ p_o * c'])   h' = o * tanh(c')
//
// xw already holds both biases (b_ih + b_hh, added by the input-projection
// GEMM). Peepholes (ONNX P, optional) are (D, 3H) in the order i, f, o.
//
// Shapes (float32):
//   xw    time t, row b, direction d at xw + t*xw_st + b*xw_sb + d*4H, (4H,)
//   hr    (D, B, 4H)  h_prev @ R^T for this step
//   peep  (D, 3H)     read only when has_peep
//   h, c  (D, B, H)   state, updated in place
//   y     time t, direction d, row b at y + t*y_st + d*y_sd + b*y_sb, (H,)
//   lens  (B,) int32, each in [0, S]
// reverse_bits: bit d set when direction d runs backwards in time.
//
// Memory traffic per step: reads 8 B*H*D (xw, hr) + 2 B*H*D (h, c), writes
// 3 B*H*D; bandwidth bound, tiny next to the step's GEMM for H >= 64.
//
// Launch: block (256), grid (ceil_div(B*H, 256), D) (recurrent.cell_launch);
// one thread per (b, j), B*H < 2^31 (checked by the wrapper).

#include "cell_common.cuh"

extern "C" __global__ void lstm_cell(const float* __restrict__ xw, long long xw_st, long long xw_sb,
                                     const float* __restrict__ hr, const float* __restrict__ peep,
                                     int has_peep, float* __restrict__ h, float* __restrict__ c,
                                     float* __restrict__ y, long long y_st, long long y_sd, long long y_sb,
                                     const int* __restrict__ lens, int B, int H, int step,
                                     int reverse_bits)
{
    CellIndex ci;
    if (!cell_index(B, H, step, reverse_bits, lens, ci))
        return;
    if (ci.t < 0) {
        store_y(y, y_st, y_sd, y_sb, ci, step, 0.0f);   // writes 0 at Y[step]
        return;
    }
    const float* x = xw + xw_offset(ci, xw_st, xw_sb, 4LL * H);
    const float* r = hr + dbj(ci, B, 4LL * H);
    const long long s = dbj(ci, B, H);
    const float c_prev = c[s];
    float zi = x[0] + r[0];
    float zf = x[H] + r[H];
    const float zg = x[2 * H] + r[2 * H];
    float zo = x[3 * H] + r[3 * H];
    const float* p = peep + (long long)ci.d * 3 * H + ci.j;
    if (has_peep) {
        zi += p[0] * c_prev;
        zf += p[H] * c_prev;
    }
    const float ig = sigmoid_acc(zi);
    const float fg = sigmoid_acc(zf);
    const float gg = tanh_acc(zg);
    const float c_new = fg * c_prev + ig * gg;
    if (has_peep)
        zo += p[2 * H] * c_new;   // ONNX: o reads the new cell state
    const float h_new = sigmoid_acc(zo) * tanh_acc(c_new);
    c[s] = c_new;
    h[s] = h_new;
    store_y(y, y_st, y_sd, y_sb, ci, step, h_new);
}
