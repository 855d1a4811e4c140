// Rows of a table by index, for the numpy backend's embedding / gather on axis 0
// (pygpu_ops/indexing.py): out[i] = data[ids[i]] for every id, a row being row_bytes bytes.
// Ids follow ONNX Gather: -dim <= id < dim, a negative one counted from the end. The ids are
// checked first, serially (a few thousand compares); with a bad one nothing is copied and its
// position is returned, else -1. Then the rows are copied with memcpy, the ids split over the
// threads.
#include "common.h"

namespace {

constexpr int64_t PREFETCH = 4;

template <typename I>
int64_t gather(const uint8_t* __restrict data, const I* __restrict ids, int64_t n, int64_t dim,
               int64_t row_bytes, uint8_t* __restrict out, int32_t nt) {
    for (int64_t i = 0; i < n; ++i)
        if (ids[i] < -dim || ids[i] >= dim) return i;
    pygpu::parallel_rows(0, n, nt, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) {
            // the rows are scattered over the table, so the hardware prefetcher cannot see the
            // next one coming: ask for the row PREFETCH ids ahead while this one is copied
            if (i + PREFETCH < b) {
                const int64_t q = ids[i + PREFETCH] < 0 ? ids[i + PREFETCH] + dim : ids[i + PREFETCH];
                const uint8_t* src = data + q * row_bytes;
                for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(src + off);
            }
            const int64_t r = ids[i] < 0 ? ids[i] + dim : ids[i];
            std::memcpy(out + i * row_bytes, data + r * row_bytes, static_cast<size_t>(row_bytes));
        }
    });
    return -1;
}

}  // namespace

PYGPU_EXPORT int64_t gather_rows_i32(const uint8_t* data, const int32_t* ids, int64_t n, int64_t dim,
                                     int64_t row_bytes, uint8_t* out, int32_t nt) {
    return gather(data, ids, n, dim, row_bytes, out, nt);
}

PYGPU_EXPORT int64_t gather_rows_i64(const uint8_t* data, const int64_t* ids, int64_t n, int64_t dim,
                                     int64_t row_bytes, uint8_t* out, int32_t nt) {
    return gather(data, ids, n, dim, row_bytes, out, nt);
}
