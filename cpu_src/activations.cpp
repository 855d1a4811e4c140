// Elementwise activations of the numpy backend (pygpu_ops/_runtime/npfast.py calls each once on
// a flat, contiguous array; `pieces` cuts it into one piece per thread). Each is the rule the
// CUDA kernels apply, written as a select, so NaN payloads and -0.0 come out as the kernels and
// the NumPy steps give them:
//   relu:       x < 0 ? 0 : x
//   leaky_relu: x < 0 ? slope * x : x
//   clip:       r = x < lo ? lo : x;  r > hi ? hi : r
//   sigmoid:    t = e^-|x|;  x >= 0 ? 1 / (1 + t) : t / (1 + t)   (exp_f32: within 1 ulp)
#include "common.h"

namespace {

template <typename T>
void relu(const T* __restrict x, T* __restrict y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];
}

template <typename T>
void leaky_relu(const T* __restrict x, T* __restrict y, int64_t n, T slope) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? slope * x[i] : x[i];
}

template <typename T>
void clip(const T* __restrict x, T* __restrict y, int64_t n, T lo, T hi) {
    for (int64_t i = 0; i < n; ++i) {
        const T r = x[i] < lo ? lo : x[i];
        y[i] = r > hi ? hi : r;
    }
}

void sigmoid(const float* __restrict x, float* __restrict y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = pygpu::sigmoid_f32(x[i]);
}

// one piece per thread, cut on 64-byte boundaries of the flat arrays
template <typename T, class F>
void pieces(const T* x, T* y, int64_t n, int32_t nt, F op) {
    pygpu::parallel_rows(0, n, nt, [&](int64_t a, int64_t b) { op(x + a, y + a, b - a); }, 64 / sizeof(T));
}

}  // namespace

#define ELEMENTWISE(name, T, suffix)                                                          \
    PYGPU_EXPORT void name##_##suffix(const T* x, T* y, int64_t n, int32_t nt) {             \
        pieces(x, y, n, nt, [](const T* a, T* b, int64_t m) { name(a, b, m); });             \
    }
ELEMENTWISE(relu, float, f32)
ELEMENTWISE(relu, double, f64)
ELEMENTWISE(sigmoid, float, f32)

PYGPU_EXPORT void leaky_relu_f32(const float* x, float* y, int64_t n, float s, int32_t nt) {
    pieces(x, y, n, nt, [s](const float* a, float* b, int64_t m) { leaky_relu(a, b, m, s); });
}
PYGPU_EXPORT void leaky_relu_f64(const double* x, double* y, int64_t n, double s, int32_t nt) {
    pieces(x, y, n, nt, [s](const double* a, double* b, int64_t m) { leaky_relu(a, b, m, s); });
}
PYGPU_EXPORT void clip_f32(const float* x, float* y, int64_t n, float lo, float hi, int32_t nt) {
    pieces(x, y, n, nt, [lo, hi](const float* a, float* b, int64_t m) { clip(a, b, m, lo, hi); });
}
PYGPU_EXPORT void clip_f64(const double* x, double* y, int64_t n, double lo, double hi, int32_t nt) {
    pieces(x, y, n, nt, [lo, hi](const double* a, double* b, int64_t m) { clip(a, b, m, lo, hi); });
}

// e^x elementwise: exp_f32 on its own, for tests/_runtime/test_native.py's accuracy check.
PYGPU_EXPORT void exp_f32(const float* __restrict x, float* __restrict y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = pygpu::exp_f32(x[i]);
}
