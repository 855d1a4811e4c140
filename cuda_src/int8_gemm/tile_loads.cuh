// Global-memory helpers of the tiled int8 GEMM kernels: bounds-checked loads
// of packed bytes (with the uint8 -> signed flip applied) and a 4 x 4 byte
// transpose that turns four rows of B into four packed columns.
#pragma once

// The 4 bytes at p, `valid` of which lie inside the matrix (<= 0: none),
// each XORed with its byte of `flip`; bytes outside give 0 (a zero product,
// so K and the matrix edges are padded for free). `aligned`: p is 4-byte
// aligned, allowing one 32-bit load when all 4 bytes are inside.
__device__ __forceinline__ unsigned int8_load4(const signed char* p, int valid, bool aligned, unsigned flip)
{
    if (valid >= 4 && aligned)
        return *reinterpret_cast<const unsigned*>(p) ^ flip;
    unsigned w = 0;
    for (int j = 0; j < 4; ++j)
        if (j < valid)
            w |= ((unsigned)(unsigned char)p[j] ^ (flip & 0xffu)) << (8 * j);
    return w;
}

// 16 bytes at p as 4 packed words, `valid` of them inside the matrix.
// vec16: p is 16-byte aligned (one 128-bit load when all 16 are inside);
// aligned4: p is 4-byte aligned.
__device__ __forceinline__ void int8_load16(unsigned w[4], const signed char* p, int valid, bool vec16,
                                            bool aligned4, unsigned flip)
{
    if (valid >= 16 && vec16) {
        const uint4 v = *reinterpret_cast<const uint4*>(p);
        w[0] = v.x ^ flip; w[1] = v.y ^ flip; w[2] = v.z ^ flip; w[3] = v.w ^ flip;
    } else {
        for (int j = 0; j < 4; ++j)
            w[j] = int8_load4(p + 4 * j, valid - 4 * j, aligned4, flip);
    }
}

// r[i] holds bytes (i, 0..3) of a 4 x 4 block (byte j in bits 8j..8j+7); on
// return c[j] holds bytes (0..3, j): column j packed, row i in byte i.
__device__ __forceinline__ void int8_transpose4x4(const unsigned r[4], unsigned c[4])
{
    const unsigned t0 = __byte_perm(r[0], r[1], 0x5140);  // r0b0 r1b0 r0b1 r1b1
    const unsigned t1 = __byte_perm(r[0], r[1], 0x7362);  // r0b2 r1b2 r0b3 r1b3
    const unsigned t2 = __byte_perm(r[2], r[3], 0x5140);  // r2b0 r3b0 r2b1 r3b1
    const unsigned t3 = __byte_perm(r[2], r[3], 0x7362);  // r2b2 r3b2 r2b3 r3b3
    c[0] = __byte_perm(t0, t2, 0x5410);
    c[1] = __byte_perm(t0, t2, 0x7632);
    c[2] = __byte_perm(t1, t3, 0x5410);
    c[3] = __byte_perm(t1, t3, 0x7632);
}

// Loads the 4 x 4 byte block of B at rows k..k+3, columns n..n+3 (zero
// outside K x N) and returns it transposed: c[j] = column n + j, rows packed.
// aligned4: B rows start 4-byte aligned (B aligned, ldb % 4 == 0).
__device__ __forceinline__ void int8_load_b4x4(unsigned c[4], const signed char* B, int ldb, int K, int N,
                                               int k, int n, bool aligned4, unsigned flip)
{
    unsigned r[4];
    for (int i = 0; i < 4; ++i)
        r[i] = k + i < K ? int8_load4(B + (long long)(k + i) * ldb + n, N - n, aligned4, flip) : 0u;
    int8_transpose4x4(r, c);
}
