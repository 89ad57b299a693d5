// Single-precision GEMM: C = alpha * (A @ B) + beta * C, structured like
// GotoBLAS / BLIS.
//
// a is (m, k), b is (k, n), c is (m, n); each has a row stride and a column
// stride in elements (any sign, zero allowed for a and b), so transposed and
// sliced numpy views arrive without copies: the packing routines read any
// layout into the contiguous micro-panels the micro-kernel wants.
//
// The loop nest, for one thread's tile of C (see "Threads" below):
//
//   for jc in [0, n) step NC:                          B panel        -> L3
//     for pc in [0, k) step KC:
//       for ic in [0, m) step MC:                      A block        -> L2
//         pack A[ic:ic+MC, pc:pc+KC] into MR-tall micro-panels (Ap)
//         for jr in [0, NC) step NR:                   B micro-panel  -> L1
//           if ic == 0: pack B[pc:pc+KC, jc+jr:jc+jr+NR] into Bp[jr]
//           for ir in [0, MC) step MR:
//             C[ic+ir : +MR, jc+jr : +NR] (+)= Ap[ir] @ Bp[jr]   (registers)
//
// B is packed one micro-panel at a time inside the first ic pass rather than
// as a whole panel before it (as OpenBLAS does): the reads of B then overlap
// FMAs, and at the training shapes (m <= MC, a single ic block) the packed
// panel never travels out to L3 and back.
//
// Block sizes, for AMD Zen (32 KiB L1d and 512 KiB L2 per core, shared L3):
//   MR x NR = 6 x 16: the AVX2 micro-kernel keeps the C tile in 12 ymm
//     registers; per k step it loads 2 ymm of B and broadcasts 6 floats of A,
//     using 15 of the 16 ymm registers. 12 independent FMA chains cover FMA
//     latency x throughput (5 x 1 ymm per cycle on Zen 1/2 as measured here,
//     4 x 2 on Zen 3), and 8 loads per 12 FMAs stay under 2 loads per cycle.
//   KC = 256: one B micro-panel (KC x NR x 4 B = 16 KiB) stays in L1 while the
//     kernel walks down the A block, with room for an A micro-panel (6 KiB)
//     and the C tile. A larger KC amortizes the C update over more FMAs but
//     pushes B out of L1 (KC = 384 and 512 measured no better).
//   MC = 144: the packed A block (MC x KC x 4 B = 144 KiB) sits in L2 with
//     room for the B micro-panels passing through (96..192 measured equal).
//   NC = 4080: the packed B panel (KC x NC x 4 B = 4 MiB) lives in L3.
// The KC, MC and NC actually used are shrunk to split k, m and n into equal
// blocks: k = 784 runs as 4 x 196 rather than 3 x 256 + 16 (a 16-deep block
// would pay a full C update for little work).
//
// Edges: packing pads A and B with zeros up to MR and NR. The last row block
// (m % MR rows, e.g. 64 = 10 x 6 + 4) runs a kernel of that height, so no
// FMAs are spent on padding rows; a ragged last column panel, or a C whose
// columns are not contiguous, goes through a 6x16 buffer added into C.
// Shapes that tile badly run transposed (C^T = B^T @ A^T: n = 10 pads to 12
// rows instead of 16 columns), and m == 1 is a vector-matrix product that
// streams B once without packing it: rows of B into a row of accumulators
// when B is row-major, dot products down its columns when it is column-major
// (x @ W.T of a Linear layer at batch 1).
//
// Threads: C is cut into a tm x tn grid, one tile per thread, each running the
// whole loop nest above on its own packed panels. Cutting n makes every thread
// pack all of A, cutting m makes every thread pack all of B, so the grid is
// chosen to minimize tm * n + tn * m packed elements per k. Threads never wait
// on each other, which is what lets the small training shapes (m = 64) scale.
//
// Standalone build (AVX2 is chosen at run time; PYRT_DISABLE_AVX2=1 forces the
// portable kernel):
//   g++ -O3 -std=c++17 -fopenmp -Icsrc csrc/cpu/gemm.cpp csrc/cpu/cpu_features.cpp driver.cpp
#include "cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/blocking.h"
#include "cpu/cpu_features.h"
#include "cpu/threads.h"

