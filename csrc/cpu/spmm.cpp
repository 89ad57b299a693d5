// CSR sparse times dense: C = alpha * (A @ B) + beta * C.
//
// a is (m, k) CSR: indptr (m+1,), indices (nnz,), values (nnz,), int64 indices.
// b is (k, n) row-major with row stride ldb; c is (m, n) row-major with row
// stride ldc. Target shape: a pruned 4096 x 4096 weight (50-99% zeros) times a
// 4096 x 256 activation.
//
// Two loop nests. The packed one (AVX2/FMA, every product big enough to pay
// for a copy of B) first copies B into panels of W = 96 columns, panel-major,
// each row of a panel 384 contiguous bytes; then, for one thread's rows and
// panels:
//
//   for i0 in rows step RB:                       C block (RB x n) -> L2
//     for k0 in [0, k) step KB:                   A's nonzeros in the block -> L1/L2
//       for each panel j0:                        packed B block (KB x W) -> L2
//         for i in [i0, i0 + RB):
//           acc[0:W] = 0                          (W/8 ymm registers)
//           for p over row i's nonzeros with column in [k0, k0+KB):
//             acc += values[p] * Bpacked[indices[p], j0:j0+W]
//           C[i, j0:j0+W] = alpha * acc + beta * C   (first k block)
//           C[i, j0:j0+W] += alpha * acc             (later k blocks; skipped
//                                                      when the row had none)
//
// with W = 96, KB = 256, RB = 128. The other nest (the portable kernel, and
// AVX2 products too small to pack) reads B in place:
//
//   for i0 in rows step RB:                       RB = 256
//     for j0 in [0, n) step W:                    W = 96
//       for k0 in [0, k) step KB:                 KB = 512, B block in place
//         for i in [i0, i0 + RB): (as above)
//
// Why this shape:
// - A row of C stays in registers while its nonzeros stream past; each nonzero
//   costs W/8 FMAs that take their B operand straight from memory. W = 96
//   (12 accumulators + 1 broadcast register of 16) is the widest panel that does
//   not spill; W = 128 spilled two accumulators and W = 64 reloads A 4 times
//   instead of 3 (measured ~5-10% slower each, 1 thread, 90% sparsity).
//   n % W columns run as a narrower panel of whole vectors, the last n % 8
//   masked on C (the packed copy zero-pads B, so B's loads are whole vectors).
// - B is the traffic that matters: every nonzero reads W floats of a random row
//   of B, while A is read once per panel. At the target shape B is 4 MiB, a
//   4096 x 96 panel 1.5 MiB, both past the 512 KiB L2, so k is cut into blocks
//   whose B fits in L2; the price is one extra read+write of the C row
//   fragment per k block.
// - Why pack: B's rows in place are 1 KiB apart (n = 256), so a 96-column block
//   of them uses 6 of every 16 cache sets; a 512-row block then fills each of
//   those L2 sets to its 8 ways and evicts itself, the C rows and A. Packed,
//   a KB x 96 block is one contiguous 96 KiB run that every set shares
//   evenly. The copy is one pass over B (4 MiB, well under 1 ms, split between
//   the threads) against 1.7 M nonzeros that each read a row of it.
// - RB = 256 rows per pass keeps their C block (256 KiB at n = 256), the B
//   block (KB = 256: 96 KiB) and the rows' nonzeros of the k block (~80 KiB)
//   in the 512 KiB L2 together; the packed B is then re-read from L3 once per
//   row block (4 MiB per 256 rows). A's nonzeros of a k block are found once
//   (by the first panel, which stops each row at its first column >= k0 + KB
//   and records where) and re-read by the other panels from cache.
// - Measured (target shape, 90% zeros, 1 thread, thread CPU time, min of 30-40
//   alternating rounds of every variant in one process, load average 4-9):
//   the in-place nest 36.2 ms, packed with KB = 256, RB = 128 29.5 ms (1.23x);
//   under heavier load RB = 256 kept more of it (50 vs 54 ms, in-place 65).
//   KB = 192-384 within noise of 256; KB = 64 or 128 with 96 columns (block in
//   L1) 1.2-1.7x slower, as were W = 32 and 64 with L1-sized blocks (KB = 192,
//   96): a row then has 6-19 nonzeros per block, and its C read+write and loop
//   exit per block cost more than L1 saves; software prefetch of
//   B[indices[p + d]] (d = 2, 4, 8) within noise. With B in L2 the ceiling is
//   its bandwidth, not the FMAs: 384 bytes per nonzero at 32 bytes/cycle is
//   12 cycles for 12 FMAs, 50% of peak; packed runs at ~33%.
// - CSR columns are sorted, so a row's nonzeros for block k0 follow those for
//   the previous block: a per-row cursor resumes each row where the last block
//   stopped, with no search. (Unsorted columns stay correct: the last k block
//   takes every nonzero left, and B is addressed by absolute row.)
//
// Threads: C is cut into a tm x tn grid. Rows are split so each thread gets an
// equal share of (nnz + rows) — prefix sums of nnz, not row counts, since pruned
// rows differ wildly in length; the "+ rows" charges each row the cost of
// writing its C row, so empty rows are not free. n is split into whole panels.
// The grid with the smallest largest share wins: rows normally, columns when a
// few heavy rows would leave a thread idle (one dense row holding all nonzeros).
// Problems under kMinFmasPerThread per thread stay on one thread: waking an
// OpenMP thread costs a few microseconds. On the packed path every thread
// first packs a share of B's rows, then all wait at one barrier. At n = 256
// (3 panels) the grid splits rows; splitting columns (W = 64, 2 panels per
// thread, so each thread packs and reads only its half of B) measured within
// noise of it at 2 threads.
//
// Build (standalone test): g++ -O3 -std=c++17 -fopenmp -Icsrc csrc/cpu/spmm.cpp
//   csrc/cpu/cpu_features.cpp spmm_driver.cpp   (AVX2 is chosen at run time;
//   PYRT_DISABLE_AVX2=1 forces the portable kernel).
#include "cpu/spmm.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/blocking.h"
#include "cpu/cpu_features.h"
#include "cpu/threads.h"

