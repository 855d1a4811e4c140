// The LSTM cell of the numpy backend's recurrent layers (pygpu_ops/recurrent.py `_numpy_layer`),
// one time step of one direction, with the state transposed (gates and hidden units as rows,
// the batch along a row): from the pre-activations z (4H, B) = (x W^T + biases) + h R^T, in
// the gate order of recurrent.py (i, f, g, o: rows k*H..(k+1)*H, PyTorch's order),
//   c' = sigmoid(f) c + sigmoid(i) tanh(g),  h' = sigmoid(o) tanh(c'),
// each product and sum rounded on its own (no FMA contraction: ISO C++ mode), the same steps
// as the NumPy route; sigmoid_f32 and tanh_f32 from common.h (within 3 ulp; tests/_runtime/test_native.py).
// The hidden units are split over the threads; each writes its own column of the step's output.
#include "common.h"

namespace {

// z of gate k, unit u, batch row b: (x W^T + bias) + h R^T, in the order the NumPy route adds them
void lstm_rows(const float* __restrict xw, int64_t ldx, const float* __restrict bias, const float* __restrict hr,
               const float* __restrict c, float* __restrict h_out, float* __restrict c_out, float* __restrict y,
               int64_t H, int64_t B, int64_t u0, int64_t u1) {
    float z[4][64];
    for (int64_t u = u0; u < u1; ++u) {
        for (int64_t b0 = 0; b0 < B; b0 += 64) {
            const int64_t nb = B - b0 < 64 ? B - b0 : 64;
            for (int k = 0; k < 4; ++k) {
                const int64_t row = k * H + u;
                const float* xr = xw + row * ldx + b0;
                const float* hrr = hr + row * B + b0;
                for (int64_t b = 0; b < nb; ++b) z[k][b] = (xr[b] + bias[row]) + hrr[b];
            }
            const float* cr = c + u * B + b0;
            float* ho = h_out + u * B + b0;
            float* co = c_out + u * B + b0;
            for (int64_t b = 0; b < nb; ++b) {
                using pygpu::sigmoid_f32;
                const float cc = sigmoid_f32(z[1][b]) * cr[b] + sigmoid_f32(z[0][b]) * pygpu::tanh_f32(z[2][b]);
                co[b] = cc;
                ho[b] = sigmoid_f32(z[3][b]) * pygpu::tanh_f32(cc);
            }
            if (y)
                for (int64_t b = 0; b < nb; ++b) y[(b0 + b) * H + u] = ho[b];
        }
    }
}

}  // namespace

// One direction's step: xw (4H, B) rows ldx floats apart (the step's columns of the input
// projection), bias (4H), hr = R h^T (4H, B), c (H, B) -> h_out, c_out (H, B); with y not null
// also y[b * H + u] = h_out[u, b] (the step's (B, H) slice of the output). Units split over nt
// threads.
PYGPU_EXPORT void lstm_cell_f32(const float* xw, int64_t ldx, const float* bias, const float* hr, const float* c,
                                float* h_out, float* c_out, float* y, int64_t H, int64_t B, int32_t nt) {
    pygpu::parallel_rows(0, H, nt, [&](int64_t a, int64_t b) {
        lstm_rows(xw, ldx, bias, hr, c, h_out, c_out, y, H, B, a, b);
    });
}

// tanh elementwise (tanh_f32), for the tests' accuracy check.
PYGPU_EXPORT void tanh_f32(const float* __restrict x, float* __restrict y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = pygpu::tanh_f32(x[i]);
}
