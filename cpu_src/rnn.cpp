// The LSTM cell of the numpy backend's recurrent layers (pygpu_ops/recurrent.py `_numpy_layer`),
// one time step over every direction, with the state transposed (gates and hidden units as rows,
// the batch along a row): from the pre-activations z (D, 4H, B) = x W^T + h R^T + biases, in
// the gate order of recurrent.py (i, f, g, o: rows k*H..(k+1)*H, PyTorch's order),
//   c' = sigmoid(f) c + sigmoid(i) tanh(g),  h' = sigmoid(o) tanh(c'),
// each product and sum rounded on its own (no FMA contraction: ISO C++ mode), the same steps
// as the NumPy route; sigmoid and tanh from exp_f32 (within 3 ulp; tests/_runtime/test_native.py).
// Rows of (d, unit) are split over the threads.
#include "common.h"

namespace {

inline float sigmoid(float x) {
    const float t = pygpu::exp_f32(-std::fabs(x));
    const float d = 1.0f + t;
    return x >= 0.0f ? 1.0f / d : t / d;
}

}  // namespace

namespace pygpu {

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = e^(-2|x|), written with u = e - 1 (expm1 of
// -2|x|) as -u / (2 + u): for |x| < 1/4 u comes from its Taylor series (no cancellation in
// e - 1), above from exp_f32. NaN stays NaN; +-inf give +-1.
inline float tanh_f32(float x) {
    const float a = std::fabs(x);
    const float v = -2.0f * a;
    float p = 1.0f / 40320.0f;                       // expm1(v) = v + v^2/2! + ... + v^8/8!
    p = std::fma(p, v, 1.0f / 5040.0f);
    p = std::fma(p, v, 1.0f / 720.0f);
    p = std::fma(p, v, 1.0f / 120.0f);
    p = std::fma(p, v, 1.0f / 24.0f);
    p = std::fma(p, v, 1.0f / 6.0f);
    p = std::fma(p, v, 0.5f);
    const float small = std::fma(p * v, v, v);
    const float u = a < 0.25f ? small : exp_f32(v) - 1.0f;
    const float t = -u / (2.0f + u);
    return std::copysign(t, x);
}

}  // namespace pygpu

namespace {

void lstm_rows(const float* __restrict z, const float* __restrict c, float* __restrict h_out,
               float* __restrict c_out, int64_t H, int64_t B, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {            // r = d * H + unit
        const int64_t d = r / H, u = r % H;
        const float* zi = z + (d * 4 * H + u) * B;
        const float* zf = zi + H * B;
        const float* zg = zf + H * B;
        const float* zo = zg + H * B;
        const float* cr = c + r * B;
        float* hr = h_out + r * B;
        float* cn = c_out + r * B;
        for (int64_t b = 0; b < B; ++b) {
            const float cc = sigmoid(zf[b]) * cr[b] + sigmoid(zi[b]) * pygpu::tanh_f32(zg[b]);
            cn[b] = cc;
            hr[b] = sigmoid(zo[b]) * pygpu::tanh_f32(cc);
        }
    }
}

}  // namespace

PYGPU_EXPORT void lstm_cell_f32(const float* z, const float* c, float* h_out, float* c_out, int64_t D,
                                int64_t H, int64_t B, int32_t nt) {
    pygpu::parallel_rows(0, D * H, nt, [&](int64_t a, int64_t b) { lstm_rows(z, c, h_out, c_out, H, B, a, b); });
}

// tanh elementwise (tanh_f32), for the tests' accuracy check.
PYGPU_EXPORT void tanh_f32(const float* __restrict x, float* __restrict y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = pygpu::tanh_f32(x[i]);
}
