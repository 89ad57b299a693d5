// Single-precision GEMM: C = alpha * (A @ B) + beta * C, structured like
// GotoBLAS / BLIS.
//
// a is (m, k), b is (k, n), c is (m, n); each has a row stride and a column
// stride in elements (any sign, zero allowed for a and b), so transposed and
// sliced numpy views arrive without copies.
//
// The loop nest, for one thread's tile of C (see "Threads" below):
//
//   for jc in [0, n) step NC:                      B panel  -> L3
//     for pc in [0, k) step KC:
//       pack B[pc:pc+KC, jc:jc+NC] into NR-wide micro-panels (Bp)
//       for ic in [0, m) step MC:                  A block  -> L2
//         pack A[ic:ic+MC, pc:pc+KC] into MR-tall micro-panels (Ap)
//         for jr in [0, NC) step NR:               B micro-panel -> L1
//           for ir in [0, MC) step MR:
//             C[ir:ir+MR, jr:jr+NR] += Ap[ir] @ Bp[jr]   (micro-kernel, registers)
//
// Block sizes, for AMD Zen 3 (32 KiB L1d and 512 KiB L2 per core, L3 shared):
//   MR x NR = 6 x 16: the AVX2 micro-kernel keeps the 6x16 C tile in 12 ymm
//     registers, and per k step loads 2 ymm of B and broadcasts 6 floats of A,
//     which leaves 2 of the 16 ymm registers for B and 1 for the broadcast. 12
//     independent FMA chains hide the FMA latency (4 cycles x 2 pipes = 8 in flight).
//   KC = 256: one B micro-panel (KC x NR x 4 B = 16 KiB) stays in L1 while the
//     kernel walks down the A block, with room for the A micro-panel (6 KiB)
//     and the C tile. Larger KC amortizes the C update better but evicts B.
//   MC = 144: the packed A block (MC x KC x 4 B = 144 KiB) sits in L2 with room
//     for the B micro-panels streaming through.
//   NC = 4080: the packed B panel (KC x NC x 4 B = 4 MiB) lives in L3; with 2
//     threads each packs its own half of n, so both panels fit together.
// The actual KC, MC and NC are shrunk to split k, m and n into equal blocks, so
// k = 784 runs as 4 x 196 rather than 3 x 256 + 16 (a 16-deep block would pay
// a full C update for little work).
//
// Edge tiles: packing pads A and B with zeros up to MR and NR, so the kernel
// always computes a full 6x16 tile; a partial tile (or a C with non-unit
// column stride) is computed into a small buffer and then added into C.
//
// Threads: C is cut into a tm x tn grid, one tile per thread, each running the
// whole loop nest above on its own packed panels. Cutting n makes every thread
// pack all of A, cutting m makes every thread pack all of B, so the grid is
// chosen to minimize tm * n + tn * m packed elements per k. Threads never wait
// on each other, which is what lets the small training shapes (m = 64) scale.
//
// Build (standalone test): g++ -O3 -std=c++17 -fopenmp -Icsrc csrc/cpu/gemm.cpp
//   csrc/cpu/cpu_features.cpp driver.cpp  (AVX2 is chosen at run time;
//   PYRT_DISABLE_AVX2=1 forces the portable kernel).
#include "cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PYRT_HAVE_X86 1
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/cpu_features.h"

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

int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }
int64_t round_up(int64_t x, int64_t y) { return ceil_div(x, y) * y; }

// Block size for a loop of length `len` with at most `max_block` per block,
// rounded up to a multiple of `unit`: equal blocks instead of a ragged tail.
int64_t balanced_block(int64_t len, int64_t max_block, int64_t unit) {
  const int64_t blocks = ceil_div(len, max_block);
  return std::min(max_block, round_up(ceil_div(len, blocks), unit));
}