namespace pyrt::cpu {

namespace {

// Panel width in 8-float vectors (W = 8 * kPanelVectors floats) and the
// largest k block (KB), see the top of the file.
constexpr int kPanelVectors = 12;
constexpr int64_t kPanel = 8 * kPanelVectors;
constexpr int64_t kMaxKBlock = 512;
// Rows per pass over the k blocks (see the top of the file): 256 C fragments of
// W floats are 96 KiB, which stay in L2 next to the 192 KiB block of B.
constexpr int64_t kRowBlock = 256;

// Below this many multiply-adds per thread a parallel region costs more than
// it saves (same figure as sgemm: ~3 us of work against a few us of wake-up).
constexpr int64_t kMinFmasPerThread = 256 * 1024;
// The same few microseconds of SpMV (n == 1) at ~1 nonzero per cycle.
constexpr int64_t kMinNonzerosPerThread = 16 * 1024;
constexpr int64_t kMaxThreads = 256;


// Everything a row kernel needs; rows [row_begin, row_end) and columns
// [col, col + width) of C.
struct RowBlock {
  const int64_t* indptr;
  const int64_t* indices;
  const float* values;
  const float* b;  // already offset to column `col`
  int64_t ldb;
  float* c;  // already offset to column `col`
  int64_t ldc;
  int64_t row_begin, row_end;
  float alpha, beta;
  // k blocking: when cursor is set, row i runs from cursor[i - row_begin] over
  // the nonzeros with column < k_end and leaves the cursor after them; the
  // first block applies beta to C, later ones add to it.
  int64_t* cursor;
  int64_t k_end;
  bool first_block;
};

// ---------------------------------------------------------------------------
// Portable kernel: plain C++ over a W-wide local accumulator; at -O3 gcc
// vectorizes the j loops with the baseline ISA (SSE2 on x86-64).

void rows_portable(const RowBlock& r, int64_t width) {
  float acc[kPanel];
  for (int64_t i = r.row_begin; i < r.row_end; ++i) {
    for (int64_t j = 0; j < width; ++j) acc[j] = 0.0f;
    int64_t p = r.cursor ? r.cursor[i - r.row_begin] : r.indptr[i];
    for (const int64_t end = r.indptr[i + 1]; p < end && r.indices[p] < r.k_end; ++p) {
      const float a = r.values[p];
      const float* brow = r.b + r.indices[p] * r.ldb;
      for (int64_t j = 0; j < width; ++j) acc[j] += a * brow[j];
    }
    float* crow = r.c + i * r.ldc;
    if (r.cursor) r.cursor[i - r.row_begin] = p;
    if (!r.first_block) {
      for (int64_t j = 0; j < width; ++j) crow[j] += r.alpha * acc[j];
    } else if (r.beta == 0.0f) {
      for (int64_t j = 0; j < width; ++j) crow[j] = r.alpha * acc[j];
    } else {
      for (int64_t j = 0; j < width; ++j) crow[j] = r.alpha * acc[j] + r.beta * crow[j];
    }
  }
}

#ifdef PYRT_HAVE_X86
// ---------------------------------------------------------------------------
// AVX2/FMA kernel: V full vectors per row held in V ymm accumulators, plus
// (when MASKED) one more vector of which only the lanes in `mask` are loaded
// and stored. maskload never faults on masked-off lanes, so reading past the
// last column of B (or C) is safe even at the end of an allocation.

// C's row from the accumulators (V full vectors, then `mask`'s lanes when MASKED):
// C += alpha acc after the first k block, else C = alpha acc + beta C (C unread when
// beta == 0, as in BLAS). Shared by the in-place and the packed kernels.
template <int V, bool MASKED>
__attribute__((target("avx2,fma"), always_inline)) inline void store_c_row(
    float* crow, const __m256* acc, __m256i mask, __m256 valpha, __m256 vbeta,
    bool first_block, float beta) {
  if (!first_block) {
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      _mm256_storeu_ps(crow + 8 * v, _mm256_fmadd_ps(valpha, acc[v], _mm256_loadu_ps(crow + 8 * v)));
    }
    if constexpr (MASKED) {
      _mm256_maskstore_ps(crow + 8 * V, mask,
                          _mm256_fmadd_ps(valpha, acc[V], _mm256_maskload_ps(crow + 8 * V, mask)));
    }
  } else if (beta == 0.0f) {
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(crow + 8 * v, _mm256_mul_ps(valpha, acc[v]));
    if constexpr (MASKED) _mm256_maskstore_ps(crow + 8 * V, mask, _mm256_mul_ps(valpha, acc[V]));
  } else {
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      const __m256 old = _mm256_loadu_ps(crow + 8 * v);
      _mm256_storeu_ps(crow + 8 * v, _mm256_fmadd_ps(valpha, acc[v], _mm256_mul_ps(vbeta, old)));
    }
    if constexpr (MASKED) {
      const __m256 old = _mm256_maskload_ps(crow + 8 * V, mask);
      _mm256_maskstore_ps(crow + 8 * V, mask, _mm256_fmadd_ps(valpha, acc[V], _mm256_mul_ps(vbeta, old)));
    }
  }
}

