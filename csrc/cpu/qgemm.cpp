// Int8 GEMM for dynamic quantization, and the activation quantizer.
//
//   out[i, j] = a_scale * w_scale[j] * sum_p (a[i, p] - a_zp) * w[j, p] + bias[j]
//
// a is (m, k) uint8 activations in [0, 127] (quantized per call by
// quantize_u8), w is (n, k) int8 weights (nn.Linear's layout, symmetric, zero
// point 0, quantized once), w_scale is (n,) (per output channel; per tensor is
// all equal), bias is (n,) or absent, out is (m, n) float32.
//
// The zero point leaves the inner loop: sum_p (a - a_zp) * w equals
// sum_p a * w - a_zp * rowsum_w[j], and rowsum_w is computed when the weights
// are packed. So the inner loop is a plain uint8 x int8 -> int32 product and
// the epilogue (once per output, after the last k block) is
//   out = float(acc - a_zp * rowsum_w[j]) * (a_scale * w_scale[j]) + bias[j].
//
// Saturation. The AVX2 inner step multiplies 4 consecutive k of one row of a
// by 4 k of 8 weight columns:
//   t   = vpmaddubsw(a, w)  // 16 x int16: a[p]*w[p] + a[p+1]*w[p+1], saturating
//   t   = vpmaddwd(t, 1)    // 8 x int32: the sum of all 4 products, exact
//   acc = vpaddd(acc, t)
// vpmaddubsw saturates its int16 pair sums, silently. With 8-bit activations
// 255 * -128 * 2 = -65280 would saturate, so we quantize activations to 7 bits,
// [0, 127], as PyTorch/FBGEMM do (reduce_range): the pair sum then lies in
// [2 * 127 * -128, 2 * 127 * 127] = [-32512, 32258], inside int16 for every
// input. int8_gemm rejects activations above 127 rather than return a wrong
// answer. The alternatives: 7-bit weights (then PyTorch's qint8 weights would
// not load unchanged), or widening a to int16 and using vpmaddwd alone (exact
// for 8-bit activations, but it needs as many multiply-pipe instructions per
// product, so no faster, and twice the packed bytes). Matching PyTorch also
// makes it an exact oracle: with the same int8 weights, int8_gemm after
// quantize_u8 reproduces torch.ao.nn.quantized.dynamic.Linear bit for bit.
// int32 accumulators cannot overflow while k * 127 * 128 < 2^31 (kInt8GemmMaxK).
//
// Packed weights (PackedInt8Weight), for NR = 16 columns per panel:
//   panel jp holds columns [16 jp, 16 jp + 16); within it, k group q holds
//   w[16 jp + c, 4q + r] at byte q * 64 + c * 4 + r (c < 16, r < 4)
// so one 64-byte cache line is one k group of one panel: two ymm, each 8
// columns x 4 k, exactly what vpmaddubsw wants. k is padded to a multiple of 4
// and n to a multiple of 16 with zeros (a zero weight contributes nothing,
// whatever the activation). A k block [pc, pc + kc) of a panel is the
// contiguous range starting at byte pc * 16.
//
// Packed activations (per call, per block): an MR-row micro-panel holds, for
// each k group q, the 4 bytes a[i, 4q..4q+3] of its MR rows side by side, so
// the kernel broadcasts one int32 per row and k group.
//
// Loop nest for one thread's tile of out (as in gemm.cpp; the weights are
// already packed, so there is no B packing):
//   for jc in [0, n) step NC:                  weight block -> L2/L3
//     for pc in [0, k) step KC:
//       for ic in [0, m) step MC:
//         pack a[ic:ic+MC, pc:pc+KC]           -> L2
//         for jr in [0, NC) step NR:           weight micro-panel -> L1
//           for ir in [0, MC) step MR:
//             acc[ir:ir+MR, jr:jr+NR] += a_panel @ w_panel^T   (registers)
// When k > KC, partial int32 sums of the thread's (m, NC) block live in a
// scratch buffer between k blocks; the last k block applies the epilogue
// straight from registers to out.
//
// Speed limit. Measured on our 2-core AMD EPYC VMs: vpmaddubsw and vpmaddwd
// each issue at half the rate of vfmadd231ps (a single integer-multiply pipe
// against two FMA pipes), so the three-instruction step above peaks at ~46
// GOPS per core, the same as fp32 FMA (~48 GFLOPS), not twice it as on CPUs
// with two integer multipliers. The kernel is bound by that one pipe.
//
// Block sizes, for AMD Zen (32 KiB L1d, 512 KiB L2 per core, 8 MiB L3):
//   MR x NR = 4 x 16: 8 ymm accumulators, 2 weight ymm, the broadcast, the
//     vpmaddubsw temporary and the ones constant fit in the 16 ymm registers
//     without spills (6 x 16 needs 17). 8 independent chains already keep the
//     multiply pipe busy (6 x 16 measured no faster), and 4 divides the
//     m = 64 and 256 of our models.
//   KC = 1024: the weight micro-panel (KC x 16 B = 16 KiB) stays in L1 with
//     the activation micro-panel (4 KiB); each k block of 256 groups amortizes
//     the accumulator load/store over 2048 multiplies.
//   MC = 192: the packed activation block (192 KiB) sits in L2 beside the
//     weight micro-panels streaming through.
//   NC = 1024: the weight block (KC x NC = 1 MiB) stays in L3 while all of m
//     goes by, and the scratch (m x NC int32) stays small.
//   An int8 kernel needs little bandwidth (each 64-byte line of weights feeds
//     16 multiply instructions, each 4-byte activation quad 4), so these are
//     not critical: KC in 512..4096, MC in 64..256, NC in 512..4096 all
//     measured within noise of each other on 256 x 4096 x 4096.
//
// Threads: out is cut into tiles of whole panels along n when there are
// enough (each tile packs its rows of a, m * k bytes, cheap), else along m;
// big products get up to 4 tiles per thread, scheduled dynamically.
//
// Build (standalone test): g++ -O3 -std=c++17 -fopenmp -Icsrc csrc/cpu/qgemm.cpp
//   csrc/cpu/cpu_features.cpp driver.cpp  (AVX2 is chosen at run time;
//   PYRT_DISABLE_AVX2=1 forces the portable kernel).
#include "cpu/qgemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/blocking.h"
#include "cpu/cpu_features.h"
#include "cpu/threads.h"