namespace pyrt::cpu {

namespace {

constexpr int64_t MR = 6;
constexpr int64_t NR = 16;
constexpr int64_t MC = 144;
constexpr int64_t KC = 256;
constexpr int64_t NC = 4080;

// Below this many multiply-adds per thread a parallel region costs more than
// it saves (waking a thread is a few microseconds; 256K FMAs take ~3 us).
constexpr int64_t kMinFmasPerThread = 256 * 1024;

// ---------------------------------------------------------------------------
// Packing. Ap holds mc rows of A as ceil(mc/MR) micro-panels, each kc x MR
// with the MR values of one k step adjacent; a B micro-panel holds NR columns
// of B as kc x NR, one k step per 64-byte line. Rows/columns past the edge
// are zero.

void pack_a(int64_t mc, int64_t kc, const float* a, int64_t rsa, int64_t csa, float* ap) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int64_t rows = std::min(MR, mc - i0);
    const float* src = a + i0 * rsa;
    if (rows == MR && rsa == 1) {  // A^T (column-major A): MR values per k step are contiguous
      for (int64_t p = 0; p < kc; ++p) std::memcpy(ap + p * MR, src + p * csa, MR * sizeof(float));
    } else if (rows == MR && csa == 1) {  // row-major A: MR contiguous rows
      for (int64_t p = 0; p < kc; ++p) {
        for (int64_t i = 0; i < MR; ++i) ap[p * MR + i] = src[i * rsa + p];
      }
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        for (int64_t i = 0; i < rows; ++i) ap[p * MR + i] = src[i * rsa + p * csa];
        for (int64_t i = rows; i < MR; ++i) ap[p * MR + i] = 0.0f;
      }
    }
    ap += kc * MR;
  }
}

// One full NR-wide panel of a B whose columns are contiguous (B^T, as in the
// backward pass's grad @ W^T): a transpose, which in scalar code costs a load
// and a store per element and would rival the FMAs when m is small.
void pack_b_panel_transposed_portable(int64_t kc, const float* src, int64_t csb, float* bp) {
  for (int64_t j = 0; j < NR; ++j) {
    const float* col = src + j * csb;
    for (int64_t p = 0; p < kc; ++p) bp[p * NR + j] = col[p];
  }
}