template <int V, bool MASKED>
__attribute__((target("avx2,fma"))) void rows_avx2(const RowBlock& r, int rest) {
  constexpr int NV = V + (MASKED ? 1 : 0);
  // Lane l is on when l < rest.
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(rest), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 valpha = _mm256_set1_ps(r.alpha);
  const __m256 vbeta = _mm256_set1_ps(r.beta);
  const int64_t* indptr = r.indptr;
  const int64_t* indices = r.indices;
  const float* values = r.values;
  const float* b = r.b;
  const int64_t ldb = r.ldb;
  for (int64_t i = r.row_begin; i < r.row_end; ++i) {
    __m256 acc[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
    const int64_t end = indptr[i + 1];
    const int64_t k_end = r.k_end;
    int64_t p = r.cursor ? r.cursor[i - r.row_begin] : indptr[i];
    for (; p < end && indices[p] < k_end; ++p) {
      const __m256 a = _mm256_broadcast_ss(values + p);
      const float* brow = b + indices[p] * ldb;
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[v] = _mm256_fmadd_ps(a, _mm256_loadu_ps(brow + 8 * v), acc[v]);
      if constexpr (MASKED) {
        acc[V] = _mm256_fmadd_ps(a, _mm256_maskload_ps(brow + 8 * V, mask), acc[V]);
      }
    }
    if (r.cursor) r.cursor[i - r.row_begin] = p;
    store_c_row<V, MASKED>(r.c + i * r.ldc, acc, mask, valpha, vbeta, r.first_block, r.beta);
  }
}

using RowKernelAvx2 = void (*)(const RowBlock&, int rest);

// kTable[MASKED][V] for V in [0, kPanelVectors]: every panel width from 1 to W
// floats has a kernel with exactly the registers it needs.
template <bool MASKED, int... Vs>
constexpr auto make_table(std::integer_sequence<int, Vs...>) {
  return std::array<RowKernelAvx2, sizeof...(Vs)>{&rows_avx2<Vs, MASKED>...};
}

void rows_avx2_width(const RowBlock& r, int64_t width) {
  static constexpr auto full = make_table<false>(std::make_integer_sequence<int, kPanelVectors + 1>{});
  static constexpr auto masked = make_table<true>(std::make_integer_sequence<int, kPanelVectors + 1>{});
  const int64_t vectors = width / 8;
  const int rest = static_cast<int>(width % 8);
  (rest == 0 ? full : masked)[vectors](r, rest);
}
#endif

// ---------------------------------------------------------------------------
// Packed path (AVX2): B copied once per call into panels of kPackVectors * 8
// columns, panel-major ([panel][row of B][W]), so that a k block of B for one
// panel is kPackK * W contiguous floats that stay in L1 (see the top of the
// file).

constexpr int kPackVectors = 12;
constexpr int64_t kPackW = 8 * kPackVectors;
constexpr int64_t kPackK = 256;
constexpr int64_t kPackRows = 256;
// Pack B only when each of its rows feeds at least this many nonzeros on
// average (nnz >= kPackMinUses * k). Below, the copy (one pass over B) and the
// short k blocks lose: at 99% zeros of the target shape (41 nonzeros per row
// of B, 2.6 per row of A and k block) packed measured a median 12.4 ms
// against 9.5 ms in place (1 thread, CPU time, alternating rounds); at 95%
// (205 per row of B) and denser, packing wins.
constexpr int64_t kPackMinUses = 100;
// ... and when the packed copy stays below this size (bytes).
constexpr int64_t kPackMaxBytes = int64_t{64} << 20;

// One call of the tile kernel: rows [row_begin, row_end) of C, one panel of B
// (already offset to the panel, row stride kPackW), one k block of A's
// nonzeros: row i's run from starts[i - row_begin] to ends[i - row_begin], or,
// when find_ends, up to its first column >= k_end (then stored in ends).
struct PackedTile {
  const int64_t* indptr;
  const int64_t* indices;
  const float* values;
  const float* panel;  // packed panel: row r of B at panel + r * ldp
  int64_t ldp;
  float* c;  // already offset to the panel's first column
  int64_t ldc;
  int64_t row_begin, row_end;
  const int64_t* starts;
  int64_t* ends;
  int64_t k_end;
  float alpha, beta;
  bool first_block;
};

#ifdef PYRT_HAVE_X86
template <int V, bool MASKED, bool FIND_ENDS>
__attribute__((target("avx2,fma"))) void tile_avx2(const PackedTile& t, int rest) {
  constexpr int NV = V + (MASKED ? 1 : 0);
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(rest), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 valpha = _mm256_set1_ps(t.alpha);
  const __m256 vbeta = _mm256_set1_ps(t.beta);
  const int64_t* indices = t.indices;
  const float* values = t.values;
  const float* panel = t.panel;
  const int64_t ldp = t.ldp;
  for (int64_t i = t.row_begin; i < t.row_end; ++i) {
    const int64_t start = t.starts[i - t.row_begin];
    int64_t p = start;
    int64_t end;
    if constexpr (FIND_ENDS) {
      end = t.indptr[i + 1];
    } else {
      end = t.ends[i - t.row_begin];
    }
    __m256 acc[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
    for (; p < end; ++p) {
      if constexpr (FIND_ENDS) {
        if (indices[p] >= t.k_end) break;
      }
      const __m256 a = _mm256_broadcast_ss(values + p);
      const float* brow = panel + indices[p] * ldp;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(a, _mm256_load_ps(brow + 8 * v), acc[v]);
    }
    if constexpr (FIND_ENDS) t.ends[i - t.row_begin] = p;
    if (!t.first_block && p == start) continue;  // nothing in this block: C += 0
    store_c_row<V, MASKED>(t.c + i * t.ldc, acc, mask, valpha, vbeta, t.first_block, t.beta);
  }
}

using TileKernel = void (*)(const PackedTile&, int rest);

template <bool MASKED, bool FIND_ENDS, int... Vs>
constexpr auto make_tile_table(std::integer_sequence<int, Vs...>) {
  return std::array<TileKernel, sizeof...(Vs)>{&tile_avx2<Vs, MASKED, FIND_ENDS>...};
}

// Width 1..kPackW: V whole vectors, plus one masked vector for width % 8.
// The masked vector still loads all 8 lanes of B: packing zero-fills them.
void tile_avx2_width(const PackedTile& t, int64_t width, bool find_ends) {
  static constexpr auto full = make_tile_table<false, false>(std::make_integer_sequence<int, kPackVectors + 1>{});
  static constexpr auto masked = make_tile_table<true, false>(std::make_integer_sequence<int, kPackVectors>{});
  static constexpr auto full_f = make_tile_table<false, true>(std::make_integer_sequence<int, kPackVectors + 1>{});
  static constexpr auto masked_f = make_tile_table<true, true>(std::make_integer_sequence<int, kPackVectors>{});
  const int64_t vectors = width / 8;
  const int rest = static_cast<int>(width % 8);
  if (find_ends) {
    (rest == 0 ? full_f[vectors] : masked_f[vectors])(t, rest);
  } else {
    (rest == 0 ? full[vectors] : masked[vectors])(t, rest);
  }
}
#endif

// Rows [k_begin, k_end) of B (k, n) into panels of ldp columns (ldp = kPackW,
// or n rounded up to a vector when n is narrower): row r of panel q at
// packed + (q * k + r) * ldp, the last panel zero-padded to whole vectors.
void pack_b_rows(const float* b, int64_t ldb, int64_t k, int64_t n, int64_t ldp, int64_t k_begin,
                 int64_t k_end, float* packed) {
  for (int64_t j0 = 0, panel = 0; j0 < n; j0 += ldp, ++panel) {
    const int64_t width = std::min(ldp, n - j0);
    const int64_t padded = round_up(width, 8);
    float* dst = packed + (panel * k + k_begin) * ldp;
    for (int64_t r = k_begin; r < k_end; ++r, dst += ldp) {
      std::memcpy(dst, b + r * ldb + j0, static_cast<size_t>(width) * sizeof(float));
      for (int64_t j = width; j < padded; ++j) dst[j] = 0.0f;
    }
  }
}

// Rows [row_begin, row_end) times panels [panel_begin, panel_end) of C, from
// packed B: for each block of kPackRows rows, for each k block, for each
// panel, every row's nonzeros in that k block.
void packed_tile(const PackedTile& base, const float* packed, int64_t k, int64_t n, int64_t row_begin,
                 int64_t row_end, int64_t panel_begin, int64_t panel_end, float* c) {
  const int64_t ldp = base.ldp;
#ifdef PYRT_HAVE_X86
  int64_t starts[kPackRows], ends[kPackRows];
  const int64_t kb = k <= kPackK ? k : ceil_div(k, ceil_div(k, kPackK));
  PackedTile t = base;
  t.starts = starts;
  t.ends = ends;
  for (int64_t i0 = row_begin; i0 < row_end; i0 += kPackRows) {
    t.row_begin = i0;
    t.row_end = std::min(row_end, i0 + kPackRows);
    std::copy(base.indptr + t.row_begin, base.indptr + t.row_end, starts);
    for (int64_t k0 = 0; k0 < k; k0 += kb) {
      t.k_end = k0 + kb >= k ? INT64_MAX : k0 + kb;  // the last block takes every remaining nonzero
      t.first_block = k0 == 0;
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        t.panel = packed + panel * k * ldp;
        t.c = c + panel * ldp;
        tile_avx2_width(t, std::min(ldp, n - panel * ldp), panel == panel_begin);
      }
      std::copy(ends, ends + (t.row_end - t.row_begin), starts);
    }
  }
#else
  (void)base, (void)packed, (void)k, (void)n, (void)row_begin, (void)row_end, (void)panel_begin,
      (void)panel_end, (void)c;
#endif
}

using RowKernel = void (*)(const RowBlock&, int64_t width);

RowKernel select_kernel() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return rows_avx2_width;
#endif
  return rows_portable;
}

