// ONNX QuantizeLinear: y = saturate(round_half_to_even(x / scale) + zero_point),
// per tensor or per channel.
//
// The division is a true IEEE float32 division (__fdiv_rn, correctly
// rounded), not a multiplication by a reciprocal: it is what the ONNX formula
// says, and NumPy's float32 division rounds the same way, so the CPU fallback
// is bit-identical, ties included. Subnormal inputs are flushed to zero
// explicitly, so the result does not depend on the -ftz=true that CuPy always
// adds (the wrapper only accepts normal, positive scales). NaN gives the zero
// point; +-Inf saturate.
//
// Memory bound: read 4 bytes and write 1 byte per element. Each thread
// handles 4 consecutive elements, with a float4 load and one 32-bit store
// when the 4 are inside the array and the pointers are aligned; a grid-stride
// loop covers any n.
//
// Shapes: x and y are (n,) C-contiguous views of (outer, channels, inner);
// scale and zero_point are (channels,); element i is in channel
// (i / inner) % channels (per tensor: channels == 1).
// Launch: 1-D blocks of 256 threads, 1-D grid (any size; grid-stride).
#include "qcommon.cuh"

template <typename TQ>
__global__ void quantize_linear(long long n, const float* __restrict__ x, TQ* __restrict__ y,
                                const float* __restrict__ scale, const int* __restrict__ zero_point,
                                int channels, long long inner)
{
    const bool vec = (reinterpret_cast<unsigned long long>(x) & 15ull) == 0 &&
                     (reinterpret_cast<unsigned long long>(y) & 3ull) == 0;
    const long long stride = 4ll * blockDim.x * gridDim.x;
    for (long long i0 = 4ll * ((long long)blockIdx.x * blockDim.x + threadIdx.x); i0 < n; i0 += stride) {
        float v[4];
        const int cnt = n - i0 < 4 ? (int)(n - i0) : 4;
        if (vec && cnt == 4) {
            const float4 f = *reinterpret_cast<const float4*>(x + i0);
            v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
        } else {
            for (int j = 0; j < 4; ++j)
                v[j] = j < cnt ? x[i0 + j] : 0.0f;
        }
        TQ q[4];
        for (int j = 0; j < 4; ++j) {
            const int c = channels == 1 ? 0 : (int)(((i0 + j) / inner) % channels);
            const float xv = fabsf(v[j]) < 1.17549435e-38f ? 0.0f : v[j];
            q[j] = round_saturate<TQ>(__fdiv_rn(xv, scale[c]), zero_point[c]);
        }
        if (vec && cnt == 4) {
            const unsigned packed = (unsigned)(unsigned char)q[0] | ((unsigned)(unsigned char)q[1] << 8) |
                                    ((unsigned)(unsigned char)q[2] << 16) | ((unsigned)(unsigned char)q[3] << 24);
            *reinterpret_cast<unsigned*>(y + i0) = packed;
        } else {
            for (int j = 0; j < cnt; ++j)
                y[i0 + j] = q[j];
        }
    }
}
