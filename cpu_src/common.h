// Shared helpers of the numpy backend's native loops (cpu_src/, see pygpu_ops/_runtime/native.py).
//
// Compiled with -O3 -march=native and without -ffast-math: comparisons, NaN, infinities and signed
// zeros keep their IEEE meaning, and no sum is reassociated behind our back. Loops are written so
// that GCC vectorizes them as they stand (plain loops over restrict pointers, selects instead of
// branches); a reduction keeps LANES partial results explicitly, so its order is fixed by the
// source, not by the vector width the compiler picks.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PYGPU_EXPORT extern "C" __attribute__((visibility("default")))

namespace pygpu {

constexpr int LANES = 16;     // partial sums / maxima of a row reduction

// body(a, b) over [r0, r1) cut into nt contiguous pieces, one per OpenMP thread; nt <= 1 (or one
// item) calls body(r0, r1) on the caller without entering OpenMP at all. Why OpenMP and not the
// Python pool (pygpu_ops/_runtime/threads.py): handing a piece to a Python thread measured
// 30-90 us here (wake-up, GIL), as long as the whole op at the bench's sizes; OpenMP's spinning
// team takes it in a few microseconds. `align` keeps piece boundaries on multiples of it (whole
// vectors for elementwise loops). The caller (native.py) passes nt = 1 after a fork: libgomp's
// team does not survive fork, so a child entering a parallel region would hang.
template <class F>
inline void parallel_rows(int64_t r0, int64_t r1, int32_t nt, F body, int64_t align = 1) {
    const int64_t n = r1 - r0;
    if (nt > n / align) nt = (int32_t)(n / align);
#ifdef _OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            const int64_t t = omp_get_thread_num(), k = omp_get_num_threads();
            const int64_t a = r0 + (n * t / k) / align * align;
            const int64_t b = t + 1 == k ? r1 : r0 + (n * (t + 1) / k) / align * align;
            if (a < b) body(a, b);
        }
        return;
    }
#endif
    if (n > 0) body(r0, r1);
}

// f(0) .. f(n - 1) on nt OpenMP threads, each taking the next index (dynamic: on shared cores a
// thread that starts late still gets a share); nt <= 1 runs them on the caller without entering
// OpenMP (native.threads_for passes 1 after a fork, where libgomp's team would hang).
template <class F>
inline void run_blocks(int64_t n, int32_t nt, F f) {
#ifdef _OPENMP
    if (nt > 1 && n > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int64_t k = 0; k < n; ++k) f(k);
        return;
    }
#endif
    for (int64_t k = 0; k < n; ++k) f(k);
}

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// e^x in float32, within 1 ulp of the exact value on [-87, 88] (checked against float64 exp in
// tests/_runtime/test_native.py), branch-free so that loops calling it vectorize.
//   n = rint(x / ln 2), r = x - n ln 2 (two-step Cody-Waite with FMA, |r| <= ln2 / 2),
//   e^r from its degree-7 Taylor polynomial (truncation below 6e-9 relative), times 2^n built
//   from two exponent fields so that n down to -150 and up to 128 needs no special case:
//   the first factor keeps the product normal and exact, the second rounds once (to a denormal,
//   zero or infinity as IEEE says). NaN stays NaN; -inf gives +0, +inf gives +inf.
inline float exp_f32(float x) {
    float xc = x < -104.0f ? -104.0f : x;      // NaN passes both selects unchanged
    xc = xc > 89.0f ? 89.0f : xc;
    const float n = std::rint(xc * 1.44269504088896341f);
    float r = std::fma(n, -0.693145751953125f, xc);        // ln 2 high part: 12 significant bits
    r = std::fma(n, -1.42860682030941723212e-6f, r);        // ln 2 - high part
    float p = 1.0f / 5040.0f;
    p = std::fma(p, r, 1.0f / 720.0f);
    p = std::fma(p, r, 1.0f / 120.0f);
    p = std::fma(p, r, 1.0f / 24.0f);
    p = std::fma(p, r, 1.0f / 6.0f);
    p = std::fma(p, r, 0.5f);
    p = std::fma(p, r, 1.0f);
    p = std::fma(p, r, 1.0f);
    const int32_t ni = (int32_t)(n == n ? n : 0.0f); // in [-150, 129]; a NaN x gives NaN via p
    const int32_t n1 = ni / 2, n2 = ni - n1;          // each in [-75, 65]
    const float s1 = bits_to_float((uint32_t)(n1 + 127) << 23);
    const float s2 = bits_to_float((uint32_t)(n2 + 127) << 23);
    return (p * s1) * s2;
}

// 1 / (1 + e^-x) from t = e^-|x| only (it never overflows): x >= 0 ? 1 / (1 + t) : t / (1 + t).
// NaN stays NaN. Within 3 ulp (tests/_runtime/test_native.py).
inline float sigmoid_f32(float x) {
    const float t = exp_f32(-std::fabs(x));
    const float d = 1.0f + t;
    return x >= 0.0f ? 1.0f / d : t / d;
}

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
