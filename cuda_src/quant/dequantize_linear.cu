// ONNX DequantizeLinear: y = (q - zero_point) * scale as float32, per tensor
// or per channel.
//
// q - zero_point is formed exactly in 64-bit integers, converted to float32
// with round-to-nearest-even (exact for 8-bit inputs) and multiplied by the
// scale with one correctly rounded product (__fmul_rn: never contracted
// into an FMA), which is what NumPy's float32 arithmetic in the CPU fallback
// does, so the two agree bit for bit. With a normal scale the product is
// either 0 or at least the scale, so -ftz=true never changes a result.
//
// Memory bound: read sizeof(TQ) bytes and write 4 bytes per element; each
// thread handles 4 consecutive elements (one float4 store when aligned and
// inside the array); grid-stride loop.
//
// Shapes: q and y are (n,) C-contiguous views of (outer, channels, inner);
// scale and zero_point are (channels,); element i is in channel
// (i / inner) % channels. Launch: 1-D blocks of 256 threads, any 1-D grid.
template <typename TQ>
__global__ void dequantize_linear(long long n, const TQ* __restrict__ q, float* __restrict__ y,
                                  const float* __restrict__ scale, const int* __restrict__ zero_point,
                                  int channels, long long inner)
{
    const bool vec = (reinterpret_cast<unsigned long long>(y) & 15ull) == 0;
    const long long stride = 4ll * blockDim.x * gridDim.x;
    for (long long i0 = 4ll * ((long long)blockIdx.x * blockDim.x + threadIdx.x); i0 < n; i0 += stride) {
        const int cnt = n - i0 < 4 ? (int)(n - i0) : 4;
        float v[4];
        for (int j = 0; j < 4; ++j) {
            if (j < cnt) {
                const int c = channels == 1 ? 0 : (int)(((i0 + j) / inner) % channels);
                v[j] = __fmul_rn(__ll2float_rn((long long)q[i0 + j] - zero_point[c]), scale[c]);
            } else {
                v[j] = 0.0f;
            }
        }
        if (vec && cnt == 4) {
            *reinterpret_cast<float4*>(y + i0) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
            for (int j = 0; j < cnt; ++j)
                y[i0 + j] = v[j];
        }
    }
}
