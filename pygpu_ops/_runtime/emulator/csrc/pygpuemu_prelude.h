// CUDA language prelude of the pygpu_ops emulator.
//
// Included before the (unchanged) .cu source, which is then compiled as C++17
// by g++.  It defines the CUDA keywords, built-in variables, vector types and
// the device function library in terms of plain C++ and the emulator runtime
// (pygpuemu_abi.h).  __CUDA_ARCH__ and __CUDACC__ are NOT defined;
// PYGPU_EMULATOR is.
#ifndef PYGPUEMU_PRELUDE_H
#define PYGPUEMU_PRELUDE_H

// Standard headers first: the keyword macros below (e.g. __noinline__) must
// not leak into library headers.
#include <algorithm>
#include <array>
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <limits>
#include <new>
#include <tuple>
#include <type_traits>
#include <utility>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "pygpuemu_abi.h"

#define PYGPU_EMULATOR 1

// ---------------------------------------------------------------------------
// Keywords and attributes.
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __maxnreg__(...)
#define __cluster_dims__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __builtin_align__(n) __attribute__((aligned(n)))
#define __device_builtin__
// Static shared memory: one instance per module and OS thread (all fibers of a
// block run on the launching OS thread).  The runtime finds the module's TLS
// block and fills it with 0xFF before every block.  `extern __shared__ T x[];`
// is rewritten by the Python loader (see _source.py).
#define __shared__ static thread_local
#define __builtin_assume(x) ((void)0)
#define __assume(x) ((void)0)

// ---------------------------------------------------------------------------
// Vector types (CUDA sizes and alignments).
#define PYGPUEMU_VEC1(T, N, A) \
    struct __attribute__((aligned(A))) N##1 { T x; }; \
    static inline N##1 make_##N##1(T x) { N##1 r; r.x = x; return r; }
#define PYGPUEMU_VEC2(T, N, A) \
    struct __attribute__((aligned(A))) N##2 { T x, y; }; \
    static inline N##2 make_##N##2(T x, T y) { N##2 r; r.x = x; r.y = y; return r; }
#define PYGPUEMU_VEC3(T, N, A) \
    struct __attribute__((aligned(A))) N##3 { T x, y, z; }; \
    static inline N##3 make_##N##3(T x, T y, T z) { N##3 r; r.x = x; r.y = y; r.z = z; return r; }
#define PYGPUEMU_VEC4(T, N, A) \
    struct __attribute__((aligned(A))) N##4 { T x, y, z, w; }; \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { \
        N##4 r; r.x = x; r.y = y; r.z = z; r.w = w; return r; }
#define PYGPUEMU_VECS(T, N, A1, A2, A3, A4) \
    PYGPUEMU_VEC1(T, N, A1) PYGPUEMU_VEC2(T, N, A2) PYGPUEMU_VEC3(T, N, A3) PYGPUEMU_VEC4(T, N, A4)

PYGPUEMU_VECS(signed char, char, 1, 2, 1, 4)
PYGPUEMU_VECS(unsigned char, uchar, 1, 2, 1, 4)
PYGPUEMU_VECS(short, short, 2, 4, 2, 8)
PYGPUEMU_VECS(unsigned short, ushort, 2, 4, 2, 8)
PYGPUEMU_VECS(int, int, 4, 8, 4, 16)
PYGPUEMU_VECS(unsigned int, uint, 4, 8, 4, 16)
PYGPUEMU_VECS(long, long, 8, 16, 8, 16)
PYGPUEMU_VECS(unsigned long, ulong, 8, 16, 8, 16)
PYGPUEMU_VECS(long long, longlong, 8, 16, 8, 16)
PYGPUEMU_VECS(unsigned long long, ulonglong, 8, 16, 8, 16)
PYGPUEMU_VECS(float, float, 4, 8, 4, 16)
PYGPUEMU_VECS(double, double, 8, 16, 8, 16)

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// ---------------------------------------------------------------------------
// Built-in variables.
#define threadIdx (*reinterpret_cast<const uint3*>(&pygpuemu_cur->tid))
#define blockIdx (*reinterpret_cast<const uint3*>(&pygpuemu_blockIdx))
#define blockDim (*reinterpret_cast<const dim3*>(&pygpuemu_blockDim))
#define gridDim (*reinterpret_cast<const dim3*>(&pygpuemu_gridDim))
static constexpr int warpSize = 32;