namespace pyrt::cpu {

namespace {

constexpr int64_t MR = 4;
constexpr int64_t NR = 16;
constexpr int64_t KGROUP = 4;  // k values per vpmaddubsw quad
constexpr int64_t MC = 192;
constexpr int64_t KC = 1024;
constexpr int64_t NC = 1024;

// Below this many multiply-adds per thread a parallel region costs more than
// it saves (waking a thread is a few microseconds).
constexpr int64_t kMinMacsPerThread = 512 * 1024;
// Tiles of a big product: at least this many MACs each (about 1.5 ms), and
// at most this many tiles per thread.
constexpr int64_t kMinMacsPerTile = 32 * 1024 * 1024;
constexpr int64_t kMaxTilesPerThread = 4;
// Same for the quantizer's element-wise passes.
constexpr int64_t kMinElementsPerThread = 64 * 1024;

// ---------------------------------------------------------------------------
// Activation packing: mc rows x kc columns of a into ceil(mc/MR) micro-panels,
// each ceil(kc/4) groups of MR x 4 bytes. Rows past mc and k past kc are zero.

void pack_a(int64_t mc, int64_t kc, const uint8_t* a, int64_t lda, uint8_t* ap) {
  const int64_t groups = ceil_div(kc, KGROUP);
  const int64_t full_groups = kc / KGROUP;
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int64_t rows = std::min(MR, mc - i0);
    for (int64_t i = 0; i < MR; ++i) {
      uint8_t* dst = ap + i * KGROUP;
      if (i >= rows) {
        for (int64_t q = 0; q < groups; ++q) std::memset(dst + q * MR * KGROUP, 0, KGROUP);
        continue;
      }
      const uint8_t* src = a + (i0 + i) * lda;
      for (int64_t q = 0; q < full_groups; ++q) {
        std::memcpy(dst + q * MR * KGROUP, src + q * KGROUP, KGROUP);
      }
      if (full_groups < groups) {
        uint8_t tail[KGROUP] = {};
        std::memcpy(tail, src + full_groups * KGROUP, kc - full_groups * KGROUP);
        std::memcpy(dst + full_groups * MR * KGROUP, tail, KGROUP);
      }
    }
    ap += groups * MR * KGROUP;
  }
}

// ---------------------------------------------------------------------------
// Micro-kernels. Contract: acc = (load_partial ? partial : 0) + ap . bp over
// `groups` k groups, for one MR x NR tile. Then either the int32 sums go back
// to `partial` (MR x NR, row stride NR; more k blocks follow), or, when epi
// is given, the epilogue writes the full MR x NR float tile to epi->out.

struct Epilogue {
  const int32_t* zp_row_sums;  // a_zp * rowsum_w[j], NR values from column jr
  const float* scales;         // a_scale * w_scale[j]
  const float* bias;           // bias[j], zeros when there is none
  float* out;
  int64_t ldo;
};

using MicroKernel = void (*)(int64_t groups, const uint8_t* ap, const int8_t* bp,
                             int32_t* partial, bool load_partial, const Epilogue* epi);

void kernel_portable(int64_t groups, const uint8_t* ap, const int8_t* bp, int32_t* partial,
                     bool load_partial, const Epilogue* epi) {
  int32_t acc[MR][NR] = {};
  if (load_partial) std::memcpy(acc, partial, sizeof(acc));
  for (int64_t q = 0; q < groups; ++q) {
    for (int64_t i = 0; i < MR; ++i) {
      const uint8_t* a = ap + (q * MR + i) * KGROUP;
      for (int64_t j = 0; j < NR; ++j) {
        const int8_t* w = bp + (q * NR + j) * KGROUP;
        int32_t dot = 0;
        for (int64_t r = 0; r < KGROUP; ++r) dot += int32_t{a[r]} * int32_t{w[r]};
        acc[i][j] += dot;
      }
    }
  }
  if (epi == nullptr) {
    std::memcpy(partial, acc, sizeof(acc));
    return;
  }
  for (int64_t i = 0; i < MR; ++i) {
    for (int64_t j = 0; j < NR; ++j) {
      // Unsigned subtraction wraps like vpsubd: the true difference always
      // fits in int32 (see kInt8GemmMaxK) even when an operand is extreme.
      const auto d = static_cast<int32_t>(static_cast<uint32_t>(acc[i][j]) -
                                          static_cast<uint32_t>(epi->zp_row_sums[j]));
      // fma, as the AVX2 epilogue, so both kernels round identically.
      epi->out[i * epi->ldo + j] = std::fma(static_cast<float>(d), epi->scales[j], epi->bias[j]);
    }
  }
}

#ifdef PYRT_HAVE_X86
// ROWS of the MR rows of the tile are computed (ragged m: ROWS = m % MR); the
// rest of the partial and epilogue tiles are left untouched. A batch of one
// then issues one vpmaddubsw pair per k group instead of MR: the multiply pipe
// was doing 4x the work, 3 rows of it on zero padding.
template <int ROWS>
__attribute__((target("avx2,fma"))) void kernel_avx2(int64_t groups, const uint8_t* ap,
                                                     const int8_t* bp, int32_t* partial,
                                                     bool load_partial, const Epilogue* epi) {
  __m256i acc[ROWS][2];
#pragma GCC unroll 8
  for (int64_t i = 0; i < ROWS; ++i) {
    if (load_partial) {
      acc[i][0] = _mm256_load_si256(reinterpret_cast<const __m256i*>(partial + i * NR));
      acc[i][1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(partial + i * NR + 8));
    } else {
      acc[i][0] = _mm256_setzero_si256();
      acc[i][1] = _mm256_setzero_si256();
    }
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t q = 0; q < groups; ++q) {
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + 32));
#pragma GCC unroll 8
    for (int64_t i = 0; i < ROWS; ++i) {
      int32_t quad;
      std::memcpy(&quad, ap + i * KGROUP, sizeof(quad));
      const __m256i a = _mm256_set1_epi32(quad);
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w0), ones));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w1), ones));
    }
    ap += MR * KGROUP;
    bp += NR * KGROUP;
  }
  if (epi == nullptr) {
#pragma GCC unroll 8
    for (int64_t i = 0; i < ROWS; ++i) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(partial + i * NR), acc[i][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(partial + i * NR + 8), acc[i][1]);
    }
    return;
  }
  const __m256i zp0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(epi->zp_row_sums));
  const __m256i zp1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(epi->zp_row_sums + 8));
  const __m256 s0 = _mm256_loadu_ps(epi->scales), s1 = _mm256_loadu_ps(epi->scales + 8);
  const __m256 b0 = _mm256_loadu_ps(epi->bias), b1 = _mm256_loadu_ps(epi->bias + 8);
