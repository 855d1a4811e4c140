// DGEMM: 2-D register-blocked, double-buffered double-precision GEMM.
//
// The SGEMM ladder's recipe (steps 5 to 7) carried over to double:
//  * each thread computes a TM x TN micro-tile as outer products of TM
//    values of A and TN values of B held in registers. A double occupies two
//    32-bit registers; the default micro-tile is still 8 x 8 = 64 outputs
//    (128 registers of accumulators), as the shared loads per DFMA,
//    (TM + TN) / 2 double2 per TM * TN, are what bounds the loop: 8 x 4
//    spends 6 loads on 32 DFMAs, which with a tile's global loads, stores
//    and barrier leaves under 82% DFMA share even with no address
//    arithmetic at all (8 x 8: 8 loads on 64 DFMAs). The block tile is
//    128 x 128 x 8 with 256 threads, one block per SM (~240 registers);
//  * 16-byte global loads (double2), A tile stored transposed (As[k][m]) so
//    a thread's A values are contiguous double2 shared loads;
//  * the micro-tile is split into blocks 4 rows x 2 columns wide, the row
//    blocks TY * 4 rows apart and the column blocks TX * 2 columns apart
//    (64 and 32 by default), so neighbouring threads read
//    neighbouring double2 of Bs (conflict-free) and the As reads are
//    broadcasts;
//  * two shared buffers: the next K tile is loaded into registers before the
//    FMAs of the current one and stored to the other buffer after them, with
//    one barrier per tile; the loop runs two tiles per iteration, one per
//    buffer, so buffer numbers are constants, and the loaders' row / column
//    addresses and checks are made once, before the loop (as sgemm step 7).
// Shared traffic: TM / 2 + TN / 2 = 8 double2 loads per 64 FMAs.
// SASS (static, NVRTC 13.5, sm_90): 238 registers, no spills; the loop
// (2 tiles) is 1257 instructions of which 1024 DFMA: fast-path DFMA share
// 81.5%, 1.23 instructions per DFMA (8 x 4 micro-tile, one tile per
// iteration: 66.0%, 1.52).
//
// Launch: grid (ceil_div(N, BN), ceil_div(M, BM), batch); 1-D block of
// THREADS = (BM / TM) * (BN / TN) threads. Default
// dgemm_blocktile_2d<128, 128, 8, 8, 8> (BM, BN, BK, TM, TN): 256 threads,
// 33280 bytes of static shared memory. Assumes a thread's B loads share
// one column group (THREADS % (BN / 2) == 0, static_assert).
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
    static_assert(THREADS % (BN / 2) == 0, "a thread's B loads share one column group");
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
    // read one 32-byte sector). The row (A) and column (B) parts of the
    // addresses and checks do not change from tile to tile: they are made
    // once, here, and a tile adds only k0.
    const double* pA[A_LOADS];
    bool rowOkA[A_LOADS];
#pragma unroll
    for (int l = 0; l < A_LOADS; ++l) {
        const int f = tid + l * THREADS;
        const int gr = bm + (f / 2) % BM;
        rowOkA[l] = gr < M;
        pA[l] = A + (long long)(rowOkA[l] ? gr : 0) * lda + (f % 2) * 2 + (f / (2 * BM)) * 4;
    }
    const double* pB[B_LOADS];
    const int gcB = bn + (tid % (BN / 2)) * 2;   // the same for every l (static_assert)
#pragma unroll
    for (int l = 0; l < B_LOADS; ++l)
        pB[l] = B + (long long)((tid + l * THREADS) / (BN / 2)) * ldb + gcB;
    auto loadTile = [&](int k0) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const int f = tid + l * THREADS;
            const int gk = k0 + (f % 2) * 2 + (f / (2 * BM)) * 4;
            const double* src = pA[l] + k0;
            if (vecA && rowOkA[l] && gk + 1 < K) {
                stA[l] = *reinterpret_cast<const double2*>(src);
            } else {
                stA[l].x = (rowOkA[l] && gk + 0 < K) ? src[0] : 0.0;
                stA[l].y = (rowOkA[l] && gk + 1 < K) ? src[1] : 0.0;
            }
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const bool rowOk = k0 + (tid + l * THREADS) / (BN / 2) < K;
            const double* src = pB[l] + (long long)k0 * ldb;   // not read when !rowOk
            if (vecB && rowOk && gcB + 1 < N) {
                stB[l] = *reinterpret_cast<const double2*>(src);
            } else {
                stB[l].x = (rowOk && gcB + 0 < N) ? src[0] : 0.0;
                stB[l].y = (rowOk && gcB + 1 < N) ? src[1] : 0.0;
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

    // The FMAs of the tile in buffer cur.
    auto computeTile = [&](int cur) {
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
    };
    // Tile `next` travels into buffer cur ^ 1 during the FMAs on buffer cur.
    // The barrier's two jobs, and why none is needed before the stores, are
    // those of sgemm/07_double_buffered.cu.
    auto overlapped = [&](int cur, int next) {
        loadTile(next * BK);
        computeTile(cur);
        storeTile(cur ^ 1);
        __syncthreads();
    };

    const int tiles = (K + BK - 1) / BK;
    loadTile(0);
    storeTile(0);
    // Tile 0 must be complete before anyone computes on it.
    __syncthreads();
    // Two tiles per iteration, one per buffer (constant buffer numbers).
    int t = 0;
    for (; t + 2 < tiles; t += 2) {
        overlapped(0, t + 1);
        overlapped(1, t + 2);
    }
    // The last one or two tiles, from buffer 0 on.
    if (t + 1 < tiles) {
        overlapped(0, t + 1);
        computeTile(1);
    } else {
        computeTile(0);
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