#ifdef PYRT_HAVE_X86
// 8x8 in-register transposes: eight loads, 24 shuffles and eight stores move 64 floats.
__attribute__((target("avx2,fma"))) void pack_b_panel_transposed_avx2(int64_t kc,
                                                                     const float* src,
                                                                     int64_t csb, float* bp) {
  int64_t p = 0;
  for (; p + 8 <= kc; p += 8) {
    for (int64_t half = 0; half < 2; ++half) {
      const float* col = src + (half * 8) * csb + p;
      const __m256 r0 = _mm256_loadu_ps(col + 0 * csb), r1 = _mm256_loadu_ps(col + 1 * csb);
      const __m256 r2 = _mm256_loadu_ps(col + 2 * csb), r3 = _mm256_loadu_ps(col + 3 * csb);
      const __m256 r4 = _mm256_loadu_ps(col + 4 * csb), r5 = _mm256_loadu_ps(col + 5 * csb);
      const __m256 r6 = _mm256_loadu_ps(col + 6 * csb), r7 = _mm256_loadu_ps(col + 7 * csb);
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
      const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
      const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float* dst = bp + p * NR + half * 8;
      _mm256_store_ps(dst + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_store_ps(dst + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_store_ps(dst + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_store_ps(dst + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_store_ps(dst + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_store_ps(dst + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_store_ps(dst + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_store_ps(dst + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
  }
  for (; p < kc; ++p) {
    for (int64_t j = 0; j < NR; ++j) bp[p * NR + j] = src[j * csb + p];
  }
}
#endif

void pack_b_panel_transposed(int64_t kc, const float* src, int64_t csb, float* bp) {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return pack_b_panel_transposed_avx2(kc, src, csb, bp);
#endif
  pack_b_panel_transposed_portable(kc, src, csb, bp);
}

// One NR-wide micro-panel of B (cols <= NR columns, zero-padded to NR).
void pack_b_panel(int64_t kc, int64_t cols, const float* b, int64_t rsb, int64_t csb, float* bp) {
  if (cols == NR && csb == 1) {
    // Row-major B: each k step is one 64-byte line, and the next panel wants
    // the line after it. At n = 1024 successive steps are 4 KiB apart, a new
    // page each time, where no hardware prefetcher follows; so fetch the next
    // panel's line now, a whole panel of FMAs ahead of its use. Into L2, as
    // lines 4 KiB apart all fall in one L1 set.
    for (int64_t p = 0; p < kc; ++p) {
      const float* row = b + p * rsb;
      __builtin_prefetch(row + NR, 0, 2);
      std::memcpy(bp + p * NR, row, NR * sizeof(float));
    }
  } else if (cols == NR && rsb == 1) {  // B^T: each column is contiguous in k
    pack_b_panel_transposed(kc, b, csb, bp);
  } else {
    for (int64_t p = 0; p < kc; ++p) {
      for (int64_t j = 0; j < cols; ++j) bp[p * NR + j] = b[p * rsb + j * csb];
      for (int64_t j = cols; j < NR; ++j) bp[p * NR + j] = 0.0f;
    }
  }
}

// ---------------------------------------------------------------------------
// Micro-kernels. Contract, for Rows in 1..MR:
//   c[0:Rows, 0:NR] = alpha * (ap @ bp) + beta * c, with c at row stride rsc
//   and unit column stride; beta == 0 writes c without reading it.
//   ap is a packed A micro-panel (MR floats per k step; the first Rows used).
//   bp holds NR floats per k step, ldb floats apart: NR for a packed panel,
//   a row of B when B is read in place (see gemm_tile).
// The full-height kernel does nearly all the work; the shorter ones serve the
// last row block when m % MR != 0 (training batches are powers of two:
// 64 = 10 x 6 + 4), so no FMAs are spent on padding rows.

using MicroKernel = void (*)(int64_t kc, const float* ap, const float* bp, int64_t ldb, float* c,
                             int64_t rsc, float alpha, float beta);

// Plain C++ with the tile in a local array; at -O3 gcc vectorizes the j loops
// with whatever the baseline ISA offers (SSE2 on x86-64).
template <int Rows>
void kernel_portable(int64_t kc, const float* ap, const float* bp, int64_t ldb, float* c,
                     int64_t rsc, float alpha, float beta) {
  float acc[Rows][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int i = 0; i < Rows; ++i) {
      const float a = ap[p * MR + i];
      for (int64_t j = 0; j < NR; ++j) acc[i][j] += a * bp[p * ldb + j];
    }
  }
  for (int i = 0; i < Rows; ++i) {
    float* row = c + i * rsc;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < NR; ++j) row[j] = alpha * acc[i][j];
    } else {
      for (int64_t j = 0; j < NR; ++j) row[j] = alpha * acc[i][j] + beta * row[j];
    }
  }
}

#ifdef PYRT_HAVE_X86
// Per k step: two 8-wide loads of B, then for each row one broadcast of A and
// two FMAs. At Rows = 6 that is 12 accumulators + 2 B + 1 broadcast = 15 of
// the 16 ymm registers, and 12 independent FMA chains: enough to cover FMA
// latency x throughput (5 x 1 on Zen 1, 4 x 2 on Zen 3). The loops over i are
// fully unrolled, so the accumulator array lives in registers.
template <int Rows>
__attribute__((target("avx2,fma"))) void kernel_avx2_fma(int64_t kc, const float* ap,
                                                         const float* bp, int64_t ldb, float* c,
                                                         int64_t rsc, float alpha, float beta) {
  __m256 acc[Rows][2];
#pragma GCC unroll 6
  for (int i = 0; i < Rows; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();

#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(bp);
    const __m256 b1 = _mm256_loadu_ps(bp + 8);
#pragma GCC unroll 6
    for (int i = 0; i < Rows; ++i) {
      const __m256 a = _mm256_broadcast_ss(ap + i);
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
    ap += MR;
    bp += ldb;
  }

  const __m256 va = _mm256_set1_ps(alpha);
  const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
  for (int i = 0; i < Rows; ++i) {
    float* row = c + i * rsc;
    __m256 lo = _mm256_mul_ps(va, acc[i][0]);
    __m256 hi = _mm256_mul_ps(va, acc[i][1]);
    if (beta != 0.0f) {
      lo = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row), lo);
      hi = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row + 8), hi);
    }
    _mm256_storeu_ps(row, lo);
    _mm256_storeu_ps(row + 8, hi);
  }
}
#endif

// kernels[r] computes an r x NR tile; kernels[0] is unused.
struct KernelSet {
  MicroKernel rows[MR + 1];
};

KernelSet select_kernels() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) {
    return {{nullptr, kernel_avx2_fma<1>, kernel_avx2_fma<2>, kernel_avx2_fma<3>,
             kernel_avx2_fma<4>, kernel_avx2_fma<5>, kernel_avx2_fma<6>}};
  }
#endif
  return {{nullptr, kernel_portable<1>, kernel_portable<2>, kernel_portable<3>,
           kernel_portable<4>, kernel_portable<5>, kernel_portable<6>}};
}

// ---------------------------------------------------------------------------
// Macro-kernel: the jr / ir loops over one packed A block and B panel.

// c = tile + beta * c for an mr x nr corner of a tile, walking c along its
// shorter stride: across a column-major c a row walk would put every store in
// a different page and the same L1 set.
void add_tile(int64_t mr, int64_t nr, const float* tile, float beta, float* c, int64_t rsc,
              int64_t csc) {
  const bool by_rows = std::abs(csc) <= std::abs(rsc);
  const int64_t outer = by_rows ? mr : nr, inner = by_rows ? nr : mr;
  const int64_t outer_c = by_rows ? rsc : csc, inner_c = by_rows ? csc : rsc;
  const int64_t outer_t = by_rows ? NR : 1, inner_t = by_rows ? 1 : NR;
  for (int64_t o = 0; o < outer; ++o) {
    float* line = c + o * outer_c;
    const float* t = tile + o * outer_t;
    if (beta == 0.0f) {
      for (int64_t i = 0; i < inner; ++i) line[i * inner_c] = t[i * inner_t];
    } else {
      for (int64_t i = 0; i < inner; ++i) line[i * inner_c] = t[i * inner_t] + beta * line[i * inner_c];
    }
  }
}

// How the jr loop gets its B micro-panels.
enum class BPanels {
  kPacked,   // already packed into bp by an earlier ic block
  kPackNow,  // pack each micro-panel into bp just before its first use
  kInPlace,  // read row-major B where it lies (see gemm_tile); pack only a ragged last panel
};

void macro_kernel(const KernelSet& kernels, int64_t mc, int64_t nc, int64_t kc, float alpha,
                  const float* ap, float* bp, BPanels b_panels, const float* b, int64_t rsb,
                  int64_t csb, float beta, float* c, int64_t rsc, int64_t csc) {
  alignas(64) float tile[MR * NR];
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t nr = std::min(NR, nc - jr);
    const float* b_panel = bp + jr * kc;
    int64_t ldb = NR;
    if (b_panels == BPanels::kInPlace && nr == NR) {
      b_panel = b + jr;
      ldb = rsb;
    } else if (b_panels != BPanels::kPacked) {
      pack_b_panel(kc, nr, b + jr * csb, rsb, csb, bp + jr * kc);
    }
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int64_t mr = std::min(MR, mc - ir);
      const float* a_panel = ap + ir * kc;
      float* cij = c + ir * rsc + jr * csc;
      if (nr == NR && csc == 1) {
        kernels.rows[mr](kc, a_panel, b_panel, ldb, cij, rsc, alpha, beta);
        continue;
      }
      kernels.rows[mr](kc, a_panel, b_panel, ldb, tile, NR, alpha, 0.0f);
      add_tile(mr, nr, tile, beta, cij, rsc, csc);
    }
  }
}