// Rows [row_begin, row_end) times columns [col_begin, col_end) of C, a panel
// at a time; when k is blocked, a block of kRowBlock rows at a time, so that
// the C fragments of those rows stay in L2 across the k blocks.
void spmm_tile(RowKernel kernel, RowBlock r, int64_t col_begin, int64_t col_end, int64_t k) {
  const float* b = r.b;
  float* c = r.c;
  // Equal k blocks (k = 600 runs as 2 x 300, not 512 + 88): a short block
  // pays a full C update for few nonzeros.
  const int64_t kb = k <= kMaxKBlock ? k : ceil_div(k, ceil_div(k, kMaxKBlock));
  // Unblocked k writes each C fragment once: sweep all rows per panel, so the
  // panel of B stays in L2 for all of them.
  const int64_t row_block = kb < k ? kRowBlock : r.row_end - r.row_begin;
  int64_t cursor[kRowBlock];
  const int64_t row_end = r.row_end;
  for (int64_t i0 = r.row_begin; i0 < row_end; i0 += row_block) {
    r.row_begin = i0;
    r.row_end = std::min(row_end, i0 + row_block);
    for (int64_t j0 = col_begin; j0 < col_end; j0 += kPanel) {
      r.b = b + j0;
      r.c = c + j0;
      if (kb >= k) {
        kernel(r, std::min(kPanel, col_end - j0));
        continue;
      }
      std::copy(r.indptr + r.row_begin, r.indptr + r.row_end, cursor);
      r.cursor = cursor;
      for (int64_t k0 = 0; k0 < k; k0 += kb) {
        r.k_end = k0 + kb;
        r.first_block = k0 == 0;
        kernel(r, std::min(kPanel, col_end - j0));
      }
      r.cursor = nullptr;
    }
  }
}