// ---------------------------------------------------------------------------
// Synchronization.
static inline void __syncthreads() { pygpuemu_syncthreads(PYGPUEMU_BAR_SYNC, 1); }
static inline int __syncthreads_count(int p) { return pygpuemu_syncthreads(PYGPUEMU_BAR_COUNT, p); }
static inline int __syncthreads_and(int p) { return pygpuemu_syncthreads(PYGPUEMU_BAR_AND, p); }
static inline int __syncthreads_or(int p) { return pygpuemu_syncthreads(PYGPUEMU_BAR_OR, p); }
static inline void __threadfence() { __asm__ __volatile__("" ::: "memory"); }
static inline void __threadfence_block() { __asm__ __volatile__("" ::: "memory"); }
static inline void __threadfence_system() { __asm__ __volatile__("" ::: "memory"); }
static inline void __nanosleep(unsigned int) { pygpuemu_yield(); }
static inline long long clock64() { return pygpuemu_clock64(); }
#define clock() ((long)pygpuemu_clock64())
[[noreturn]] static inline void __trap() { pygpuemu_trap("__trap() called", "?", 0); }
[[noreturn]] static inline void __brkpt() { pygpuemu_trap("__brkpt() called", "?", 0); }
#undef assert
#define assert(e) \
    ((e) ? (void)0 : pygpuemu_trap("device assertion failed: " #e, __FILE__, __LINE__))

// ---------------------------------------------------------------------------
// Warp collectives.
template <class T>
static inline T pygpuemu_shfl(int op, unsigned mask, T var, int arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles take values of at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    bits = pygpuemu_warp(op, mask, bits, arg, width);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
template <class T>
static inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32) {
    return pygpuemu_shfl(PYGPUEMU_W_IDX, mask, var, srcLane, width);
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = 32) {
    return pygpuemu_shfl(PYGPUEMU_W_UP, mask, var, (int)delta, width);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = 32) {
    return pygpuemu_shfl(PYGPUEMU_W_DOWN, mask, var, (int)delta, width);
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32) {
    return pygpuemu_shfl(PYGPUEMU_W_XOR, mask, var, laneMask, width);
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)pygpuemu_warp(PYGPUEMU_W_BALLOT, mask, pred != 0, 0, 32);
}
static inline int __any_sync(unsigned mask, int pred) {
    return (int)pygpuemu_warp(PYGPUEMU_W_ANY, mask, pred != 0, 0, 32);
}
static inline int __all_sync(unsigned mask, int pred) {
    return (int)pygpuemu_warp(PYGPUEMU_W_ALL, mask, pred != 0, 0, 32);
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    pygpuemu_warp(PYGPUEMU_W_SYNC, mask, 0, 0, 32);
}
static inline unsigned __activemask() { return pygpuemu_activemask(); }
static inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
    return (unsigned)pygpuemu_warp(PYGPUEMU_W_RED_ADD, mask, v, 0, 32);
}
static inline int __reduce_add_sync(unsigned mask, int v) {
    return (int)(unsigned)pygpuemu_warp(PYGPUEMU_W_RED_ADD, mask, (unsigned)v, 0, 32);
}
static inline unsigned __reduce_min_sync(unsigned mask, unsigned v) {
    return (unsigned)pygpuemu_warp(PYGPUEMU_W_RED_UMIN, mask, v, 0, 32);
}
static inline int __reduce_min_sync(unsigned mask, int v) {
    return (int)(unsigned)pygpuemu_warp(PYGPUEMU_W_RED_MIN, mask, (unsigned)v, 0, 32);
}
static inline unsigned __reduce_max_sync(unsigned mask, unsigned v) {
    return (unsigned)pygpuemu_warp(PYGPUEMU_W_RED_UMAX, mask, v, 0, 32);
}
static inline int __reduce_max_sync(unsigned mask, int v) {
    return (int)(unsigned)pygpuemu_warp(PYGPUEMU_W_RED_MAX, mask, (unsigned)v, 0, 32);
}
static inline unsigned __reduce_and_sync(unsigned mask, unsigned v) {
    return (unsigned)pygpuemu_warp(PYGPUEMU_W_RED_AND, mask, v, 0, 32);
}
static inline unsigned __reduce_or_sync(unsigned mask, unsigned v) {
    return (unsigned)pygpuemu_warp(PYGPUEMU_W_RED_OR, mask, v, 0, 32);
}
static inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) {
    return (unsigned)pygpuemu_warp(PYGPUEMU_W_RED_XOR, mask, v, 0, 32);
}
template <class T>
static inline unsigned __match_any_sync(unsigned mask, T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "match value");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return (unsigned)pygpuemu_warp(PYGPUEMU_W_MATCH_ANY, mask, bits, 0, 32);
}
template <class T>
static inline unsigned __match_all_sync(unsigned mask, T v, int* pred) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "match value");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    unsigned long long r = pygpuemu_warp(PYGPUEMU_W_MATCH_ALL, mask, bits, 0, 32);
    *pred = (int)(r >> 32);
    return (unsigned)r;
}