// ---------------------------------------------------------------------------
// m == 1 with row-major B (a batch of one, or C = A @ b as C^T = b^T @ A^T):
// a vector-matrix product, bound by reading B once. Micro-panels would walk B
// down its columns, a new page per 64 bytes; instead stream whole rows of B
// into a row of accumulators kept in L1.

__attribute__((always_inline)) inline void row_times_matrix_body(
    int64_t n, int64_t k, float alpha, const float* a, int64_t csa, const float* b, int64_t rsb,
    float beta, float* c, int64_t csc) {
  constexpr int64_t kChunk = 1024;  // 4 KiB of accumulators
  alignas(64) float acc[kChunk];
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    const int64_t len = std::min(kChunk, n - j0);
    for (int64_t j = 0; j < len; ++j) acc[j] = 0.0f;
    // Four rows per pass: one load and store of acc per four FMAs.
    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
      const float a0 = a[p * csa], a1 = a[(p + 1) * csa];
      const float a2 = a[(p + 2) * csa], a3 = a[(p + 3) * csa];
      const float* r0 = b + p * rsb + j0;
      const float* r1 = r0 + rsb;
      const float* r2 = r1 + rsb;
      const float* r3 = r2 + rsb;
      for (int64_t j = 0; j < len; ++j) acc[j] += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j];
    }
    for (; p < k; ++p) {
      const float ap = a[p * csa];
      const float* row = b + p * rsb + j0;
      for (int64_t j = 0; j < len; ++j) acc[j] += ap * row[j];
    }
    float* out = c + j0 * csc;
    for (int64_t j = 0; j < len; ++j) {
      out[j * csc] = alpha * acc[j] + (beta == 0.0f ? 0.0f : beta * out[j * csc]);
    }
  }
}

