// Batched 2-D transpose through a shared-memory tile: NCHW <-> NHWC.
//
// x is (B, R, S) row-major, y = x transposed per batch, (B, S, R).
//  * NCHW -> NHWC: B = N, R = C, S = H * W;
//  * NHWC -> NCHW: B = N, R = H * W, S = C.
// A naive transpose makes either the loads or the stores strided (one 32-byte
// sector per element). Here a 32 x 32 tile is read with consecutive threads
// on consecutive columns of x (coalesced), parked in shared memory, and
// written with consecutive threads on consecutive columns of y (coalesced).
// The tile rows are 33 elements long: the column-wise reads of the second
// phase then fall into 32 different banks instead of one (for 4-byte
// elements; 8-byte elements span two banks and still spread evenly).
// Memory traffic: reads n, writes n elements.
//
// Launch: block (32, 8): each thread moves 4 elements of a tile; grid
// (ceil_div(S, 32), min(ceil_div(R, 32), 65535), min(B, 65535)). The y and z
// grid dimensions are capped, so the kernel loops over the tile rows and
// batches beyond them (loop bounds depend only on blockIdx, so every thread
// of a block reaches the same barriers). Indices are 64-bit: B * R * S may
// pass 2^31. Any R, S >= 1 (partial tiles are bounds-checked).
// T is an unsigned integer type of the element size (1, 2, 4 or 8 bytes): a
// transpose only moves bits.

constexpr int TILE = 32;
constexpr int ROWS = 8;  // block is TILE x ROWS threads

template <typename T>
__global__ void __launch_bounds__(TILE * ROWS) transpose_tiled(
    const T* __restrict__ x, T* __restrict__ y, long long B, long long R, long long S)
{
    __shared__ T tile[TILE][TILE + 1];
    const long long s0 = (long long)blockIdx.x * TILE;
    const long long tilesR = (R + TILE - 1) / TILE;
    const int tx = (int)threadIdx.x, ty = (int)threadIdx.y;

    for (long long b = blockIdx.z; b < B; b += gridDim.z) {
        const T* xb = x + b * R * S;
        T* yb = y + b * R * S;
        for (long long tr = blockIdx.y; tr < tilesR; tr += gridDim.y) {
            const long long r0 = tr * TILE;
            // Load: thread (tx, ty) reads x[r0 + ty + k][s0 + tx].
#pragma unroll
            for (int k = 0; k < TILE; k += ROWS) {
                const long long r = r0 + ty + k, s = s0 + tx;
                if (r < R && s < S)
                    tile[ty + k][tx] = xb[r * S + s];
            }
            // The tile must be complete before threads read columns that
            // other threads wrote.
            __syncthreads();
            // Store: thread (tx, ty) writes y[s0 + ty + k][r0 + tx].
#pragma unroll
            for (int k = 0; k < TILE; k += ROWS) {
                const long long s = s0 + ty + k, r = r0 + tx;
                if (r < R && s < S)
                    yb[s * R + r] = tile[tx][ty + k];
            }
            // Everyone has read the tile before the next iteration of the
            // loops overwrites it.
            __syncthreads();
        }
    }
}