// Per-thread packing buffer, grown on demand and kept for the thread's life:
// training calls sgemm thousands of times with the same shapes.
class PackBuffer {
 public:
  ~PackBuffer() { std::free(data_); }
  float* get(int64_t count) {
    if (count > capacity_) {
      std::free(data_);
      // 64-byte alignment: each packed k step of B is exactly one cache line.
      const size_t bytes = static_cast<size_t>(round_up(count * 4, 64));
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      capacity_ = count;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  int64_t capacity_ = 0;
};

// ---------------------------------------------------------------------------
// Packing. Ap holds mc rows of A as ceil(mc/MR) micro-panels, each kc x MR
// with the MR values of one k step adjacent; Bp holds nc columns of B as
// ceil(nc/NR) micro-panels, each kc x NR. Rows/columns past the edge are zero.

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
    // panel's line now, a whole panel of FMAs ahead of its use.
    for (int64_t p = 0; p < kc; ++p) {
      const float* row = b + p * rsb;
      __builtin_prefetch(row + NR);
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
// Micro-kernels. Contract: c points at a full MR x NR tile with row stride rsc
// and unit column stride; c = alpha * (ap @ bp) + beta * c, and beta == 0
// writes c without reading it.

using MicroKernel = void (*)(int64_t kc, const float* ap, const float* bp, float* c, int64_t rsc,
                             float alpha, float beta);

// Plain C++ with the tile in a local array; at -O3 gcc vectorizes the j loops
// with whatever the baseline ISA offers (SSE2 on x86-64).
void kernel_portable(int64_t kc, const float* ap, const float* bp, float* c, int64_t rsc,
                     float alpha, float beta) {
  float acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t i = 0; i < MR; ++i) {
      const float a = ap[p * MR + i];
      for (int64_t j = 0; j < NR; ++j) acc[i][j] += a * bp[p * NR + j];
    }
  }
  for (int64_t i = 0; i < MR; ++i) {
    float* row = c + i * rsc;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < NR; ++j) row[j] = alpha * acc[i][j];
    } else {
      for (int64_t j = 0; j < NR; ++j) row[j] = alpha * acc[i][j] + beta * row[j];
    }
  }
}

#ifdef PYRT_HAVE_X86
// One row of the C tile: row = alpha * acc + beta * row, without reading row
// when beta == 0.
__attribute__((target("avx2,fma"), always_inline)) inline void update_row(float* row, __m256 lo,
                                                                         __m256 hi, __m256 va,
                                                                         __m256 vb, bool read_c) {
  if (read_c) {
    lo = _mm256_fmadd_ps(va, lo, _mm256_mul_ps(vb, _mm256_loadu_ps(row)));
    hi = _mm256_fmadd_ps(va, hi, _mm256_mul_ps(vb, _mm256_loadu_ps(row + 8)));
  } else {
    lo = _mm256_mul_ps(va, lo);
    hi = _mm256_mul_ps(va, hi);
  }
  _mm256_storeu_ps(row, lo);
  _mm256_storeu_ps(row + 8, hi);
}

__attribute__((target("avx2,fma"))) void kernel_avx2_fma_6x16(int64_t kc, const float* ap,
                                                              const float* bp, float* c,
                                                              int64_t rsc, float alpha,
                                                              float beta) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();

