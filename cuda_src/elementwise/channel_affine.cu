// Inference batch normalization as a channel-wise affine map.
//
// batch_norm_params: per channel c, in double precision whatever T is,
//   a[c] = scale[c] / sqrt(var[c] + eps),  b[c] = bias[c] - mean[c] * a[c],
// each rounded once to T. IEEE double sqrt and division are correctly
// rounded on the GPU and on the host, so these are the bits a float64 NumPy
// computation gives; computing them here keeps a CUDA call free of host
// round trips. A var + eps below 0 gives NaN (as numpy.sqrt).
//
// channel_affine: y = a[c] * x + b[c], as two rounded operations in T
// (__fmul_rn / __fadd_rn are never contracted into an FMA), so the NumPy
// fallback's `x * a + b` is the same bits on every backend.
//
// Shapes: x and y C-contiguous of the same shape, seen as (rows, inner):
//  * channel_last == 0 (NCHW, or any rank >= 2 with channels at axis 1):
//    rows = N * C, inner = prod(spatial); row r has channel r % C;
//  * channel_last == 1 (NHWC): rows = N * H * W, inner = C; column j is
//    channel j.
// a and b are (C,). Any size (64-bit indices).
//
// Memory traffic: reads n and writes n elements of x / y, plus 2C
// parameters that stay in cache. One 64-bit division per row (NCHW), none
// per element.
//
// Launch: batch_norm_params: 1-D, one thread per channel (grid-stride);
// channel_affine: block (bx, by) = 256 threads with bx the power of two >=
// inner (at most 256), grid (min(ceil(inner / bx), 65536),
// min(ceil(rows / by), 65535)) with grid-stride loops
// (elementwise.rows_launch).

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// scale, bias, mean, var (C,) -> ab (2, C): ab[0] = a, ab[1] = b.
// bias - mean * a is written with __dmul_rn / __dsub_rn: nvcc (and g++ for
// the emulator) would otherwise contract it into one FMA, a different
// rounding from NumPy's.
template <typename T>
__global__ void batch_norm_params(const T* __restrict__ scale, const T* __restrict__ bias,
                                  const T* __restrict__ mean, const T* __restrict__ var,
                                  double eps, T* __restrict__ ab, long long C)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += step) {
        const double a = (double)scale[c] / sqrt(__dadd_rn((double)var[c], eps));
        ab[c] = (T)a;
        ab[C + c] = (T)__dsub_rn((double)bias[c], __dmul_rn((double)mean[c], a));
    }
}

// x (rows, inner) -> y (rows, inner), y = ab[0][c] * x + ab[1][c].
template <typename T>
__global__ void channel_affine(
    const T* __restrict__ x, const T* __restrict__ ab, T* __restrict__ y,
    long long rows, long long inner, long long C, int channel_last)
{
    const long long j0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long jstep = (long long)gridDim.x * blockDim.x;
    const long long rstep = (long long)gridDim.y * blockDim.y;
    for (long long r = (long long)blockIdx.y * blockDim.y + threadIdx.y; r < rows; r += rstep) {
        const T* xr = x + r * inner;
        T* yr = y + r * inner;
        if (channel_last) {
            for (long long j = j0; j < inner; j += jstep)
                yr[j] = add_rn(mul_rn(ab[j], xr[j]), ab[C + j]);
        } else {
            const long long c = r % C;
            const T a = ab[c], b = ab[C + c];
            for (long long j = j0; j < inner; j += jstep)
                yr[j] = add_rn(mul_rn(a, xr[j]), b);
        }
    }
}
