// Helpers shared by the softmax kernels (cuda_src/softmax/*.cu).
//
// Semantics (PyTorch's): the row max m is subtracted before exp; a -inf entry
// gives 0; a row of only -inf gives NaN (exp(-inf - -inf) = exp(NaN)); a +inf
// entry makes the whole row NaN (inf - inf in the sum); a NaN entry makes the
// whole row NaN. The explicit three-pass kernels get this for free from
// NaN-propagating max and IEEE arithmetic; the online (max, sum) update needs
// the guards written out in online_add / online_merge below.
//
// 128-bit accesses (Pack, row_head, online_add_pack): the warp and block
// kernels cut a row into a scalar head up to the first 16-byte boundary of x,
// whole 16-byte packs (float4 / double2 loads), and a scalar tail. The head
// depends only on x's address, so any row length and any offset works; y gets
// 128-bit stores where it has the same address modulo 16 as x (always, for
// the wrappers' fresh outputs and contiguous inputs; an offset view of the
// input is the exception), else four (two) scalar stores per pack. Elements
// must be aligned to their size, which every typed array is.
#pragma once

// -inf without <math.h> (NVRTC has no INFINITY macro).
template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>()
{
    return __longlong_as_double((long long)0xfff0000000000000ULL);
}

__device__ __forceinline__ float sm_exp(float x) { return expf(x); }
__device__ __forceinline__ double sm_exp(double x) { return exp(x); }
__device__ __forceinline__ float sm_log(float x) { return logf(x); }
__device__ __forceinline__ double sm_log(double x) { return log(x); }

// 16 bytes of T, moved by one 128-bit load or store (LDG.128 / STG.128).
template <typename T> struct Pack;
template <> struct Pack<float> {
    static constexpr int N = 4;
    float e[4];
    __device__ __forceinline__ static Pack load(const float* p)
    {
        const float4 v = *reinterpret_cast<const float4*>(p);
        return {{v.x, v.y, v.z, v.w}};
    }
    __device__ __forceinline__ void store(float* p) const
    {
        *reinterpret_cast<float4*>(p) = make_float4(e[0], e[1], e[2], e[3]);
    }
};
template <> struct Pack<double> {
    static constexpr int N = 2;
    double e[2];
    __device__ __forceinline__ static Pack load(const double* p)
    {
        const double2 v = *reinterpret_cast<const double2*>(p);
        return {{v.x, v.y}};
    }
    __device__ __forceinline__ void store(double* p) const
    {
        *reinterpret_cast<double2*>(p) = make_double2(e[0], e[1]);
    }
};

// Stores pack v at p: one 128-bit store when vec (p is 16-byte aligned),
// else element by element.
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& v, bool vec)
{
    if (vec) {
        v.store(p);
    } else {
#pragma unroll
        for (int j = 0; j < Pack<T>::N; ++j)
            p[j] = v.e[j];
    }
}

// Elements of a row of n at x before its first 16-byte boundary (at most
// Pack<T>::N - 1, and at most n).
template <typename T>
__device__ __forceinline__ int row_head(const T* x, int n)
{
    const int h = (int)((16u - ((unsigned)reinterpret_cast<unsigned long long>(x) & 15u)) & 15u) / (int)sizeof(T);
    return h < n ? h : n;
}

// Whether y can take 128-bit stores wherever x takes 128-bit loads.
template <typename T>
__device__ __forceinline__ bool same_alignment(const T* x, const T* y)
{
    return ((reinterpret_cast<unsigned long long>(x) ^ reinterpret_cast<unsigned long long>(y)) & 15ull) == 0;
}

// Row xr (output yr) of n elements cut into head, nvec packs and tail: the
// packs are xb[c * N .. c * N + N - 1] (yb likewise); the tail follows them.
// vecY: y takes 128-bit stores (same_alignment of the arrays x and y, which
// every row shares, since rows of x and y are the same offsets apart).
template <typename T>
struct RowPacks {
    static constexpr int N = Pack<T>::N;
    int head, nvec, tail;
    bool vecY;
    const T* xb;
    T* yb;
    __device__ __forceinline__ RowPacks(const T* x, const T* y, const T* xr, T* yr, int n)
        : head(row_head(xr, n)), nvec((n - head) / N), tail(n - head - nvec * N),
          vecY(same_alignment(x, y)), xb(xr + head), yb(yr + head) {}
};

// max that propagates NaN from either side (fmaxf would drop it).
template <typename T>
__device__ __forceinline__ T nan_max(T a, T b)
{
    return (a != a || a > b) ? a : b;
}