#pragma GCC unroll 8
  for (int64_t i = 0; i < ROWS; ++i) {
    float* row = epi->out + i * epi->ldo;
    const __m256 y0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[i][0], zp0));
    const __m256 y1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[i][1], zp1));
    _mm256_storeu_ps(row, _mm256_fmadd_ps(y0, s0, b0));
    _mm256_storeu_ps(row + 8, _mm256_fmadd_ps(y1, s1, b1));
  }
}
#endif

// kernels.rows[r] computes the first r rows of a tile (r in 1..MR).
static_assert(MR == 4, "select_kernels lists one kernel per row count 1..MR");

struct KernelSet {
  MicroKernel rows[MR + 1];
};

KernelSet select_kernels() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return {{nullptr, kernel_avx2<1>, kernel_avx2<2>, kernel_avx2<3>, kernel_avx2<4>}};
#endif
  return {{nullptr, kernel_portable, kernel_portable, kernel_portable, kernel_portable}};
}

// ---------------------------------------------------------------------------
// Macro-kernel: the jr / ir loops over one packed activation block and the
// matching k block of nc weight columns.

struct BlockArgs {
  int64_t mc, nc, kc;
  const uint8_t* ap;       // packed activation block
  const int8_t* bp;        // weight panel of column jc, at k block pc
  int64_t panel_stride;    // bytes between weight panels
  int32_t* partial;        // tile-major int32 sums for this block's rows, or null
  bool load_partial;
  bool last_k_block;
  const int32_t* zp_row_sums;  // from column jc
  const float* scales;
  const float* bias;
  float* out;  // at (ic, jc)
  int64_t ldo;
};