// ---------------------------------------------------------------------------
// Atomics.  All threads of a launch run on one OS thread, but the __atomic
// builtins keep them correct even if that ever changes.
#define PYGPUEMU_ATOMIC_INT(T)                                                              \
    static inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); } \
    static inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); } \
    static inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }   \
    static inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); } \
    static inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); } \
    static inline T atomicCAS(T* a, T cmp, T v) {                                           \
        __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);  \
        return cmp;                                                                         \
    }
PYGPUEMU_ATOMIC_INT(int)
PYGPUEMU_ATOMIC_INT(unsigned int)
PYGPUEMU_ATOMIC_INT(unsigned long long)
#undef PYGPUEMU_ATOMIC_INT
static inline unsigned short atomicCAS(unsigned short* a, unsigned short cmp, unsigned short v) {
    __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
static inline int atomicSub(int* a, int v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }
static inline unsigned atomicSub(unsigned* a, unsigned v) {
    return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED);
}
template <class T, class F>
static inline T pygpuemu_atomic_update(T* a, F f) {
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, f(old), false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
    return old;
}
#define PYGPUEMU_ATOMIC_MINMAX(T)                                                            \
    static inline T atomicMax(T* a, T v) {                                                   \
        return pygpuemu_atomic_update(a, [v](T o) { return o < v ? v : o; });                \
    }                                                                                        \
    static inline T atomicMin(T* a, T v) {                                                   \
        return pygpuemu_atomic_update(a, [v](T o) { return v < o ? v : o; });                \
    }
PYGPUEMU_ATOMIC_MINMAX(int)
PYGPUEMU_ATOMIC_MINMAX(unsigned int)
PYGPUEMU_ATOMIC_MINMAX(long long)
PYGPUEMU_ATOMIC_MINMAX(unsigned long long)
#undef PYGPUEMU_ATOMIC_MINMAX
template <class T, class U, class F>
static inline T pygpuemu_atomic_float(T* a, F f) {
    static_assert(sizeof(T) == sizeof(U), "");
    U* p = reinterpret_cast<U*>(a);
    U old = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        T o;
        std::memcpy(&o, &old, sizeof o);
        T n = f(o);
        U nb;
        std::memcpy(&nb, &n, sizeof nb);
        if (__atomic_compare_exchange_n(p, &old, nb, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return o;
    }
}
static inline float atomicAdd(float* a, float v) {
    return pygpuemu_atomic_float<float, unsigned>(a, [v](float o) { return o + v; });
}
static inline double atomicAdd(double* a, double v) {
    return pygpuemu_atomic_float<double, unsigned long long>(a, [v](double o) { return o + v; });
}
static inline float atomicExch(float* a, float v) {
    return pygpuemu_atomic_float<float, unsigned>(a, [v](float) { return v; });
}
static inline unsigned atomicInc(unsigned* a, unsigned v) {
    return pygpuemu_atomic_update(a, [v](unsigned o) { return o >= v ? 0u : o + 1; });
}
static inline unsigned atomicDec(unsigned* a, unsigned v) {
    return pygpuemu_atomic_update(a, [v](unsigned o) { return (o == 0 || o > v) ? v : o - 1; });
}
#define PYGPUEMU_ATOMIC_SCOPES(name)                                                   \
    template <class... A> static inline auto name##_block(A... a) { return name(a...); } \
    template <class... A> static inline auto name##_system(A... a) { return name(a...); }
PYGPUEMU_ATOMIC_SCOPES(atomicAdd)
PYGPUEMU_ATOMIC_SCOPES(atomicSub)
PYGPUEMU_ATOMIC_SCOPES(atomicExch)
PYGPUEMU_ATOMIC_SCOPES(atomicMin)
PYGPUEMU_ATOMIC_SCOPES(atomicMax)
PYGPUEMU_ATOMIC_SCOPES(atomicInc)
PYGPUEMU_ATOMIC_SCOPES(atomicDec)
PYGPUEMU_ATOMIC_SCOPES(atomicCAS)
PYGPUEMU_ATOMIC_SCOPES(atomicAnd)
PYGPUEMU_ATOMIC_SCOPES(atomicOr)
PYGPUEMU_ATOMIC_SCOPES(atomicXor)
#undef PYGPUEMU_ATOMIC_SCOPES

// ---------------------------------------------------------------------------
// min / max as CUDA overloads them (non-templates for equal types so that
// they win over std::min / std::max after `using namespace std`).
#define PYGPUEMU_MINMAX(T)                                        \
    static inline T min(T a, T b) { return b < a ? b : a; }       \
    static inline T max(T a, T b) { return a < b ? b : a; }
PYGPUEMU_MINMAX(int)
PYGPUEMU_MINMAX(unsigned int)
PYGPUEMU_MINMAX(long)
PYGPUEMU_MINMAX(unsigned long)
PYGPUEMU_MINMAX(long long)
PYGPUEMU_MINMAX(unsigned long long)
#undef PYGPUEMU_MINMAX
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
template <class A, class B,
          class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value &&
                                   !std::is_same<A, B>::value>>
static inline auto min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return min(static_cast<C>(a), static_cast<C>(b));
}
template <class A, class B,
          class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value &&
                                   !std::is_same<A, B>::value>>