// ---------------------------------------------------------------------------
// n == 1: y = A x, a batch of one through a pruned layer. The panel kernel
// would run one masked lane per nonzero into a single accumulator, one FMA
// latency (4 cycles) per nonzero. Here each row is a dot product of its values
// with the gathered x[indices[p]]. The portable loop keeps four independent
// sums (unrolled by 4): three loads per nonzero, ~1 nonzero per cycle from
// L1/L2; the AVX2 kernel below assembles x into vectors (~1.3-1.45x faster).
// A is 12 bytes per nonzero, so at 80% zeros it reads 2.4 bytes per weight
// where the dense GEMV reads 4.

__attribute__((always_inline)) inline void spmv_body(const int64_t* indptr, const int64_t* indices,
                                                     const float* values, const float* x, int64_t ldx,
                                                     float alpha, float beta, float* y, int64_t ldy,
                                                     int64_t row_begin, int64_t row_end) {
  for (int64_t i = row_begin; i < row_end; ++i) {
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int64_t p = indptr[i];
    const int64_t end = indptr[i + 1];
    for (; p + 4 <= end; p += 4) {
      s0 += values[p] * x[indices[p] * ldx];
      s1 += values[p + 1] * x[indices[p + 1] * ldx];
      s2 += values[p + 2] * x[indices[p + 2] * ldx];
      s3 += values[p + 3] * x[indices[p + 3] * ldx];
    }
    for (; p < end; ++p) s0 += values[p] * x[indices[p] * ldx];
    const float dot = (s0 + s1) + (s2 + s3);
    y[i * ldy] = alpha * dot + (beta == 0.0f ? 0.0f : beta * y[i * ldy]);  // beta == 0 ignores NaNs in y
  }
}