void macro_kernel(const KernelSet& kernels, const BlockArgs& b) {
  alignas(64) float tile[MR * NR];
  const int64_t groups = ceil_div(b.kc, KGROUP);
  const int64_t panels_n = ceil_div(b.nc, NR);
  for (int64_t jr = 0; jr < b.nc; jr += NR) {
    const int64_t nr = std::min(NR, b.nc - jr);
    const int8_t* w_panel = b.bp + (jr / NR) * b.panel_stride;
    for (int64_t ir = 0; ir < b.mc; ir += MR) {
      const int64_t mr = std::min(MR, b.mc - ir);
      const uint8_t* a_panel = b.ap + ir * groups * KGROUP;
      int32_t* partial =
          b.partial == nullptr ? nullptr : b.partial + ((ir / MR) * panels_n + jr / NR) * MR * NR;
      const MicroKernel kernel = kernels.rows[mr];
      if (!b.last_k_block) {
        kernel(groups, a_panel, w_panel, partial, b.load_partial, nullptr);
        continue;
      }
      const bool full = mr == MR && nr == NR;
      Epilogue epi{b.zp_row_sums + jr, b.scales + jr, b.bias + jr,
                   full ? b.out + ir * b.ldo + jr : tile, full ? b.ldo : NR};
      kernel(groups, a_panel, w_panel, partial, b.load_partial, &epi);
      if (!full) {
        for (int64_t i = 0; i < mr; ++i) {
          std::memcpy(b.out + (ir + i) * b.ldo + jr, tile + i * NR, nr * sizeof(float));
        }
      }
    }
  }
}