static inline auto max(A a, B b) {
    using C = std::common_type_t<A, B>;
    return max(static_cast<C>(a), static_cast<C>(b));
}

// ---------------------------------------------------------------------------
// Math (everything in <cmath>/<math.h> is available; these are CUDA extras).
#define CUDART_INF_F __builtin_inff()
#define CUDART_NAN_F __builtin_nanf("")
#define CUDART_INF __builtin_inf()
#define CUDART_NAN __builtin_nan("")
#define CUDART_MIN_DENORM_F 1.40129846e-45f
#define CUDART_MAX_NORMAL_F 3.40282347e+38f
#define CUDART_NEG_ZERO_F (-0.0f)
#define CUDART_ZERO_F 0.0f
#define CUDART_ONE_F 1.0f
#define CUDART_SQRT_HALF_F 0.707106781f
#define CUDART_SQRT_TWO_F 1.414213562f
#define CUDART_PI_F 3.141592654f
#define CUDART_PIO2_F 1.570796327f
#define CUDART_2_OVER_PI_F 0.636619772f
#define CUDART_L2E_F 1.442695041f
#define CUDART_L2T_F 3.321928094f
#define CUDART_LG2_F 0.301029996f
#define CUDART_LGE_F 0.434294482f
#define CUDART_LN2_F 0.693147181f
#define CUDART_LNT_F 2.302585093f
#define CUDART_PI 3.1415926535897931e+0
#define CUDART_PIO2 1.5707963267948966e+0
#define CUDART_SQRT_2PI 2.5066282746310002e+0
#define CUDART_SQRT_HALF 7.0710678118654757e-1
#define CUDART_L2E 1.4426950408889634e+0
#define CUDART_LN2 6.9314718055994529e-1
#define CUDART_ZERO 0.0
#define CUDART_ONE 1.0
#define CUDART_NEG_ZERO (-0.0)