// One element x folded into the running (m, s): m is the largest non-NaN value
// seen so far (-inf when none), s = sum exp(seen - m). A NaN never becomes m;
// it poisons s instead, which makes every output of the row NaN.
template <typename T>
__device__ __forceinline__ void online_add(T& m, T& s, T x)
{
    if (x > m) {
        // New running max: rescale the old sum. With m == -inf, exp(-inf) = 0
        // and s is 0. x - x + 1 is 1 for finite x and NaN for x = +inf, which
        // is what exp(x - x) would give, without a second exp.
        s = s * sm_exp(m - x) + (x - x + T(1));
        m = x;
    } else if (x != neg_inf<T>()) {
        // x <= m, or x is NaN (then exp(NaN) poisons s, as intended).
        s += sm_exp(x - m);
    }
    // x == -inf adds exp(-inf) = 0. Skipping it is also the guard for the
    // all -inf prefix, where m == -inf and exp(x - m) would be exp(NaN).
}

// A pack of elements folded into (m, s) with the result of online_add on each
// in turn (up to rounding), but one rescale per pack instead of a branch per
// element. pm, the largest non-NaN element, goes through fmax, which drops
// NaN: m never becomes NaN. Rescale only when pm > m: exp(m - pm) is 0 for
// m == -inf, and NaN * 0 keeps a poisoned s. A -inf element adds nothing (and
// skipping it guards the all -inf prefix, m == -inf, where exp(x - m) would
// be NaN); a NaN element adds exp(NaN): the row's outputs are NaN; a +inf
// element becomes m and adds exp(inf - inf) = NaN.
template <typename T, int N>
__device__ __forceinline__ void online_add_pack(T& m, T& s, const T (&x)[N])
{
    T pm = x[0];
#pragma unroll
    for (int j = 1; j < N; ++j)
        pm = fmax(pm, x[j]);
    if (pm > m) {
        s *= sm_exp(m - pm);
        m = pm;
    }
#pragma unroll
    for (int j = 0; j < N; ++j) {
        const T e = sm_exp(x[j] - m);
        s += x[j] == neg_inf<T>() ? T(0) : e;
    }
}

// Merge partial state (m2, s2) into (m, s); either side may be empty (-inf, 0).
template <typename T>
__device__ __forceinline__ void online_merge(T& m, T& s, T m2, T s2)
{
    const T mn = m > m2 ? m : m2;  // m, m2 are never NaN (see online_add)
    if (mn == neg_inf<T>()) {
        // Both sides empty or all -inf: exp(-inf - -inf) would be NaN; the
        // sum stays 0 (rescale guard of the online algorithm).
        s = s + s2;
    } else {
        s = s * sm_exp(m - mn) + s2 * sm_exp(m2 - mn);
    }
    m = mn;
}

// The output for entry x of a row with max m and (rescaled) sum s.
template <typename T, bool LOG>
__device__ __forceinline__ T softmax_out(T x, T m, T s_or_inv)
{
    // LOG: s_or_inv is log(s), the log-sum-exp relative to m.
    // else: s_or_inv is 1 / s.
    return LOG ? (x - m) - s_or_inv : sm_exp(x - m) * s_or_inv;
}

// Correctly rounded reciprocals as intrinsics: a plain 1 / s compiles to a
// division whose slow path is a subroutine call, and the registers live
// across that call (a whole row in the warp kernel) would be spilled.
__device__ __forceinline__ float sm_rcp(float x) { return __frcp_rn(x); }
__device__ __forceinline__ double sm_rcp(double x) { return __drcp_rn(x); }

template <typename T, bool LOG>
__device__ __forceinline__ T softmax_scale(T s)
{
    return LOG ? sm_log(s) : sm_rcp(s);
}

// Butterfly reductions over groups of WIDTH lanes (WIDTH a power of two <= 32);
// every lane of the group ends with the result. All 32 lanes must call them.
template <int WIDTH, typename T>
__device__ __forceinline__ T warp_max(T v)
{
#pragma unroll
    for (int off = WIDTH / 2; off > 0; off /= 2)
        v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, off, WIDTH));
    return v;
}

template <int WIDTH, typename T>
__device__ __forceinline__ T warp_sum(T v)
{
#pragma unroll
    for (int off = WIDTH / 2; off > 0; off /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, off, WIDTH);
    return v;
}

template <int WIDTH, typename T>
__device__ __forceinline__ void warp_online_merge(T& m, T& s)
{
#pragma unroll
    for (int off = WIDTH / 2; off > 0; off /= 2) {
        const T m2 = __shfl_xor_sync(0xffffffffu, m, off, WIDTH);
        const T s2 = __shfl_xor_sync(0xffffffffu, s, off, WIDTH);
        online_merge(m, s, m2, s2);
    }
}