struct GemmArgs {
  const uint8_t* a;
  int64_t lda;
  const PackedInt8Weight* w;
  const int32_t* zp_row_sums;  // padded to whole panels
  const float* scales;
  const float* bias;
  float* out;
  int64_t ldo;
};

// The whole loop nest for rows [i0, i0 + mt) and columns [j0, j0 + nt) of
// out, on this thread's buffers. j0 is a multiple of NR.
void gemm_tile(const KernelSet& kernel, const GemmArgs& g, int64_t i0, int64_t mt, int64_t j0,
               int64_t nt) {
  thread_local ThreadBuffer<uint8_t> a_buffer;
  thread_local ThreadBuffer<int32_t> partial_buffer;
  const int64_t k = g.w->k();
  const int64_t k_padded = round_up(k, KGROUP);
  const int64_t mc_max = balanced_block(mt, MC, MR);
  const int64_t kc_max = balanced_block(k, KC, KGROUP);
  const int64_t nc_max = balanced_block(nt, NC, NR);
  uint8_t* ap = a_buffer.get(mc_max * kc_max);
  const bool split_k = kc_max < k;
  int32_t* partial = split_k ? partial_buffer.get(round_up(mt, MR) * nc_max) : nullptr;
  const int64_t panel_stride = k_padded * NR;

  for (int64_t jc = 0; jc < nt; jc += nc_max) {
    const int64_t nc = std::min(nc_max, nt - jc);
    const int64_t col = j0 + jc;
    for (int64_t pc = 0; pc < k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, k - pc);
      for (int64_t ic = 0; ic < mt; ic += mc_max) {
        const int64_t mc = std::min(mc_max, mt - ic);
        pack_a(mc, kc, g.a + (i0 + ic) * g.lda + pc, g.lda, ap);
        BlockArgs b;
        b.mc = mc;
        b.nc = nc;
        b.kc = kc;
        b.ap = ap;
        b.bp = g.w->panels() + (col / NR) * panel_stride + pc * NR;
        b.panel_stride = panel_stride;
        b.partial = split_k ? partial + ic * round_up(nc, NR) : nullptr;
        b.load_partial = pc > 0;
        b.last_k_block = pc + kc >= k;
        b.zp_row_sums = g.zp_row_sums + col;
        b.scales = g.scales + col;
        b.bias = g.bias + col;
        b.out = g.out + (i0 + ic) * g.ldo + col;
        b.ldo = g.ldo;
        macro_kernel(kernel, b);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Activation quantizer helpers.

struct MinMax {
  float lo = 0.0f;  // starting at 0 puts 0 inside the range, as PyTorch does
  float hi = 0.0f;
  bool finite = true;
};

MinMax min_max_row_portable(const float* x, int64_t k, int64_t csx, MinMax r) {
  for (int64_t p = 0; p < k; ++p) {
    const float v = x[p * csx];
    r.finite = r.finite && std::isfinite(v);
    r.lo = std::min(r.lo, v);
    r.hi = std::max(r.hi, v);
  }
  return r;
}

void quantize_row_portable(const float* x, int64_t k, int64_t csx, float inv_scale, float zp,
                           uint8_t* out) {
  for (int64_t p = 0; p < k; ++p) {
    // round(x / scale + zp) with one rounding in the fma, exactly as FBGEMM
    // quantizes activations for PyTorch's dynamic Linear; clamping in float
    // keeps the conversion defined and matches the AVX2 path bit for bit.
    float v = std::nearbyint(std::fma(x[p * csx], inv_scale, zp));
    v = std::min(std::max(v, 0.0f), static_cast<float>(kActivationQmax));
    out[p] = static_cast<uint8_t>(v);
  }
}

#ifdef PYRT_HAVE_X86
__attribute__((target("avx2,fma"))) MinMax min_max_row_avx2(const float* x, int64_t k, MinMax r) {
  __m256 lo = _mm256_set1_ps(r.lo), hi = _mm256_set1_ps(r.hi);
  // |x| <= FLT_MAX is false for infinities and NaN.
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 big = _mm256_set1_ps(std::numeric_limits<float>::max());
  __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    const __m256 v = _mm256_loadu_ps(x + p);
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
    finite = _mm256_and_ps(finite, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), big, _CMP_LE_OQ));
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo);
  _mm256_store_ps(h, hi);
  for (int i = 0; i < 8; ++i) {
    r.lo = std::min(r.lo, l[i]);
    r.hi = std::max(r.hi, h[i]);
  }
  r.finite = r.finite && _mm256_movemask_ps(finite) == 0xff;
  return min_max_row_portable(x + p, k - p, 1, r);
}