namespace pygpuemu_detail {
// Keeps g++ from contracting an explicitly rounded operation into an FMA.
template <class T>
static inline T opaque(T v) {
    __asm__("" : "+x"(v));
    return v;
}
static inline double erfinv_impl(double y) {
    if (!(y > -1.0 && y < 1.0)) {
        if (y == 1.0) return INFINITY;
        if (y == -1.0) return -INFINITY;
        return NAN;
    }
    // Initial guess (Giles' single-precision approximation), then Newton steps.
    double w = -std::log((1.0 - y) * (1.0 + y)), x;
    if (w < 5.0) {
        w -= 2.5;
        double p = 2.81022636e-08;
        p = 3.43273939e-07 + p * w; p = -3.5233877e-06 + p * w; p = -4.39150654e-06 + p * w;
        p = 0.00021858087 + p * w; p = -0.00125372503 + p * w; p = -0.00417768164 + p * w;
        p = 0.246640727 + p * w; p = 1.50140941 + p * w;
        x = p * y;
    } else {
        w = std::sqrt(w) - 3.0;
        double p = -0.000200214257;
        p = 0.000100950558 + p * w; p = 0.00134934322 + p * w; p = -0.00367342844 + p * w;
        p = 0.00573950773 + p * w; p = -0.0076224613 + p * w; p = 0.00943887047 + p * w;
        p = 1.00167406 + p * w; p = 2.83297682 + p * w;
        x = p * y;
    }
    for (int i = 0; i < 3; i++) {
        double err = std::erf(x) - y;
        x -= err / (1.1283791670955126 * std::exp(-x * x));
    }
    return x;
}
}  // namespace pygpuemu_detail

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
static inline double rcbrt(double x) { return 1.0 / cbrt(x); }
static inline float rhypotf(float x, float y) { return 1.0f / hypotf(x, y); }
static inline double rhypot(double x, double y) { return 1.0 / hypot(x, y); }
static inline float norm3df(float a, float b, float c) { return sqrtf(a * a + b * b + c * c); }
static inline float sinpif_emu(float x) { return (float)std::sin(M_PI * (double)x); }
#define sinpif sinpif_emu
static inline float cospif_emu(float x) { return (float)std::cos(M_PI * (double)x); }
#define cospif cospif_emu
static inline double sinpi_emu(double x) { return std::sin(M_PI * x); }
#define sinpi sinpi_emu
static inline double cospi_emu(double x) { return std::cos(M_PI * x); }
#define cospi cospi_emu
static inline void sincospif(float x, float* s, float* c) { *s = sinpif(x); *c = cospif(x); }
static inline float erfinvf(float y) { return (float)pygpuemu_detail::erfinv_impl(y); }
static inline double erfinv(double y) { return pygpuemu_detail::erfinv_impl(y); }
static inline float erfcinvf(float y) { return (float)pygpuemu_detail::erfinv_impl(1.0 - y); }
static inline double erfcinv(double y) { return pygpuemu_detail::erfinv_impl(1.0 - y); }
static inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
static inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }
static inline float normcdfinvf(float p) {
    return (float)(-1.4142135623730951 * pygpuemu_detail::erfinv_impl(1.0 - 2.0 * p));
}
static inline double normcdfinv(double p) {
    return -1.4142135623730951 * pygpuemu_detail::erfinv_impl(1.0 - 2.0 * p);
}
static inline float fdividef(float a, float b) { return a / b; }

// Fast-math intrinsics: the emulator computes them accurately.  glibc declares
// some of these names itself, hence the macros.
static inline float pygpuemu_fast_expf(float x) { return expf(x); }
static inline float pygpuemu_fast_exp10f(float x) { return powf(10.0f, x); }
static inline float pygpuemu_fast_logf(float x) { return logf(x); }
static inline float pygpuemu_fast_log2f(float x) { return log2f(x); }
static inline float pygpuemu_fast_log10f(float x) { return log10f(x); }
static inline float pygpuemu_fast_powf(float x, float y) { return powf(x, y); }
static inline float pygpuemu_fast_sinf(float x) { return sinf(x); }
static inline float pygpuemu_fast_cosf(float x) { return cosf(x); }
static inline float pygpuemu_fast_tanf(float x) { return tanf(x); }
static inline void pygpuemu_fast_sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
static inline float pygpuemu_fast_tanhf(float x) { return tanhf(x); }
#define __expf pygpuemu_fast_expf
#define __exp10f pygpuemu_fast_exp10f
#define __logf pygpuemu_fast_logf
#define __log2f pygpuemu_fast_log2f
#define __log10f pygpuemu_fast_log10f
#define __powf pygpuemu_fast_powf
#define __sinf pygpuemu_fast_sinf
#define __cosf pygpuemu_fast_cosf
#define __tanf pygpuemu_fast_tanf
#define __sincosf pygpuemu_fast_sincosf
#define __tanhf pygpuemu_fast_tanhf
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }
// Explicitly rounded arithmetic (round-to-nearest only).
static inline float __fadd_rn(float a, float b) { return pygpuemu_detail::opaque(a + b); }
static inline float __fsub_rn(float a, float b) { return pygpuemu_detail::opaque(a - b); }
static inline float __fmul_rn(float a, float b) { return pygpuemu_detail::opaque(a * b); }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static inline double __dadd_rn(double a, double b) { return pygpuemu_detail::opaque(a + b); }
static inline double __dsub_rn(double a, double b) { return pygpuemu_detail::opaque(a - b); }
static inline double __dmul_rn(double a, double b) { return pygpuemu_detail::opaque(a * b); }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline double __drcp_rn(double x) { return 1.0 / x; }
static inline double __dsqrt_rn(double x) { return sqrt(x); }

