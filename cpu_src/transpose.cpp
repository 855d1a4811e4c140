// Batched 2-D transpose of the numpy backend, (B, R, S) -> (B, S, R), for NCHW <-> NHWC: in
// tiles of T x T elements, so that both the reads (rows of the source) and the writes (rows of
// the destination) touch T consecutive elements of a few cache lines at a time, where a strided
// NumPy copy walks one of the two a whole row apart per element. Elements are moved as unsigned
// words of their size, so any dtype of that size keeps its bits. The B * R source rows are split
// over the threads.
#include "common.h"

namespace {

constexpr int64_t T = 16;

template <typename U>
void transpose_rows(const U* __restrict x, U* __restrict y, int64_t R, int64_t S, int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1;) {
        const int64_t b = g / R, r0 = g % R;
        int64_t r1 = r0 + T < R ? r0 + T : R;
        if (r1 - r0 > g1 - g) r1 = r0 + (g1 - g);
        const U* xb = x + b * R * S;
        U* yb = y + b * R * S;
        for (int64_t s0 = 0; s0 < S; s0 += T) {
            const int64_t s1 = s0 + T < S ? s0 + T : S;
            for (int64_t s = s0; s < s1; ++s)
                for (int64_t r = r0; r < r1; ++r) yb[s * R + r] = xb[r * S + s];
        }
        g += r1 - r0;
    }
}

}  // namespace

PYGPU_EXPORT void transpose_u8(const uint8_t* x, uint8_t* y, int64_t R, int64_t S, int64_t rows, int32_t nt) {
    pygpu::parallel_rows(0, rows, nt, [&](int64_t a, int64_t b) { transpose_rows(x, y, R, S, a, b); });
}
PYGPU_EXPORT void transpose_u16(const uint16_t* x, uint16_t* y, int64_t R, int64_t S, int64_t rows, int32_t nt) {
    pygpu::parallel_rows(0, rows, nt, [&](int64_t a, int64_t b) { transpose_rows(x, y, R, S, a, b); });
}
PYGPU_EXPORT void transpose_u32(const uint32_t* x, uint32_t* y, int64_t R, int64_t S, int64_t rows, int32_t nt) {
    pygpu::parallel_rows(0, rows, nt, [&](int64_t a, int64_t b) { transpose_rows(x, y, R, S, a, b); });
}
PYGPU_EXPORT void transpose_u64(const uint64_t* x, uint64_t* y, int64_t R, int64_t S, int64_t rows, int32_t nt) {
    pygpu::parallel_rows(0, rows, nt, [&](int64_t a, int64_t b) { transpose_rows(x, y, R, S, a, b); });
}