__attribute__((target("avx2,fma"))) void quantize_row_avx2(const float* x, int64_t k,
                                                           float inv_scale, float zp,
                                                           uint8_t* out) {
  const __m256 vinv = _mm256_set1_ps(inv_scale), vzp = _mm256_set1_ps(zp);
  const __m256 vmin = _mm256_setzero_ps();
  const __m256 vmax = _mm256_set1_ps(static_cast<float>(kActivationQmax));
  int64_t p = 0;
  for (; p + 32 <= k; p += 32) {
    __m256i q[4];
    for (int u = 0; u < 4; ++u) {
      const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(x + p + 8 * u), vinv, vzp);
      __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      r = _mm256_min_ps(_mm256_max_ps(r, vmin), vmax);
      q[u] = _mm256_cvttps_epi32(r);
    }
    // packs work within 128-bit lanes; the permute puts the 32 bytes back in order.
    const __m256i w01 = _mm256_packs_epi32(q[0], q[1]);
    const __m256i w23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i b = _mm256_packus_epi16(w01, w23);
    const __m256i ordered = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + p), ordered);
  }
  quantize_row_portable(x + p, k - p, 1, inv_scale, zp, out + p);
}
#endif

MinMax min_max_row(const float* x, int64_t k, int64_t csx, MinMax r) {
#ifdef PYRT_HAVE_X86
  if (csx == 1 && has_avx2_fma()) return min_max_row_avx2(x, k, r);
#endif
  return min_max_row_portable(x, k, csx, r);
}

void quantize_row(const float* x, int64_t k, int64_t csx, float inv_scale, float zp,
                  uint8_t* out) {
#ifdef PYRT_HAVE_X86
  if (csx == 1 && has_avx2_fma()) return quantize_row_avx2(x, k, inv_scale, zp, out);
#endif
  quantize_row_portable(x, k, csx, inv_scale, zp, out);
}

// PyTorch's quant_utils::ChooseQuantizationParams for qmin = 0, qmax = 255
// with reduce_range (so qmax = 127), preserve_sparsity off; lo <= 0 <= hi.
void choose_params(float lo, float hi, float* scale, int32_t* zero_point) {
  constexpr double qmin = 0.0, qmax = kActivationQmax;
  // Scales below this lose precision in the int32 -> float epilogue; PyTorch
  // widens the range instead.
  constexpr float kSmallScale = 6.1e-5f;
  double s = (static_cast<double>(hi) - lo) / (qmax - qmin);
  if (static_cast<float>(s) == 0.0f || std::isinf(1.0f / static_cast<float>(s))) s = 0.1;
  if (s < kSmallScale) {
    const double org = s;
    s = kSmallScale;
    if (lo == 0.0f) {
      hi = static_cast<float>(kSmallScale * (qmax - qmin));
    } else if (hi == 0.0f) {
      lo = static_cast<float>(-kSmallScale * (qmax - qmin));
    } else {
      const auto amplifier = static_cast<float>(kSmallScale / org);
      lo *= amplifier;
      hi *= amplifier;
    }
  }
  const auto sf = static_cast<float>(s);
  // Of the two affine pairs (lo, qmin) and (hi, qmax), use the one whose
  // terms are smaller, hence whose rounding error is smaller.
  const double zp_from_min = qmin - lo / static_cast<double>(sf);
  const double zp_from_max = qmax - hi / static_cast<double>(sf);
  const double err_min = std::abs(qmin) - std::abs(lo / static_cast<double>(sf));
  const double err_max = std::abs(qmax) - std::abs(hi / static_cast<double>(sf));
  const double zp = err_min < err_max ? zp_from_min : zp_from_max;
  *scale = sf;
  *zero_point = zp < qmin   ? static_cast<int32_t>(qmin)
                : zp > qmax ? static_cast<int32_t>(qmax)
                            : static_cast<int32_t>(std::nearbyint(zp));
}

}  // namespace