// ---------------------------------------------------------------------------
// Conversions and reinterpretation.
namespace pygpuemu_detail {
template <class I, class F>
static inline I cvt_sat(F v) {
    if (v != v) return 0;
    if (v <= (F)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
    if (v >= (F)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
    return (I)v;
}
template <class To, class From>
static inline To bits(From v) {
    static_assert(sizeof(To) == sizeof(From), "");
    To r;
    std::memcpy(&r, &v, sizeof r);
    return r;
}
}  // namespace pygpuemu_detail
#define PYGPUEMU_CVT(NAME, I, F, ROUND) \
    static inline I NAME(F v) { return pygpuemu_detail::cvt_sat<I, F>(ROUND(v)); }
PYGPUEMU_CVT(__float2int_rn, int, float, nearbyintf)
PYGPUEMU_CVT(__float2int_rz, int, float, truncf)
PYGPUEMU_CVT(__float2int_rd, int, float, floorf)
PYGPUEMU_CVT(__float2int_ru, int, float, ceilf)
PYGPUEMU_CVT(__float2uint_rn, unsigned int, float, nearbyintf)
PYGPUEMU_CVT(__float2uint_rz, unsigned int, float, truncf)
PYGPUEMU_CVT(__float2uint_rd, unsigned int, float, floorf)
PYGPUEMU_CVT(__float2uint_ru, unsigned int, float, ceilf)
PYGPUEMU_CVT(__float2ll_rn, long long, float, nearbyintf)
PYGPUEMU_CVT(__float2ll_rz, long long, float, truncf)
PYGPUEMU_CVT(__float2ull_rn, unsigned long long, float, nearbyintf)
PYGPUEMU_CVT(__float2ull_rz, unsigned long long, float, truncf)
PYGPUEMU_CVT(__double2int_rn, int, double, nearbyint)
PYGPUEMU_CVT(__double2int_rz, int, double, trunc)
PYGPUEMU_CVT(__double2int_rd, int, double, floor)
PYGPUEMU_CVT(__double2int_ru, int, double, ceil)
PYGPUEMU_CVT(__double2uint_rn, unsigned int, double, nearbyint)
PYGPUEMU_CVT(__double2uint_rz, unsigned int, double, trunc)
PYGPUEMU_CVT(__double2ll_rn, long long, double, nearbyint)
PYGPUEMU_CVT(__double2ll_rz, long long, double, trunc)
#undef PYGPUEMU_CVT
static inline float __int2float_rn(int v) { return (float)v; }
static inline float __uint2float_rn(unsigned v) { return (float)v; }
static inline float __ll2float_rn(long long v) { return (float)v; }
static inline float __ull2float_rn(unsigned long long v) { return (float)v; }
static inline double __int2double_rn(int v) { return (double)v; }
static inline double __uint2double_rn(unsigned v) { return (double)v; }
static inline double __ll2double_rn(long long v) { return (double)v; }
static inline float __double2float_rn(double v) { return (float)v; }
static inline int __float_as_int(float v) { return pygpuemu_detail::bits<int>(v); }
static inline unsigned __float_as_uint(float v) { return pygpuemu_detail::bits<unsigned>(v); }
static inline float __int_as_float(int v) { return pygpuemu_detail::bits<float>(v); }
static inline float __uint_as_float(unsigned v) { return pygpuemu_detail::bits<float>(v); }
static inline long long __double_as_longlong(double v) {
    return pygpuemu_detail::bits<long long>(v);
}
static inline double __longlong_as_double(long long v) { return pygpuemu_detail::bits<double>(v); }
static inline int __double2hiint(double v) { return (int)(__double_as_longlong(v) >> 32); }
static inline int __double2loint(double v) { return (int)__double_as_longlong(v); }
static inline double __hiloint2double(int hi, int lo) {
    return __longlong_as_double((long long)(((unsigned long long)(unsigned)hi << 32) |
                                            (unsigned)lo));
}

// ---------------------------------------------------------------------------
// Integer intrinsics.
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
    return __builtin_bswap32(x);
}
static inline unsigned long long __brevll(unsigned long long x) {
    return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) {
        unsigned sel = (s >> (4 * i)) & 7;
        r |= (unsigned)((v >> (8 * sel)) & 0xff) << (8 * i);
    }
    return r;
}
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
static inline long long __mul64hi(long long a, long long b) {
    return (long long)(((__int128)a * b) >> 64);
}
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __mul24(int a, int b) {
    return (int)((long long)((a << 8) >> 8) * (long long)((b << 8) >> 8));
}
static inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffff) * (b & 0xffffff); }
static inline int __hadd(int a, int b) { return (int)(((long long)a + b) >> 1); }
static inline int __rhadd(int a, int b) { return (int)(((long long)a + b + 1) >> 1); }
static inline unsigned __uhadd(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a + b) >> 1);
}
static inline unsigned __urhadd(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a + b + 1) >> 1);
}
static inline unsigned __sad(int a, int b, unsigned c) {
    return c + (unsigned)(a > b ? (long long)a - b : (long long)b - a);
}
static inline unsigned __usad(unsigned a, unsigned b, unsigned c) {
    return c + (a > b ? a - b : b - a);
}
static inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)((v << (s & 31)) >> 32);
}
static inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)((v << (s > 32 ? 32 : s)) >> 32);
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)(v >> (s & 31));
}
static inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)(v >> (s > 32 ? 32 : s));
}
static inline int __dp4a(int a, int b, int c) {
    int r = c;
    for (int i = 0; i < 4; i++)
        r += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return r;
}
static inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    unsigned r = c;
    for (int i = 0; i < 4; i++) r += ((a >> (8 * i)) & 0xff) * ((b >> (8 * i)) & 0xff);
    return r;
}
static inline int __dp4a(char4 a, char4 b, int c) {
    return c + a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}
