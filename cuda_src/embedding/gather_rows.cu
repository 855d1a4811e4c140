// Row gather: out[o, j, :] = table[o, wrap(ids[j]), :], the kernel behind
// embedding() and ONNX Gather on any axis.
//
// The table is viewed as (outer, dim, inner): the axis gathered along is
// `dim`, everything before it is `outer`, everything after it is one row of
// `row_bytes = inner * itemsize` contiguous bytes. An embedding lookup is
// outer = 1 (a (vocab, d) table, rows of d elements); Gather on axis k of
// shape s is outer = prod(s[:k]), dim = s[k], inner = prod(s[k+1:]).
// ids (n_ids,) are any int32 / int64 array flattened; out is
// (outer, n_ids, inner), C-contiguous.
//
// Negative ids count from the end (ONNX: -dim <= id < dim). An id outside
// that range is never dereferenced: its row is left unwritten and the
// smallest position j holding a bad id is recorded with atomicMin in *bad,
// which the host sets to ULLONG_MAX before the launch and reads after it
// (the host then raises, naming the bad value). The smallest position, not
// "some" position, so the error message is the same on every backend and
// every run.
//
// Copies move bits: the element dtype does not matter, only the row's bytes.
// Chunk is the widest unit that divides row_bytes and to which both base
// pointers are aligned: uint4 (16 bytes, one 128-bit load and store per
// thread) for the usual rows (d a multiple of 4 float32 / 2 float64 in fresh
// allocations), else uint2, unsigned int, unsigned short or unsigned char.
// The host picks it (indexing.chunk_bytes); every row then starts on a
// Chunk boundary because row_bytes is a multiple of sizeof(Chunk).
//
// Memory traffic: reads n_ids ids (broadcast to the threads of a row) plus
// outer * n_ids * row_bytes table bytes, writes as many output bytes; no
// reuse, bandwidth bound. A warp covers one row (or
// several short ones), so the row reads and writes are contiguous 16-byte
// accesses: 512 bytes per warp instruction on the uint4 path.
//
// Launch (indexing.launch_config): block (bx, by), bx threads along a
// row's chunks (the power of two >= row_chunks, at most 256), by = 256 / bx
// ids per block, so short rows do not leave most threads idle; grid (chunks,
// ids, outer slices), each axis a grid-stride loop, so any grid covers any
// size and no index is split with a (64-bit, slow) division. Each thread
// reads its id once for all the outer slices it copies. Offsets are 64-bit
// (tables above 2^31 elements are fine).

template <typename Chunk, typename Index>
__global__ void gather_rows(const unsigned char* __restrict__ table_bytes,
                            const Index* __restrict__ ids,
                            unsigned char* __restrict__ out_bytes,
                            long long outer, long long n_ids, long long dim,
                            long long row_chunks, unsigned long long* __restrict__ bad)
{
    const Chunk* __restrict__ table = reinterpret_cast<const Chunk*>(table_bytes);
    Chunk* __restrict__ out = reinterpret_cast<Chunk*>(out_bytes);
    const long long id_step = (long long)gridDim.y * blockDim.y;
    const long long col_step = (long long)gridDim.x * blockDim.x;
    // One thread per id reports a bad one; the others of its row just skip it.
    const bool reporter = threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.z == 0;
    for (long long j = (long long)blockIdx.y * blockDim.y + threadIdx.y; j < n_ids; j += id_step) {
        long long id = (long long)ids[j];
        if (id < 0)
            id += dim;
        if (id < 0 || id >= dim) {
            // Checked before the outer loop, so ids are checked even when outer == 0.
            if (reporter)
                atomicMin(bad, (unsigned long long)j);
            continue;
        }
        for (long long o = blockIdx.z; o < outer; o += gridDim.z) {
            const Chunk* __restrict__ src = table + (o * dim + id) * row_chunks;
            Chunk* __restrict__ dst = out + (o * n_ids + j) * row_chunks;
            for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < row_chunks; c += col_step)
                dst[c] = src[c];
        }
    }
}