void row_times_matrix_portable(int64_t n, int64_t k, float alpha, const float* a, int64_t csa,
                               const float* b, int64_t rsb, float beta, float* c, int64_t csc) {
  row_times_matrix_body(n, k, alpha, a, csa, b, rsb, beta, c, csc);
}

#ifdef PYRT_HAVE_X86
// The same loops, vectorized by the compiler for AVX2.
__attribute__((target("avx2,fma"))) void row_times_matrix_avx2(int64_t n, int64_t k, float alpha,
                                                              const float* a, int64_t csa,
                                                              const float* b, int64_t rsb,
                                                              float beta, float* c, int64_t csc) {
  row_times_matrix_body(n, k, alpha, a, csa, b, rsb, beta, c, csc);
}
#endif

void row_times_matrix(int64_t n, int64_t k, float alpha, const float* a, int64_t csa,
                      const float* b, int64_t rsb, float beta, float* c, int64_t csc) {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return row_times_matrix_avx2(n, k, alpha, a, csa, b, rsb, beta, c, csc);
#endif
  row_times_matrix_portable(n, k, alpha, a, csa, b, rsb, beta, c, csc);
}

// ---------------------------------------------------------------------------
// m == 1 with column-major B (rsb == 1): a batch of one through a Linear layer,
// x (1, k) @ W.T where W (n, k) is row-major, so column j of B is row j of W,
// k contiguous floats. c[j] is the dot product of a with that column: stream
// four columns at a time against one load of a, each into its own
// accumulators, and reduce each to a float once at the end. Bound by reading
// B once (a 1024 x 784 weight is 3.2 MB: L3, not FMAs). The packed path padded
// this to MR = 6 rows and walked B through micro-panels: 6x the FMAs and a
// packing copy of all of B on every call.
// a is contiguous here (the caller copies a strided row, k floats).

void columns_dot_portable(int64_t n, int64_t k, float alpha, const float* a, const float* b,
                          int64_t csb, float beta, float* c, int64_t csc) {
  for (int64_t j = 0; j < n; ++j) {
    const float* col = b + j * csb;
    // Eight partial sums: independent chains, and a loop the compiler can vectorize.
    float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
      for (int l = 0; l < 8; ++l) part[l] += a[p + l] * col[p + l];
    }
    for (; p < k; ++p) part[0] += a[p] * col[p];
    const float dot = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    c[j * csc] = alpha * dot + (beta == 0.0f ? 0.0f : beta * c[j * csc]);
  }
}

#ifdef PYRT_HAVE_X86
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
}