#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_load_ps(bp);
    const __m256 b1 = _mm256_load_ps(bp + 8);
    __m256 a = _mm256_broadcast_ss(ap + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(ap + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(ap + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(ap + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(ap + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(ap + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
    ap += MR;
    bp += NR;
  }

  const __m256 va = _mm256_set1_ps(alpha);
  const __m256 vb = _mm256_set1_ps(beta);
  const bool read_c = beta != 0.0f;
  update_row(c + 0 * rsc, c00, c01, va, vb, read_c);
  update_row(c + 1 * rsc, c10, c11, va, vb, read_c);
  update_row(c + 2 * rsc, c20, c21, va, vb, read_c);
  update_row(c + 3 * rsc, c30, c31, va, vb, read_c);
  update_row(c + 4 * rsc, c40, c41, va, vb, read_c);
  update_row(c + 5 * rsc, c50, c51, va, vb, read_c);
}
#endif

MicroKernel select_kernel() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return kernel_avx2_fma_6x16;
#endif
  return kernel_portable;
}

// ---------------------------------------------------------------------------
// Macro-kernel: the jr / ir loops over one packed A block and B panel.
//
// B is packed inside this loop, one micro-panel just before its first use,
// when b_to_pack is given (the first ic block of each B panel): the panel is
// then still in L1 for the kernel, the reads of B overlap the FMAs of the
// previous panel, and a small m (one ic block) never writes the packed B
// panel out to L3 and reads it back.

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

void macro_kernel(MicroKernel kernel, int64_t mc, int64_t nc, int64_t kc, float alpha,
                  const float* ap, float* bp, const float* b_to_pack, int64_t rsb, int64_t csb,
                  float beta, float* c, int64_t rsc, int64_t csc) {
  alignas(64) float tile[MR * NR];
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t nr = std::min(NR, nc - jr);
    float* b_panel = bp + jr * kc;
    if (b_to_pack != nullptr) pack_b_panel(kc, nr, b_to_pack + jr * csb, rsb, csb, b_panel);
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int64_t mr = std::min(MR, mc - ir);
      const float* a_panel = ap + ir * kc;
      float* cij = c + ir * rsc + jr * csc;
      if (mr == MR && nr == NR && csc == 1) {
        kernel(kc, a_panel, b_panel, cij, rsc, alpha, beta);
        continue;
      }
      kernel(kc, a_panel, b_panel, tile, NR, alpha, 0.0f);
      add_tile(mr, nr, tile, beta, cij, rsc, csc);
    }
  }
}

// The whole loop nest for one thread's (m, n) tile of C, on its own buffers.
void gemm_tile(MicroKernel kernel, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t rsa, int64_t csa, const float* b, int64_t rsb, int64_t csb, float beta,
               float* c, int64_t rsc, int64_t csc) {
  thread_local PackBuffer a_buffer;
  thread_local PackBuffer b_buffer;
  const int64_t mc_max = balanced_block(m, MC, MR);
  const int64_t kc_max = balanced_block(k, KC, 1);
  const int64_t nc_max = balanced_block(n, NC, NR);
  float* ap = a_buffer.get(mc_max * kc_max);
  float* bp = b_buffer.get(kc_max * nc_max);

  for (int64_t jc = 0; jc < n; jc += nc_max) {
    const int64_t nc = std::min(nc_max, n - jc);
    for (int64_t pc = 0; pc < k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, k - pc);
      // Later k blocks accumulate onto what the first one wrote.
      const float beta_block = pc == 0 ? beta : 1.0f;
      for (int64_t ic = 0; ic < m; ic += mc_max) {
        const int64_t mc = std::min(mc_max, m - ic);
        pack_a(mc, kc, a + ic * rsa + pc * csa, rsa, csa, ap);
        const float* b_to_pack = ic == 0 ? b + pc * rsb + jc * csb : nullptr;
        macro_kernel(kernel, mc, nc, kc, alpha, ap, bp, b_to_pack, rsb, csb, beta_block,
                     c + ic * rsc + jc * csc, rsc, csc);
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

int max_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
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
  static const MicroKernel kernel = select_kernel();

  // Thread grid: enough work per thread, at most one MR x NR tile per thread
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
    gemm_tile(kernel, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
    return;
  }
  // Tile edges fall on MR / NR multiples so only the last tile has partial
  // micro-tiles, and C tiles of different threads never share a cache line
  // when rows are 64-byte aligned.
  const int64_t m_chunk = round_up(ceil_div(m, tm), MR);
  const int64_t n_chunk = round_up(ceil_div(n, tn), NR);
#pragma omp parallel for collapse(2) num_threads(static_cast<int>(tm * tn)) schedule(static)
  for (int64_t ti = 0; ti < tm; ++ti) {
    for (int64_t tj = 0; tj < tn; ++tj) {
      const int64_t i0 = ti * m_chunk, j0 = tj * n_chunk;
      const int64_t mt = std::min(m_chunk, m - i0), nt = std::min(n_chunk, n - j0);
      if (mt <= 0 || nt <= 0) continue;
      gemm_tile(kernel, mt, nt, k, alpha, a + i0 * rsa, rsa, csa, b + j0 * csb, rsb, csb, beta,
                c + i0 * rsc + j0 * csc, rsc, csc);
    }
  }
}

const char* sgemm_kernel_name() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return "avx2_fma_6x16";
#endif
  return "portable";
}

}  // namespace pyrt::cpu
