// DGEMM: 2-D register-blocked, double-buffered double-precision GEMM.
//
// The SGEMM ladder's recipe (steps 5 to 7) carried over to double:
//  * each thread computes a TM x TN micro-tile as outer products of TM
//    values of A and TN values of B held in registers. A double occupies two
//    32-bit registers, so the default micro-tile is 8 x 4 = 32 outputs
//    (64 registers of accumulators, the register budget of an 8 x 8 float
//    tile) and the block tile is 128 x 64 x 8 with 256 threads;
//  * 16-byte global loads (double2), A tile stored transposed (As[k][m]) so
//    a thread's A values are contiguous double2 shared loads;
//  * the micro-tile is split into blocks 4 rows x 2 columns wide that lie
//    BM / 2 rows and BN / 2 columns apart, so neighbouring threads read
//    neighbouring double2 of Bs (conflict-free) and the As reads are
//    broadcasts;
//  * two shared buffers: the next K tile is loaded into registers before the
//    FMAs of the current one and stored to the other buffer after them, with
//    one barrier per tile.
// Shared traffic: TM / 2 + TN / 2 = 6 double2 loads per 32 FMAs.
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// THREADS = (BM / TM) * (BN / TN) threads. Default
// dgemm_blocktile_2d<128, 64, 8, 8, 4> (BM, BN, BK, TM, TN): 256 threads,
// 25088 bytes of static shared memory.
// Vector paths only where legal, else scalar bounds-checked (any M, N, K >= 1):
//  * A double2 loads: lda % 2 == 0, strideA % 2 == 0, A 16-byte aligned, and
//    both elements inside the matrix; B likewise with ldb, strideB, B;
//  * C double2 loads/stores: ldc % 2 == 0, strideC % 2 == 0, C 16-byte
//    aligned, and both columns inside the matrix.
template <int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) dgemm_blocktile_2d(
    int M, int N, int K, double alpha,
    const double* __restrict__ A, int lda, long long strideA,
    const double* __restrict__ B, int ldb, long long strideB,
    double beta, double* __restrict__ C, int ldc, long long strideC)
{
    // A is (M, K) row-major with leading dimension lda, B is (K, N) with ldb,
    // C is (M, N) with ldc; blockIdx.z selects the batch.
    constexpr int TY = BM / TM;            // threads along M
    constexpr int TX = BN / TN;            // threads along N
    constexpr int THREADS = TY * TX;
    constexpr int A_LOADS = (BM * BK / 2) / THREADS;   // double2 per thread
    constexpr int B_LOADS = (BK * BN / 2) / THREADS;
    static_assert(TM % 4 == 0 && TN % 2 == 0, "micro-tile is made of 4 x 2 blocks");
    static_assert(BM % TM == 0 && BN % TN == 0, "micro-tile must divide the tile");
    static_assert(BK % 4 == 0, "an A tile row is read as whole 32-byte sectors");
    static_assert(A_LOADS * THREADS == BM * BK / 2 && B_LOADS * THREADS == BK * BN / 2,
                  "each thread loads a whole number of double2");
    // A_PAD: in one transposing store, lane 2j writes As[k][j] and lane 2j+1
    // As[k + 2][j]. Unpadded, the two rows are 2 * BM * 8 bytes apart, a
    // multiple of 128, so each half-warp's 16 doubles fall in 16 banks twice:
    // 4 wavefronts instead of 2 (the emulator's counters showed it). Four
    // doubles of padding move row k + 2 by 64 bytes, onto the other 16 banks.
    // Rows stay 16-byte aligned for the double2 reads.
    constexpr int A_PAD = 4;
    static_assert((2 * (BM + A_PAD) * 8) % 128 == 64, "rows k and k + 2 on different banks");
    alignas(16) __shared__ double As[2][BK][BM + A_PAD];
    alignas(16) __shared__ double Bs[2][BK][BN];

    const long long batch = blockIdx.z;
    A += batch * strideA;
    B += batch * strideB;
    C += batch * strideC;

    const bool vecA = lda % 2 == 0 && strideA % 2 == 0 &&
                      (reinterpret_cast<unsigned long long>(A) & 15ull) == 0;
    const bool vecB = ldb % 2 == 0 && strideB % 2 == 0 &&
                      (reinterpret_cast<unsigned long long>(B) & 15ull) == 0;
    const bool vecC = ldc % 2 == 0 && strideC % 2 == 0 &&
                      (reinterpret_cast<unsigned long long>(C) & 15ull) == 0;

    const int tid = (int)threadIdx.x;
    const int tc = tid % TX;
    const int tr = tid / TX;
    const int bm = (int)blockIdx.y * BM;
    const int bn = (int)blockIdx.x * BN;

    // Staging registers: the next tile travels global -> here -> smem.
    double2 stA[A_LOADS], stB[B_LOADS];

    // Global -> registers for the tile starting at k0, zero outside the
    // matrix. A double2 number f: bit 0 picks the half of a 4-wide k chunk,
    // the next bits the row, the rest the chunk (two neighbouring threads
    // read one 32-byte sector).
    auto loadTile = [&](int k0) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const int f = tid + l * THREADS;
            const int gr = bm + (f / 2) % BM;
            const int gk = k0 + (f % 2) * 2 + (f / (2 * BM)) * 4;
            if (vecA && gr < M && gk + 1 < K) {
                stA[l] = *reinterpret_cast<const double2*>(A + (long long)gr * lda + gk);
            } else {
                const bool rowOk = gr < M;
                const double* src = A + (long long)(rowOk ? gr : 0) * lda + gk;
                stA[l].x = (rowOk && gk + 0 < K) ? src[0] : 0.0;
                stA[l].y = (rowOk && gk + 1 < K) ? src[1] : 0.0;
            }
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const int f = tid + l * THREADS;
            const int gr = k0 + f / (BN / 2);
            const int gc = bn + (f % (BN / 2)) * 2;
            if (vecB && gr < K && gc + 1 < N) {
                stB[l] = *reinterpret_cast<const double2*>(B + (long long)gr * ldb + gc);
            } else {
                const bool rowOk = gr < K;
                const double* src = B + (long long)(rowOk ? gr : 0) * ldb + gc;
                stB[l].x = (rowOk && gc + 0 < N) ? src[0] : 0.0;
                stB[l].y = (rowOk && gc + 1 < N) ? src[1] : 0.0;
            }
        }
    };

    // Registers -> shared buffer `buf`, same index mapping as loadTile.
    auto storeTile = [&](int buf) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const int f = tid + l * THREADS;
            const int m = (f / 2) % BM;
            const int kk = (f % 2) * 2 + (f / (2 * BM)) * 4;
            As[buf][kk + 0][m] = stA[l].x;
            As[buf][kk + 1][m] = stA[l].y;
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const int f = tid + l * THREADS;
            *reinterpret_cast<double2*>(&Bs[buf][f / (BN / 2)][(f % (BN / 2)) * 2]) = stB[l];
        }
    };

    double acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0;
    double regA[TM], regB[TN];

    const int tiles = (K + BK - 1) / BK;
    loadTile(0);
    storeTile(0);
    // Tile 0 must be complete before anyone computes on it.
    __syncthreads();

    for (int t = 0; t < tiles; ++t) {
        const int cur = t & 1;
        const bool hasNext = t + 1 < tiles;
        // Issue the next tile's global loads now; their latency overlaps
        // the FMAs below.
        if (hasNext)
            loadTile((t + 1) * BK);
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            // Row block g (4 rows) starts at g * TY * 4 + tr * 4; column
            // block g (2 columns) at g * TX * 2 + tc * 2.
#pragma unroll
            for (int g = 0; g < TM / 4; ++g) {
                const double2 v0 = *reinterpret_cast<const double2*>(&As[cur][k][g * TY * 4 + tr * 4]);
                const double2 v1 = *reinterpret_cast<const double2*>(&As[cur][k][g * TY * 4 + tr * 4 + 2]);
                regA[g * 4 + 0] = v0.x; regA[g * 4 + 1] = v0.y;
                regA[g * 4 + 2] = v1.x; regA[g * 4 + 3] = v1.y;
            }
#pragma unroll
            for (int g = 0; g < TN / 2; ++g) {
                const double2 v = *reinterpret_cast<const double2*>(&Bs[cur][k][g * TX * 2 + tc * 2]);
                regB[g * 2 + 0] = v.x; regB[g * 2 + 1] = v.y;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j)
                    acc[i][j] += regA[i] * regB[j];
        }
        // Writing the other buffer needs no barrier first: its last readers
        // were in iteration t - 1, which every thread left through the
        // barrier below.
        if (hasNext)
            storeTile(cur ^ 1);
        // One barrier per tile, doing two jobs: the next tile is complete in
        // buffer cur ^ 1 before anyone reads it, and everyone has finished
        // reading buffer cur before iteration t + 1 overwrites it with tile
        // t + 2.
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int row = bm + (i / 4) * TY * 4 + tr * 4 + i % 4;
        if (row >= M)
            continue;
#pragma unroll
        for (int g = 0; g < TN / 2; ++g) {
            const int col = bn + g * TX * 2 + tc * 2;
            double* c = C + (long long)row * ldc + col;
            const double* a = &acc[i][g * 2];
            if (vecC && col + 1 < N) {
                double2 v;
                if (beta == 0.0) {
                    // beta == 0: C may be uninitialised, so it is not read.
                    v.x = alpha * a[0];
                    v.y = alpha * a[1];
                } else {
                    v = *reinterpret_cast<const double2*>(c);
                    v.x = alpha * a[0] + beta * v.x;
                    v.y = alpha * a[1] + beta * v.y;
                }
                *reinterpret_cast<double2*>(c) = v;
            } else {
#pragma unroll
                for (int j = 0; j < 2; ++j)
                    if (col + j < N)
                        c[j] = (beta == 0.0) ? alpha * a[j] : alpha * a[j] + beta * c[j];
            }
        }
    }
}