void spmv_portable(const int64_t* indptr, const int64_t* indices, const float* values, const float* x,
                   int64_t ldx, float alpha, float beta, float* y, int64_t ldy, int64_t row_begin,
                   int64_t row_end) {
  spmv_body(indptr, indices, values, x, ldx, alpha, beta, y, ldy, row_begin, row_end);
}

#ifdef PYRT_HAVE_X86
// AVX2/FMA, contiguous x: x[indices[p]] for 4 nonzeros are put together in one
// xmm (vmovd + 3 vpinsrd, each folding its load of x), 8 such with one
// vinsertf128, and multiplied by 8 values loaded as one vector; two ymm
// accumulators over 16 nonzeros a step, then one step of 8 and one of 4, the
// last 0-3 scalar. Per 8 nonzeros: 8 index loads, 8 x loads, 1 values load
// (the scalar loop: 24) and 1 FMA. Why not _mm256_i{32,64}gather_ps: on this
// Zen 3 (EPYC) the gathers ran 1.3-1.5x slower than the scalar loop, whether
// on the int64 indices (2 x 4-lane gathers) or on indices packed to int32
// (1 x 8-lane). Measured, 1 thread, min (median) of 100 alternating rounds,
// per call: 1024 x 784 at 80% zeros 57 (88) us vs 83 (122) us for the scalar
// loop, at 90% 29 (39) vs 39 (50); 512 x 1024 at 80% 36 (57) vs 49 (75), at
// 90% 18 (23) vs 24 (29). The sum is over 8 lanes, not 4 scalars, so results
// differ from spmv_portable by rounding (same order on every call).
// x with a stride (ldx != 1) keeps the scalar loop.

// x[p[0..3]] as the 4 lanes of an xmm; p: (4,) column indices of x.
__attribute__((target("avx2,fma"), always_inline)) inline __m128 gather4_x(const float* x, const int64_t* p) {
  // Integer inserts take their load from memory (vinsertps would need a vmovss
  // first); memcpy reads the float's bits without type punning.
  const auto bits = [x](int64_t j) {
    int32_t v;
    std::memcpy(&v, x + j, sizeof(v));
    return v;
  };
  __m128i v = _mm_cvtsi32_si128(bits(p[0]));
  v = _mm_insert_epi32(v, bits(p[1]), 1);
  v = _mm_insert_epi32(v, bits(p[2]), 2);
  v = _mm_insert_epi32(v, bits(p[3]), 3);
  return _mm_castsi128_ps(v);
}

// x[p[0..7]] as the 8 lanes of a ymm; p: (8,) column indices of x.
__attribute__((target("avx2,fma"), always_inline)) inline __m256 gather8_x(const float* x, const int64_t* p) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(gather4_x(x, p)), gather4_x(x, p + 4), 1);
}

// indptr: (m+1,), indices/values: (nnz,), x: (k,) stride ldx, y: (m,) stride ldy;
// rows [row_begin, row_end).
__attribute__((target("avx2,fma"))) void spmv_avx2(const int64_t* indptr, const int64_t* indices,
                                                   const float* values, const float* x, int64_t ldx,
                                                   float alpha, float beta, float* y, int64_t ldy,
                                                   int64_t row_begin, int64_t row_end) {
  if (ldx != 1) {
    spmv_body(indptr, indices, values, x, ldx, alpha, beta, y, ldy, row_begin, row_end);
    return;
  }
  for (int64_t i = row_begin; i < row_end; ++i) {
    int64_t p = indptr[i];
    const int64_t end = indptr[i + 1];
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; p + 16 <= end; p += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p), gather8_x(x, indices + p), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p + 8), gather8_x(x, indices + p + 8), acc1);
    }
    if (p + 8 <= end) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p), gather8_x(x, indices + p), acc0);
      p += 8;
    }
    const __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    if (p + 4 <= end) {
      s4 = _mm_fmadd_ps(_mm_loadu_ps(values + p), gather4_x(x, indices + p), s4);
      p += 4;
    }
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    float dot = _mm_cvtss_f32(_mm_add_ss(s4, _mm_movehdup_ps(s4)));
    for (; p < end; ++p) dot += values[p] * x[indices[p]];
    y[i * ldy] = alpha * dot + (beta == 0.0f ? 0.0f : beta * y[i * ldy]);  // beta == 0 ignores NaNs in y
  }
}
#endif

using SpmvKernel = decltype(&spmv_portable);

SpmvKernel select_spmv() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return spmv_avx2;
#endif
  return spmv_portable;
}