// ---------------------------------------------------------------------------
// PackedInt8Weight

PackedInt8Weight::PackedInt8Weight(const int8_t* w, int64_t n, int64_t k, int64_t rsw,
                                   int64_t csw)
    : n_(n), k_(k) {
  if (n < 0 || k < 0) {
    throw std::invalid_argument("PackedInt8Weight: negative shape (" + std::to_string(n) + ", " +
                                std::to_string(k) + ")");
  }
  if (k > kInt8GemmMaxK) {
    throw std::invalid_argument("PackedInt8Weight: k = " + std::to_string(k) +
                                " exceeds kInt8GemmMaxK = " + std::to_string(kInt8GemmMaxK) +
                                " (int32 accumulators could overflow)");
  }
  const int64_t n_padded = round_up(n, NR), k_padded = round_up(k, KGROUP);
  panels_ = static_cast<int8_t*>(aligned_bytes(static_cast<size_t>(n_padded * k_padded)));
  row_sums_ = static_cast<int32_t*>(aligned_bytes(static_cast<size_t>(n_padded) * 4));
  std::memset(panels_, 0, static_cast<size_t>(n_padded * k_padded));
  for (int64_t j = 0; j < n_padded; ++j) {
    int32_t sum = 0;
    if (j < n) {
      int8_t* panel = panels_ + (j / NR) * k_padded * NR + (j % NR) * KGROUP;
      for (int64_t p = 0; p < k; ++p) {
        const int8_t v = w[j * rsw + p * csw];
        panel[(p / KGROUP) * NR * KGROUP + p % KGROUP] = v;
        sum += v;
      }
    }
    row_sums_[j] = sum;
  }
}

PackedInt8Weight::~PackedInt8Weight() {
  std::free(panels_);
  std::free(row_sums_);
}

size_t PackedInt8Weight::nbytes() const {
  const auto n_padded = static_cast<size_t>(round_up(n_, NR));
  return n_padded * static_cast<size_t>(round_up(k_, KGROUP)) + n_padded * 4;
}

int8_t PackedInt8Weight::at(int64_t row, int64_t col) const {
  const int64_t k_padded = round_up(k_, KGROUP);
  return panels_[(row / NR) * k_padded * NR + (col / KGROUP) * NR * KGROUP +
                 (row % NR) * KGROUP + col % KGROUP];
}

// ---------------------------------------------------------------------------
// quantize_u8

void quantize_u8(const float* x, int64_t m, int64_t k, int64_t rsx, int64_t csx, uint8_t* out,
                 int64_t rso, float* scale, int32_t* zero_point) {
  const int threads =
      static_cast<int>(std::min<int64_t>(max_threads(), std::max<int64_t>(1, m * k / kMinElementsPerThread)));
  // Pass 1: min and max over x, 0 included.
  std::vector<MinMax> partial(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num();
#else
    const int t = 0;
#endif
    MinMax r;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; ++i) r = min_max_row(x + i * rsx, k, csx, r);
    partial[static_cast<size_t>(t)] = r;
  }
  MinMax r;
  for (const MinMax& p : partial) {
    r.lo = std::min(r.lo, p.lo);
    r.hi = std::max(r.hi, p.hi);
    r.finite = r.finite && p.finite;
  }
  if (!r.finite) throw std::invalid_argument("quantize_u8: x contains NaN or infinity");
  choose_params(r.lo, r.hi, scale, zero_point);

  // Pass 2: quantize. Multiplying by the reciprocal, as FBGEMM does, so the
  // results (and ties) match PyTorch's.
  const float inv_scale = 1.0f / *scale;
  const auto zp = static_cast<float>(*zero_point);
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
  for (int64_t i = 0; i < m; ++i) quantize_row(x + i * rsx, k, csx, inv_scale, zp, out + i * rso);
}