// Columns j..j+C-1 against a: 2 accumulators per column (k unrolled by 16), so
// C = 4 runs 8 independent FMA chains, enough to cover FMA latency when B
// comes from L1/L2; the last k % 8 floats through a masked load.
template <int C>
__attribute__((target("avx2,fma"))) inline void columns_dot_avx2_block(
    int64_t k, float alpha, const float* a, const float* b, int64_t csb, float beta, float* c,
    int64_t csc, __m256i tail_mask) {
  __m256 acc0[C], acc1[C];
  for (int q = 0; q < C; ++q) acc0[q] = acc1[q] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    const __m256 a0 = _mm256_loadu_ps(a + p), a1 = _mm256_loadu_ps(a + p + 8);
    for (int q = 0; q < C; ++q) {
      acc0[q] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + q * csb + p), acc0[q]);
      acc1[q] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(b + q * csb + p + 8), acc1[q]);
    }
  }
  if (p + 8 <= k) {
    const __m256 a0 = _mm256_loadu_ps(a + p);
    for (int q = 0; q < C; ++q) acc0[q] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + q * csb + p), acc0[q]);
    p += 8;
  }
  if (p < k) {  // maskload reads nothing past the last float, so no read beyond the end of B
    const __m256 a0 = _mm256_maskload_ps(a + p, tail_mask);
    for (int q = 0; q < C; ++q) {
      acc1[q] = _mm256_fmadd_ps(a0, _mm256_maskload_ps(b + q * csb + p, tail_mask), acc1[q]);
    }
  }
  for (int q = 0; q < C; ++q) {
    const float dot = hsum(_mm256_add_ps(acc0[q], acc1[q]));
    c[q * csc] = alpha * dot + (beta == 0.0f ? 0.0f : beta * c[q * csc]);
  }
}

__attribute__((target("avx2,fma"))) void columns_dot_avx2(int64_t n, int64_t k, float alpha,
                                                          const float* a, const float* b, int64_t csb,
                                                          float beta, float* c, int64_t csc) {
  const __m256i tail_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(k % 8)),
                                               _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) columns_dot_avx2_block<4>(k, alpha, a, b + j * csb, csb, beta, c + j * csc, csc, tail_mask);
  for (; j < n; ++j) columns_dot_avx2_block<1>(k, alpha, a, b + j * csb, csb, beta, c + j * csc, csc, tail_mask);
}
#endif

void row_times_columns(int64_t n, int64_t k, float alpha, const float* a, int64_t csa, const float* b,
                       int64_t csb, float beta, float* c, int64_t csc) {
  thread_local ThreadBuffer<float> a_row;
  if (csa != 1) {  // k floats, against n * k of B
    float* row = a_row.get(k);
    for (int64_t p = 0; p < k; ++p) row[p] = a[p * csa];
    a = row;
  }
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return columns_dot_avx2(n, k, alpha, a, b, csb, beta, c, csc);
#endif
  columns_dot_portable(n, k, alpha, a, b, csb, beta, c, csc);
}

// The whole loop nest for one thread's (m, n) tile of C, on its own buffers.
void gemm_tile(const KernelSet& kernels, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t rsa, int64_t csa, const float* b, int64_t rsb,
               int64_t csb, float beta, float* c, int64_t rsc, int64_t csc) {
  if (m == 1 && csb == 1) return row_times_matrix(n, k, alpha, a, csa, b, rsb, beta, c, csc);
  if (m == 1 && rsb == 1) return row_times_columns(n, k, alpha, a, csa, b, csb, beta, c, csc);
  thread_local ThreadBuffer<float> a_buffer;
  thread_local ThreadBuffer<float> b_buffer;
  const int64_t mc_max = balanced_block(m, MC, MR);
  const int64_t kc_max = balanced_block(k, KC, 1);
  const int64_t nc_max = balanced_block(n, NC, NR);
  float* ap = a_buffer.get(mc_max * kc_max);
  float* bp = b_buffer.get(kc_max * nc_max);
  // With a single row block each B element is used by one micro-kernel call:
  // packing would copy B only to read the copy once. A row-major B already
  // has the layout the kernel loads (16 contiguous floats per k step).
  const bool b_in_place = m <= MR && csb == 1;

  for (int64_t jc = 0; jc < n; jc += nc_max) {
    const int64_t nc = std::min(nc_max, n - jc);
    for (int64_t pc = 0; pc < k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, k - pc);
      // Later k blocks accumulate onto what the first one wrote.
      const float beta_block = pc == 0 ? beta : 1.0f;
      for (int64_t ic = 0; ic < m; ic += mc_max) {
        const int64_t mc = std::min(mc_max, m - ic);
        pack_a(mc, kc, a + ic * rsa + pc * csa, rsa, csa, ap);
        const BPanels b_panels =
            b_in_place ? BPanels::kInPlace : ic == 0 ? BPanels::kPackNow : BPanels::kPacked;
        macro_kernel(kernels, mc, nc, kc, alpha, ap, bp, b_panels, b + pc * rsb + jc * csb, rsb,
                     csb, beta_block, c + ic * rsc + jc * csc, rsc, csc);
      }
    }
  }
}