static inline unsigned __dp4a(uchar4 a, uchar4 b, unsigned c) {
    return c + (unsigned)a.x * b.x + (unsigned)a.y * b.y + (unsigned)a.z * b.z +
           (unsigned)a.w * b.w;
}
static inline int __dp2a_lo(int a, int b, int c) {
    return c + (int)(short)a * (int)(signed char)b + (int)(short)(a >> 16) * (int)(signed char)(b >> 8);
}
static inline int __dp2a_hi(int a, int b, int c) {
    return c + (int)(short)a * (int)(signed char)(b >> 16) +
           (int)(short)(a >> 16) * (int)(signed char)(b >> 24);
}

// ---------------------------------------------------------------------------
// Cache-hinted loads/stores and address-space helpers.
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class T> static inline T __ldca(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
template <class T> static inline T __ldlu(const T* p) { return *p; }
template <class T> static inline T __ldcv(const T* p) { return *p; }
template <class T> static inline void __stwb(T* p, T v) { *p = v; }
template <class T> static inline void __stcg(T* p, T v) { *p = v; }
template <class T> static inline void __stcs(T* p, T v) { *p = v; }
template <class T> static inline void __stwt(T* p, T v) { *p = v; }
static inline size_t __cvta_generic_to_shared(const void* p) { return (size_t)p; }
static inline size_t __cvta_generic_to_global(const void* p) { return (size_t)p; }
static inline void* __cvta_shared_to_generic(size_t a) { return (void*)a; }
static inline void* __cvta_global_to_generic(size_t a) { return (void*)a; }

// ---------------------------------------------------------------------------
// Kernel registration (used by the generated glue appended after the source).
namespace pygpuemu_detail {
enum TypeCode {
    T_OTHER = 0, T_VOID = 1, T_BOOL = 2, T_I8 = 3, T_U8 = 4, T_I16 = 5, T_U16 = 6, T_I32 = 7,
    T_U32 = 8, T_I64 = 9, T_U64 = 10, T_F32 = 11, T_F64 = 12, T_CHAR = 13, T_PTRVAL = 14,
    T_POINTER = 0x100
};
template <class T, class = void> struct code_of { static constexpr int value = T_OTHER; };
template <> struct code_of<void> { static constexpr int value = T_VOID; };
template <> struct code_of<bool> { static constexpr int value = T_BOOL; };
template <> struct code_of<char> { static constexpr int value = T_CHAR; };
template <> struct code_of<signed char> { static constexpr int value = T_I8; };
template <> struct code_of<unsigned char> { static constexpr int value = T_U8; };
template <> struct code_of<short> { static constexpr int value = T_I16; };
template <> struct code_of<unsigned short> { static constexpr int value = T_U16; };
template <> struct code_of<int> { static constexpr int value = T_I32; };
template <> struct code_of<unsigned> { static constexpr int value = T_U32; };
template <> struct code_of<long> { static constexpr int value = sizeof(long) == 8 ? T_I64 : T_I32; };
template <> struct code_of<unsigned long> {
    static constexpr int value = sizeof(long) == 8 ? T_U64 : T_U32;
};
template <> struct code_of<long long> { static constexpr int value = T_I64; };
template <> struct code_of<unsigned long long> { static constexpr int value = T_U64; };
template <> struct code_of<float> { static constexpr int value = T_F32; };
template <> struct code_of<double> { static constexpr int value = T_F64; };
#define PYGPUEMU_VEC_CODE(N, T) \
    template <> struct code_of<N##1> { static constexpr int value = code_of<T>::value; }; \
    template <> struct code_of<N##2> { static constexpr int value = code_of<T>::value; }; \
    template <> struct code_of<N##3> { static constexpr int value = code_of<T>::value; }; \
    template <> struct code_of<N##4> { static constexpr int value = code_of<T>::value; };
PYGPUEMU_VEC_CODE(char, signed char)
PYGPUEMU_VEC_CODE(uchar, unsigned char)
PYGPUEMU_VEC_CODE(short, short)
PYGPUEMU_VEC_CODE(ushort, unsigned short)
PYGPUEMU_VEC_CODE(int, int)
PYGPUEMU_VEC_CODE(uint, unsigned)
PYGPUEMU_VEC_CODE(long, long)
PYGPUEMU_VEC_CODE(ulong, unsigned long)
PYGPUEMU_VEC_CODE(longlong, long long)
PYGPUEMU_VEC_CODE(ulonglong, unsigned long long)
PYGPUEMU_VEC_CODE(float, float)
PYGPUEMU_VEC_CODE(double, double)
#undef PYGPUEMU_VEC_CODE
template <class T> struct param_code {
    // By value: vector types and other structs are passed as raw bytes.
    static constexpr int value =
        (std::is_class<T>::value || std::is_union<T>::value) ? T_OTHER : code_of<T>::value;
};
template <class T> struct param_code<T*> {
    using P = std::remove_cv_t<T>;
    static constexpr int value = T_POINTER | (std::is_pointer<P>::value ? T_PTRVAL : code_of<P>::value);
};
template <class T> static const char* type_name() {
    // "... [with T = float*]" -> the text after "T = ".
    return __PRETTY_FUNCTION__;
}

struct KernelEntry {
    const char* name;
    void (*tramp)(void**);
    int nparams;
    const int* codes;
    const int* sizes;
    const char* const* type_names;
    int launch_bounds;
    // The kernel itself: taking its address keeps an out-of-line copy whose
    // symbol names the kernel's __shared__ variables (function-local statics
    // _ZZ<its mangled name>E...), so their sizes can be read from the ELF
    // symbol table.
    const void* kernel;
};

template <class F> struct sig;
template <class... A> struct sig<void (*)(A...)> {
    static constexpr int n = sizeof...(A);
    static constexpr int codes[sizeof...(A) + 1] = {param_code<A>::value..., -1};
    static constexpr int sizes[sizeof...(A) + 1] = {(int)sizeof(A)..., 0};
    static const char* const* names() {
        static const char* const v[sizeof...(A) + 1] = {type_name<A>()..., nullptr};
        return v;
    }
    template <void (*F)(A...), size_t... I>
    static void call(void** a, std::index_sequence<I...>) {
        F(*static_cast<A*>(a[I])...);
    }
};
template <auto F> static void tramp(void** a) {
    using S = sig<decltype(F)>;
    S::template call<F>(a, std::make_index_sequence<S::n>{});
}
template <auto F> static KernelEntry entry(const char* name, int launch_bounds) {
    using S = sig<decltype(F)>;
    return KernelEntry{name,      &tramp<F>,     S::n,
                       S::codes,  S::sizes,      S::names(),
                       launch_bounds, reinterpret_cast<const void*>(F)};
}
template <class F> struct is_kernel_ptr : std::false_type {};
template <class... A> struct is_kernel_ptr<void (*)(A...)> : std::true_type {};
}  // namespace pygpuemu_detail

#endif  // PYGPUEMU_PRELUDE_H
