// Softmax and log-softmax over the rows of a contiguous (rows, L) float32 array, for the numpy
// backend (one block of rows per thread). Per row, as the NumPy steps and PyTorch:
//   m = max (-inf when the row is empty or all -inf), z = x - m,
//   softmax = e^z / sum e^z,  log_softmax = z - log(sum e^z).
// No special cases: a NaN makes its row NaN through the sum, an all -inf row gives
// -inf - -inf = NaN, a -inf entry gives e^-inf = 0, as torch.softmax. The max and the sum keep
// LANES partials (summed in a fixed order at the end), so the result does not depend on the
// vector width; e^z is exp_f32 (within 1 ulp), the log is correctly rounded, and softmax
// multiplies by the sum's reciprocal.
#include "common.h"

using pygpu::LANES;

namespace {

float row_max(const float* __restrict x, int64_t L) {
    float part[LANES];
    for (int j = 0; j < LANES; ++j) part[j] = -INFINITY;
    int64_t i = 0;
    for (; i + LANES <= L; i += LANES)
        for (int j = 0; j < LANES; ++j) part[j] = x[i + j] > part[j] ? x[i + j] : part[j];
    float m = -INFINITY;
    for (; i < L; ++i) m = x[i] > m ? x[i] : m;
    for (int j = 0; j < LANES; ++j) m = part[j] > m ? part[j] : m;
    return m;
}

// sum of e^(x - m); with STORE the exponentials are written to e
template <bool STORE>
float exp_sum(const float* __restrict x, float* __restrict e, int64_t L, float m) {
    float part[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= L; i += LANES)
        for (int j = 0; j < LANES; ++j) {
            const float v = pygpu::exp_f32(x[i + j] - m);
            if (STORE) e[i + j] = v;
            part[j] += v;
        }
    float s = 0.0f;
    for (; i < L; ++i) {
        const float v = pygpu::exp_f32(x[i] - m);
        if (STORE) e[i] = v;
        s += v;
    }
    for (int j = 0; j < LANES; ++j) s += part[j];
    return s;
}

void softmax_rows(const float* __restrict x, float* __restrict y, int64_t rows, int64_t L, int32_t log) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * L;
        float* yr = y + r * L;
        const float m = row_max(xr, L);
        if (log) {
            const float ls = std::log(exp_sum<false>(xr, nullptr, L, m));
            for (int64_t i = 0; i < L; ++i) yr[i] = (xr[i] - m) - ls;
        } else {
            // times the reciprocal, as PyTorch: a multiply per element instead of a division
            // (0.5 ulp more error, inside the softmax bound; the division's throughput made this
            // pass as slow as the exp pass)
            const float inv = 1.0f / exp_sum<true>(xr, yr, L, m);
            for (int64_t i = 0; i < L; ++i) yr[i] = yr[i] * inv;
        }
    }
}

}  // namespace

// rows split over nt threads
PYGPU_EXPORT void softmax_rows_f32(const float* x, float* y, int64_t rows, int64_t L, int32_t log, int32_t nt) {
    pygpu::parallel_rows(0, rows, nt, [&](int64_t a, int64_t b) { softmax_rows(x + a * L, y + a * L, b - a, L, log); });
}