// Work of row i is (nnz in row i) + 1; its prefix sum is indptr[i] - indptr[0] + i,
// increasing in i, so the row where a thread's share starts is a binary search.
int64_t row_at_work(const int64_t* indptr, int64_t m, int64_t work) {
  int64_t lo = 0, hi = m;  // smallest i with prefix(i) >= work
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (indptr[mid] - indptr[0] + mid < work) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Row boundaries for `parts` shares of equal work: rows[t] .. rows[t+1].
void split_rows(const int64_t* indptr, int64_t m, int64_t parts, int64_t* rows) {
  const int64_t total = indptr[m] - indptr[0] + m;
  for (int64_t t = 0; t <= parts; ++t) rows[t] = row_at_work(indptr, m, total * t / parts);
}


// The tm x tn grid of `threads` tiles (rows split at equal work, `panels`
// split evenly) with the least work in its busiest tile; rows[0..tm] are the
// row boundaries. False when no grid fits (fewer rows and panels than threads).
bool choose_grid(const int64_t* indptr, int64_t m, int64_t threads, int64_t panels, int64_t* best_rows,
                 int64_t* tm, int64_t* tn) {
  int64_t rows[kMaxThreads + 1];
  int64_t best_cost = -1;
  for (int64_t t = 1; t <= std::min(threads, kMaxThreads); ++t) {
    if (threads % t != 0 || t > m || threads / t > panels) continue;
    split_rows(indptr, m, t, rows);
    int64_t heaviest = 0;
    for (int64_t i = 0; i < t; ++i) {
      heaviest = std::max(heaviest, indptr[rows[i + 1]] - indptr[rows[i]] + rows[i + 1] - rows[i]);
    }
    const int64_t cost = heaviest * ceil_div(panels, threads / t);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      *tm = t;
      *tn = threads / t;
      std::copy(rows, rows + t + 1, best_rows);
    }
  }
  return best_cost >= 0;
}

// The packed copy of B, kept between calls by the calling thread: 4 MiB at the
// target shape, and a fresh allocation per call would pay its page faults
// (about 1 ms) every time.
float* pack_buffer(int64_t floats) {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  static thread_local std::unique_ptr<float, Free> buffer;
  static thread_local int64_t capacity = 0;
  if (floats > capacity) {
    buffer.reset();
    const size_t bytes = static_cast<size_t>(round_up(floats * static_cast<int64_t>(sizeof(float)), 64));
    buffer.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!buffer) throw std::bad_alloc();
    capacity = floats;
  }
  return buffer.get();
}

// Packs B and runs every tile of a tm x tn grid: all threads pack a share of
// B's rows, wait for each other, then each runs its tile.
void spmm_packed(int64_t m, int64_t n, int64_t k, float alpha, const int64_t* indptr,
                 const int64_t* indices, const float* values, const float* b, int64_t ldb, float beta,
                 float* c, int64_t ldc, int64_t threads) {
  const int64_t ldp = std::min(kPackW, round_up(n, 8));
  const int64_t panels = ceil_div(n, ldp);
  float* packed = pack_buffer(panels * k * ldp);
  PackedTile base{indptr, indices, values, nullptr, ldp, c, ldc, 0, 0, nullptr, nullptr, 0, alpha, beta, true};
  int64_t rows[kMaxThreads + 1] = {0, m};
  int64_t tm = 1, tn = 1;
  if (threads == 1 || !choose_grid(indptr, m, threads, panels, rows, &tm, &tn)) {
    pack_b_rows(b, ldb, k, n, ldp, 0, k, packed);
    packed_tile(base, packed, k, n, 0, m, 0, panels, c);
    return;
  }
  const int64_t panels_per_tile = ceil_div(panels, tn);
#pragma omp parallel num_threads(static_cast<int>(tm * tn))
  {
#ifdef _OPENMP
    const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();
#else
    const int64_t team = 1, me = 0;
#endif
    pack_b_rows(b, ldb, k, n, ldp, k * me / team, k * (me + 1) / team, packed);
#pragma omp barrier
    for (int64_t tile = me; tile < tm * tn; tile += team) {
      const int64_t ti = tile / tn, tj = tile % tn;
      const int64_t panel_begin = tj * panels_per_tile;
      const int64_t panel_end = std::min(panels, panel_begin + panels_per_tile);
      if (rows[ti] < rows[ti + 1] && panel_begin < panel_end) {
        packed_tile(base, packed, k, n, rows[ti], rows[ti + 1], panel_begin, panel_end, c);
      }
    }
  }
}

// Packing B costs a copy of B; it pays when each row of B feeds several
// nonzeros, and its buffer must stay a modest size.
bool use_packed(int64_t n, int64_t k, int64_t nnz) {
  const int64_t ldp = std::min(kPackW, round_up(n, 8));
  return n >= 2 && k > 0 && nnz >= kPackMinUses * k &&
         ceil_div(n, ldp) * ldp * k <= kPackMaxBytes / static_cast<int64_t>(sizeof(float));
}

void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f) {
      std::memset(row, 0, static_cast<size_t>(n) * sizeof(float));  // beta == 0 ignores NaNs in c
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

}  // namespace

