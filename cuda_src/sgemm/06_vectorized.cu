// SGEMM ladder, step 6: vectorized (float4) loads and a transposed A tile.
//
// Changes from step 5, same 128 x 128 x 8 tile and 8 x 8 outputs per thread:
//  * Global loads are float4: one 16-byte load moves 4 tile elements, a
//    quarter of the load instructions. Two neighbouring threads read the
//    32 bytes of one A tile row (one full sector); a warp reads 512
//    contiguous bytes of one B tile row.
//  * The A tile is stored transposed, As[k][m], so the TM values a thread
//    needs at step k are contiguous and come in as float4 shared loads. The
//    row length BM + 4 (not BM) shifts the two k-halves written by a warp by
//    16 banks, which makes the transposing scalar stores conflict-free.
//  * Each thread's 8 x 8 micro-tile is split into 2 x 2 blocks of 4 x 4 that
//    lie BM/2 rows and BN/2 columns apart. Then the 16 threads along N read
//    16 consecutive float4 of Bs (no bank conflicts, unlike the stride-8
//    reads of step 5), the As float4 reads are broadcasts, and the float4
//    stores of C are contiguous across a warp.
// Shared loads per FMA fall from 0.25 scalar loads to 4 float4 loads per
// 64 FMAs. Published ladders put this at ~78% of cuBLAS.
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// THREADS = (BM / TM) * (BN / TN) threads. Default
// sgemm_vectorized<128, 128, 8, 8, 8> (BM, BN, BK, TM, TN): 256 threads,
// 8320 bytes of static shared memory.
// Vector paths are taken only where they are legal, else the same elements
// are loaded/stored one by one with bounds checks (any M, N, K >= 1):
//  * A float4 loads: lda % 4 == 0, strideA % 4 == 0, A 16-byte aligned, and
//    the 4 elements inside the matrix;
//  * B float4 loads: the same with ldb, strideB, B;
//  * C float4 loads/stores: the same with ldc, strideC, C.
// The alignment part is a per-block flag, so a block away from the matrix
// edges runs the vector path without divergence.
template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) sgemm_vectorized(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, long long strideA,
    const float* __restrict__ B, int ldb, long long strideB,
    float beta, float* __restrict__ C, int ldc, long long strideC)
{
    // A is (M, K) row-major with leading dimension lda, B is (K, N) with ldb,
    // C is (M, N) with ldc; blockIdx.z selects the batch.
    constexpr int TY = BM / TM;            // threads along M
    constexpr int TX = BN / TN;            // threads along N
    constexpr int THREADS = TY * TX;
    constexpr int PAD = 4;                 // keeps rows 16-byte aligned
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile is made of 4 x 4 blocks");
    static_assert(BM % TM == 0 && BN % TN == 0, "micro-tile must divide the tile");
    static_assert(BK % 8 == 0, "an A tile row is read as whole 32-byte sectors");
    static_assert((BM * BK / 4) % THREADS == 0 && (BK * BN / 4) % THREADS == 0,
                  "each thread loads a whole number of float4");
    alignas(16) __shared__ float As[BK][BM + PAD];
    alignas(16) __shared__ float Bs[BK][BN];

    const long long batch = blockIdx.z;
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;

    const bool vecA = lda % 4 == 0 && strideA % 4 == 0 &&
                      (reinterpret_cast<unsigned long long>(A) & 15ull) == 0;
    const bool vecB = ldb % 4 == 0 && strideB % 4 == 0 &&
                      (reinterpret_cast<unsigned long long>(B) & 15ull) == 0;
    const bool vecC = ldc % 4 == 0 && strideC % 4 == 0 &&
                      (reinterpret_cast<unsigned long long>(C) & 15ull) == 0;

    const int tid = (int)threadIdx.x;
    const int tc = tid % TX;
    const int tr = tid / TX;
    const int bm = (int)blockIdx.y * BM;
    const int bn = (int)blockIdx.x * BN;

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;
    float regA[TM], regB[TN];

    for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
        for (int l = 0; l < (BM * BK / 4) / THREADS; ++l) {
            // float4 number f of the A tile: bit 0 picks the half of an
            // 8-wide k chunk, the next bits the row m, the rest the chunk.
            // A warp thus covers 16 rows x 8 k: full 32-byte sectors.
            const int f = tid + l * THREADS;
            const int m = (f / 2) % BM;
            const int kk = (f % 2) * 4 + (f / (2 * BM)) * 8;
            const int gr = bm + m, gk = k0 + kk;
            float v[4];
            if (vecA && gr < M && gk + 3 < K) {
                const float4 t = *reinterpret_cast<const float4*>(A + (long long)gr * lda + gk);
                v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    v[j] = (gr < M && gk + j < K) ? A[(long long)gr * lda + gk + j] : 0.0f;
            }
            // Transposing store: with rows BM + 4 long, the threads holding
            // kk and kk + 4 land 16 banks apart, so a warp's 32 stores hit
            // 32 distinct banks.
#pragma unroll
            for (int j = 0; j < 4; ++j)
                As[kk + j][m] = v[j];
        }
#pragma unroll
        for (int l = 0; l < (BK * BN / 4) / THREADS; ++l) {
            const int f = tid + l * THREADS;
            const int r = f / (BN / 4);
            const int c = (f % (BN / 4)) * 4;
            const int gr = k0 + r, gc = bn + c;
            float4 t;
            if (vecB && gr < K && gc + 3 < N) {
                t = *reinterpret_cast<const float4*>(B + (long long)gr * ldb + gc);
            } else {
                const bool rowOk = gr < K;
                const float* src = B + (long long)(rowOk ? gr : 0) * ldb + gc;
                t.x = (rowOk && gc + 0 < N) ? src[0] : 0.0f;
                t.y = (rowOk && gc + 1 < N) ? src[1] : 0.0f;
                t.z = (rowOk && gc + 2 < N) ? src[2] : 0.0f;
                t.w = (rowOk && gc + 3 < N) ? src[3] : 0.0f;
            }
            *reinterpret_cast<float4*>(&Bs[r][c]) = t;
        }
        // Both tiles must be complete before anyone computes on them.
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            // 4 x 4 block g of the micro-tile starts at row g * TY * 4 + tr * 4
            // (column g * TX * 4 + tc * 4): neighbouring threads read
            // neighbouring float4.
#pragma unroll
            for (int g = 0; g < TM / 4; ++g) {
                const float4 t = *reinterpret_cast<const float4*>(&As[k][g * TY * 4 + tr * 4]);
                regA[g * 4 + 0] = t.x; regA[g * 4 + 1] = t.y;
                regA[g * 4 + 2] = t.z; regA[g * 4 + 3] = t.w;
            }
#pragma unroll
            for (int g = 0; g < TN / 4; ++g) {
                const float4 t = *reinterpret_cast<const float4*>(&Bs[k][g * TX * 4 + tc * 4]);
                regB[g * 4 + 0] = t.x; regB[g * 4 + 1] = t.y;
                regB[g * 4 + 2] = t.z; regB[g * 4 + 3] = t.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j)
                    acc[i][j] += regA[i] * regB[j];
        }
        // Everyone must be done reading before the next iteration overwrites
        // the tiles.
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int row = bm + (i / 4) * TY * 4 + tr * 4 + i % 4;
        if (row >= M)
            continue;
#pragma unroll
        for (int g = 0; g < TN / 4; ++g) {
            const int col = bn + g * TX * 4 + tc * 4;
            float* c = C + (long long)row * ldc + col;
            const float* a = &acc[i][g * 4];
            if (vecC && col + 3 < N) {
                float4 t;
                if (beta == 0.0f) {
                    // beta == 0: C may be uninitialised, so it is not read.
                    t.x = alpha * a[0]; t.y = alpha * a[1];
                    t.z = alpha * a[2]; t.w = alpha * a[3];
                } else {
                    t = *reinterpret_cast<const float4*>(c);
                    t.x = alpha * a[0] + beta * t.x; t.y = alpha * a[1] + beta * t.y;
                    t.z = alpha * a[2] + beta * t.z; t.w = alpha * a[3] + beta * t.w;
                }
                *reinterpret_cast<float4*>(c) = t;
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (col + j < N)
                        c[j] = (beta == 0.0f) ? alpha * a[j] : alpha * a[j] + beta * c[j];
            }
        }
    }
}