// ---------------------------------------------------------------------------
// int8_gemm

void int8_gemm(int64_t m, const uint8_t* a, int64_t lda, float a_scale, int32_t a_zero_point,
               const PackedInt8Weight& w, const float* w_scale, const float* bias, float* out,
               int64_t ldo) {
  const int64_t n = w.n(), k = w.k();
  if (m < 0) throw std::invalid_argument("int8_gemm: negative m = " + std::to_string(m));
  if (a_zero_point < 0 || a_zero_point > kActivationQmax) {
    throw std::invalid_argument("int8_gemm: a_zero_point = " + std::to_string(a_zero_point) +
                                " is outside [0, 127]");
  }
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: out is the bias
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) out[i * ldo + j] = bias != nullptr ? bias[j] : 0.0f;
    }
    return;
  }
  // vpmaddubsw could saturate on an activation above 127 (see the top of
  // this file): refuse it. One pass over m * k bytes, against m * n * k MACs.
  uint8_t high = 0;
  for (int64_t i = 0; i < m; ++i) {
    const uint8_t* row = a + i * lda;
    for (int64_t p = 0; p < k; ++p) high |= row[p];
  }
  if (high > kActivationQmax) {
    throw std::invalid_argument(
        "int8_gemm: activations must be in [0, 127] (7-bit, so vpmaddubsw cannot saturate); "
        "quantize them with quantize_u8");
  }

  // Per-column epilogue constants, padded with zeros to whole panels.
  const int64_t n_padded = round_up(n, NR);
  std::vector<int32_t> zp_row_sums(static_cast<size_t>(n_padded), 0);
  std::vector<float> scales(static_cast<size_t>(n_padded), 0.0f);
  std::vector<float> bias_padded(static_cast<size_t>(n_padded), 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    zp_row_sums[j] = a_zero_point * w.row_sums()[j];
    scales[j] = a_scale * w_scale[j];
    if (bias != nullptr) bias_padded[j] = bias[j];
  }
  const GemmArgs g{a, lda, &w, zp_row_sums.data(), scales.data(), bias_padded.data(), out, ldo};
  static const KernelSet kernel = select_kernels();

  // Tiles: split n into whole panels when there are enough, else m. A big
  // product gets several tiles per thread, handed out dynamically, so a
  // thread that the OS preempts (our 2-core machines run other jobs) leaves
  // its remaining tiles to the others instead of holding everyone up; each
  // tile repacks its rows of a, m * k bytes against its >= kMinMacsPerTile MACs.
  const int64_t macs = m * n * k;
  const int64_t threads = std::min<int64_t>(max_threads(), std::max<int64_t>(1, macs / kMinMacsPerThread));
  int64_t tm = 1, tn = 1;
  if (threads > 1) {
    const int64_t tiles = std::clamp<int64_t>(macs / kMinMacsPerTile, threads, threads * kMaxTilesPerThread);
    if (ceil_div(n, NR) >= threads) {
      tn = std::min(tiles, ceil_div(n, NR));
    } else {
      tm = std::min(tiles, ceil_div(m, MR));
    }
  }
  if (tm * tn == 1) {
    gemm_tile(kernel, g, 0, m, 0, n);
    return;
  }
  const int64_t m_chunk = round_up(ceil_div(m, tm), MR);
  const int64_t n_chunk = round_up(ceil_div(n, tn), NR);
#pragma omp parallel for collapse(2) num_threads(static_cast<int>(threads)) schedule(dynamic, 1)
  for (int64_t ti = 0; ti < tm; ++ti) {
    for (int64_t tj = 0; tj < tn; ++tj) {
      const int64_t i0 = ti * m_chunk, j0 = tj * n_chunk;
      const int64_t mt = std::min(m_chunk, m - i0), nt = std::min(n_chunk, n - j0);
      if (mt <= 0 || nt <= 0) continue;
      gemm_tile(kernel, g, i0, mt, j0, nt);
    }
  }
}

const char* int8_gemm_kernel_name() { return kernel_name("avx2_4x16"); }

}  // namespace pyrt::cpu
