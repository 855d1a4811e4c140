// Shared by the quantization kernels and the requantizing int8 GEMM epilogue:
// the integer range of each quantized type and the one rounding-and-saturation
// step that every "float -> quantized" conversion goes through.
#pragma once

template <typename TQ> struct QRange;
template <> struct QRange<signed char> { static constexpr int lo = -128, hi = 127; };
template <> struct QRange<unsigned char> { static constexpr int lo = 0, hi = 255; };

// saturate(round_half_to_even(v) + zp) as an integer of TQ's range.
// __float2int_rn rounds ties to even, maps NaN to 0 and saturates at the int
// range; the clamp to +-65536 keeps the zero-point addition from overflowing
// (anything that far out saturates anyway). The Python fallback performs the
// same steps on float32 values (np.rint, NaN -> 0, clip), so they agree bit
// for bit.
template <typename TQ>
__device__ __forceinline__ TQ round_saturate(float v, int zp)
{
    int q = __float2int_rn(v);
    q = min(max(q, -65536), 65536) + zp;
    return (TQ)min(max(q, QRange<TQ>::lo), QRange<TQ>::hi);
}