// C = beta * C, for k == 0 or alpha == 0, where A and B are not read.
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t rsc, int64_t csc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float& x = c[i * rsc + j * csc];
      x = beta == 0.0f ? 0.0f : beta * x;
    }
  }
}

}  // namespace

void sgemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t rsa, int64_t csa,
           const float* b, int64_t rsb, int64_t csb, float beta, float* c, int64_t rsc,
           int64_t csc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0f) {
    scale_c(m, n, beta, c, rsc, csc);
    return;
  }
  // C = A @ B is also C^T = B^T @ A^T: same packing, operands swapped. Take
  // the orientation with less zero padding in the edge tiles (n = 10 pads to
  // 16 columns but only to 12 rows), charging 1/8 extra to one whose C rows
  // are not contiguous, since its tiles go through the scatter in macro_kernel.
  const auto cost = [](int64_t rows, int64_t cols, bool contiguous_rows) {
    return round_up(rows, MR) * round_up(cols, NR) * (contiguous_rows ? 8 : 9);
  };
  if (cost(n, m, rsc == 1) < cost(m, n, csc == 1)) {
    sgemm(n, m, k, alpha, b, csb, rsb, a, csa, rsa, beta, c, csc, rsc);
    return;
  }
  static const KernelSet kernels = select_kernels();

  // Thread grid: enough work per thread, at least one MR x NR tile per thread
  // along each side, and the split that packs the fewest redundant elements.
  const int64_t work_threads = std::max<int64_t>(1, m * n * k / kMinFmasPerThread);
  const int64_t threads = std::min<int64_t>(max_threads(), work_threads);
  int64_t tm = 1, tn = 1;
  if (threads > 1) {
    int64_t best_cost = -1;
    for (int64_t t = 1; t <= threads; ++t) {
      if (threads % t != 0) continue;
      const int64_t grid_m = t, grid_n = threads / t;
      if (grid_m > ceil_div(m, MR) || grid_n > ceil_div(n, NR)) continue;
      const int64_t cost = grid_m * n + grid_n * m;
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        tm = grid_m;
        tn = grid_n;
      }
    }
  }

  if (tm * tn == 1) {
    gemm_tile(kernels, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
    return;
  }
  // Tile edges fall on MR / NR multiples so only the last tile has partial
  // micro-tiles, and C tiles of different threads never share a cache line
  // when rows are 64-byte aligned.
  const int64_t m_chunk = round_up(ceil_div(m, tm), MR);
  const int64_t n_chunk = round_up(ceil_div(n, tn), NR);
#ifdef _OPENMP
#pragma omp parallel for collapse(2) num_threads(static_cast<int>(tm * tn)) schedule(static)
#endif
  for (int64_t ti = 0; ti < tm; ++ti) {
    for (int64_t tj = 0; tj < tn; ++tj) {
      const int64_t i0 = ti * m_chunk, j0 = tj * n_chunk;
      const int64_t mt = std::min(m_chunk, m - i0), nt = std::min(n_chunk, n - j0);
      if (mt <= 0 || nt <= 0) continue;
      gemm_tile(kernels, mt, nt, k, alpha, a + i0 * rsa, rsa, csa, b + j0 * csb, rsb, csb, beta,
                c + i0 * rsc + j0 * csc, rsc, csc);
    }
  }
}

const char* sgemm_kernel_name() { return kernel_name("avx2_fma_6x16"); }

}  // namespace pyrt::cpu