void spmm_csr(int64_t m, int64_t n, int64_t k, float alpha, const int64_t* indptr,
              const int64_t* indices, const float* values, const float* b, int64_t ldb,
              float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (alpha == 0.0f) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  static const RowKernel kernel = select_kernel();
  if (n == 1) {
    static const SpmvKernel spmv = select_spmv();
    const int64_t nnz = indptr[m] - indptr[0];
    const int64_t threads = std::min<int64_t>({max_threads(), kMaxThreads, std::max<int64_t>(1, nnz / kMinNonzerosPerThread)});
    if (threads == 1 || m < threads) {
      spmv(indptr, indices, values, b, ldb, alpha, beta, c, ldc, 0, m);
      return;
    }
    int64_t rows[kMaxThreads + 1];
    split_rows(indptr, m, threads, rows);  // equal nonzeros (+ rows) per thread
#pragma omp parallel for num_threads(static_cast<int>(threads)) schedule(static)
    for (int64_t t = 0; t < threads; ++t) spmv(indptr, indices, values, b, ldb, alpha, beta, c, ldc, rows[t], rows[t + 1]);
    return;
  }
  const int64_t total_work = indptr[m] - indptr[0] + m;  // in (row of B) units
  const int64_t work_threads = std::max<int64_t>(1, total_work * n / kMinFmasPerThread);
  const int64_t threads = std::min<int64_t>(max_threads(), work_threads);
  if (kernel != rows_portable && use_packed(n, k, indptr[m] - indptr[0])) {
    spmm_packed(m, n, k, alpha, indptr, indices, values, b, ldb, beta, c, ldc, threads);
    return;
  }
  const RowBlock all{indptr, indices, values, b, ldb, c, ldc, 0, m, alpha, beta, nullptr, INT64_MAX, true};

  const int64_t panels = ceil_div(n, kPanel);
  if (threads == 1) {
    spmm_tile(kernel, all, 0, n, k);
    return;
  }

  int64_t best_rows[kMaxThreads + 1], tm = 1, tn = 1;
  if (!choose_grid(indptr, m, threads, panels, best_rows, &tm, &tn)) {  // fewer rows and panels than threads
    spmm_tile(kernel, all, 0, n, k);
    return;
  }
  const int64_t cols_per_tile = ceil_div(panels, tn) * kPanel;

#pragma omp parallel for collapse(2) num_threads(static_cast<int>(tm * tn)) schedule(static)
  for (int64_t ti = 0; ti < tm; ++ti) {
    for (int64_t tj = 0; tj < tn; ++tj) {
      RowBlock r = all;
      r.row_begin = best_rows[ti];
      r.row_end = best_rows[ti + 1];
      const int64_t col_begin = tj * cols_per_tile;
      const int64_t col_end = std::min(n, col_begin + cols_per_tile);
      if (r.row_begin < r.row_end && col_begin < col_end) spmm_tile(kernel, r, col_begin, col_end, k);
    }
  }
}

std::string validate_csr(int64_t m, int64_t k, const int64_t* indptr, int64_t indptr_len,
                         const int64_t* indices, int64_t nnz) {
  using std::to_string;
  if (m < 0 || k < 0) return "shape (" + to_string(m) + ", " + to_string(k) + ") is negative";
  if (indptr_len != m + 1) {
    return "indptr has " + to_string(indptr_len) + " entries but a matrix with " + to_string(m) +
           " rows needs " + to_string(m + 1);
  }
  if (indptr[0] != 0) return "indptr[0] is " + to_string(indptr[0]) + ", expected 0";
  if (indptr[m] != nnz) {
    return "indptr[" + to_string(m) + "] is " + to_string(indptr[m]) + " but there are " +
           to_string(nnz) + " indices";
  }
  for (int64_t i = 0; i < m; ++i) {
    const int64_t begin = indptr[i], end = indptr[i + 1];
    if (end < begin) {
      return "indptr decreases at row " + to_string(i) + ": indptr[" + to_string(i) +
             "] = " + to_string(begin) + " > indptr[" + to_string(i + 1) + "] = " + to_string(end);
    }
    if (end > nnz) {
      return "indptr[" + to_string(i + 1) + "] = " + to_string(end) + " exceeds nnz " + to_string(nnz);
    }
    // One branch-light pass per row; sorted and in-bounds together mean
    // -1 < indices[begin] < ... < indices[end-1] < k.
    int64_t previous = -1;
    for (int64_t p = begin; p < end; ++p) {
      const int64_t col = indices[p];
      if (col <= previous || col >= k) {
        if (col < 0 || col >= k) {
          return "indices[" + to_string(p) + "] = " + to_string(col) + " (row " + to_string(i) +
                 ") is out of bounds for " + to_string(k) + " columns";
        }
        return "indices in row " + to_string(i) + " are not strictly increasing: indices[" +
               to_string(p - 1) + "] = " + to_string(previous) + ", indices[" + to_string(p) +
               "] = " + to_string(col) + " (unsorted or duplicate)";
      }
      previous = col;
    }
  }
  return "";
}

const char* spmm_kernel_name() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return "avx2_fma";
#endif
  return "portable";
}

}  // namespace pyrt::cpu
