// In-place element-wise reductions for collectives: dst = op(dst, src) with
// op in {sum, max, min}, and dst *= alpha, for float32 and float64.
//
// dst and src are (count,) contiguous arrays, identical or non-overlapping.
//
// Each call is a single pass that reads two streams and writes one, so above
// the L2 size it runs at memory bandwidth whatever the instructions; the AVX2
// loop (4 vectors per iteration, so loads of the next group issue while the
// previous group's stores drain) matters for the in-cache segment sizes a ring
// all-reduce actually uses (bucket / world size, often 64 KiB - 4 MiB).
// The last count % lanes elements go through the portable scalar op, which has
// the same NaN rule, so results do not depend on alignment or length.
//
// NaN rule for max/min (numpy's np.maximum / np.minimum): NaN in either operand
// gives NaN. vmaxps alone returns its second operand when either is NaN, which
// would drop a NaN in dst; the AVX2 op therefore blends in dst + src (a NaN)
// wherever the operands are unordered. That costs two extra instructions per
// vector, hidden behind the memory traffic.
//
// Threads: with Threading::kAuto, arrays of at least kMinBytesForThreads run on
// all OpenMP threads, in 256 KiB chunks (64-byte-aligned, so no false sharing)
// handed out dynamically (see for_chunks). Below that the fork/join (~1-2 us)
// costs more than the second core saves; see the measurement at the constant. Threading::kSingleThread never forks: the
// ring all-reduce reduces one segment while MPI moves the next.
//
// Build (standalone test): g++ -O3 -std=c++17 -fopenmp -Icsrc csrc/cpu/reduce.cpp
//   csrc/cpu/cpu_features.cpp reduce_driver.cpp  (PYRT_DISABLE_AVX2=1 forces the
//   portable loops).
#include "cpu/reduce.h"

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/cpu_features.h"
#include "cpu/threads.h"

namespace pyrt::cpu {

namespace {

#ifndef PYRT_REDUCE_MIN_BYTES_FOR_THREADS
#define PYRT_REDUCE_MIN_BYTES_FOR_THREADS (256 * 1024)
#endif
// Bytes of dst from which a kAuto call uses all threads. Measured on the 2-core
// Zen 3 (reduce_driver bench, float32 sum, best of 3 x >= 1000 calls, forced
// threads vs single): 64 KiB 2.1 vs 2.5-3.1 us (a tie or loss: the fork costs
// ~0.8-2 us), 128 KiB 4.2 vs 3.9-4.1, 256 KiB 8.6 vs 5.7-6.2 (1.4x), 1 MiB
// 37 vs 20 (1.8x). 256 KiB is the first size that wins in every run.
constexpr int64_t kMinBytesForThreads = PYRT_REDUCE_MIN_BYTES_FOR_THREADS;

// ---------------------------------------------------------------------------
// Scalar ops: the portable loops and the AVX2 tails.

template <typename T>
inline T apply(ReduceOp op, T d, T s) {
  switch (op) {
    case ReduceOp::kSum:
      return d + s;
    case ReduceOp::kMax:
      return (d > s || d != d) ? d : s;  // d NaN -> d; s NaN -> s (the comparison fails)
    case ReduceOp::kMin:
      return (d < s || d != d) ? d : s;
  }
  return d;
}

// One loop per op so that gcc vectorizes each with the baseline ISA.
template <typename T>
void reduce_portable(T* dst, const T* src, int64_t count, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      for (int64_t i = 0; i < count; ++i) dst[i] = apply(ReduceOp::kSum, dst[i], src[i]);
      break;
    case ReduceOp::kMax:
      for (int64_t i = 0; i < count; ++i) dst[i] = apply(ReduceOp::kMax, dst[i], src[i]);
      break;
    case ReduceOp::kMin:
      for (int64_t i = 0; i < count; ++i) dst[i] = apply(ReduceOp::kMin, dst[i], src[i]);
      break;
  }
}

#ifdef PYRT_HAVE_X86
// ---------------------------------------------------------------------------
// AVX2: one traits struct per element type, so the loops are written once.

struct F32x8 {
  using V = __m256;
  static constexpr int kLanes = 8;
  __attribute__((target("avx2"), always_inline)) static V load(const float* p) { return _mm256_loadu_ps(p); }
  __attribute__((target("avx2"), always_inline)) static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  __attribute__((target("avx2"), always_inline)) static V set1(float x) { return _mm256_set1_ps(x); }
  __attribute__((target("avx2"), always_inline)) static V add(V a, V b) { return _mm256_add_ps(a, b); }
  __attribute__((target("avx2"), always_inline)) static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  __attribute__((target("avx2"), always_inline)) static V max(V a, V b) { return _mm256_max_ps(a, b); }
  __attribute__((target("avx2"), always_inline)) static V min(V a, V b) { return _mm256_min_ps(a, b); }
  // Where a or b is NaN take a + b (a NaN), else r.
  __attribute__((target("avx2"), always_inline)) static V nan_to(V r, V a, V b) {
    return _mm256_blendv_ps(r, _mm256_add_ps(a, b), _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
  }
};

struct F64x4 {
  using V = __m256d;
  static constexpr int kLanes = 4;
  __attribute__((target("avx2"), always_inline)) static V load(const double* p) { return _mm256_loadu_pd(p); }
  __attribute__((target("avx2"), always_inline)) static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  __attribute__((target("avx2"), always_inline)) static V set1(double x) { return _mm256_set1_pd(x); }
  __attribute__((target("avx2"), always_inline)) static V add(V a, V b) { return _mm256_add_pd(a, b); }
  __attribute__((target("avx2"), always_inline)) static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  __attribute__((target("avx2"), always_inline)) static V max(V a, V b) { return _mm256_max_pd(a, b); }
  __attribute__((target("avx2"), always_inline)) static V min(V a, V b) { return _mm256_min_pd(a, b); }
  __attribute__((target("avx2"), always_inline)) static V nan_to(V r, V a, V b) {
    return _mm256_blendv_pd(r, _mm256_add_pd(a, b), _mm256_cmp_pd(a, b, _CMP_UNORD_Q));
  }
};

template <typename T> struct Avx2Traits;
template <> struct Avx2Traits<float> { using type = F32x8; };
template <> struct Avx2Traits<double> { using type = F64x4; };

template <typename X, ReduceOp OP>
__attribute__((target("avx2"), always_inline)) inline typename X::V vector_op(typename X::V d,
                                                                            typename X::V s) {
  if constexpr (OP == ReduceOp::kSum) return X::add(d, s);
  if constexpr (OP == ReduceOp::kMax) return X::nan_to(X::max(d, s), d, s);
  if constexpr (OP == ReduceOp::kMin) return X::nan_to(X::min(d, s), d, s);
}

template <typename T, ReduceOp OP>
__attribute__((target("avx2"))) void reduce_avx2(T* dst, const T* src, int64_t count) {
  using X = typename Avx2Traits<T>::type;
  constexpr int64_t L = X::kLanes;
  int64_t i = 0;
  for (; i + 4 * L <= count; i += 4 * L) {
    const auto d0 = X::load(dst + i), d1 = X::load(dst + i + L);
    const auto d2 = X::load(dst + i + 2 * L), d3 = X::load(dst + i + 3 * L);
    const auto s0 = X::load(src + i), s1 = X::load(src + i + L);
    const auto s2 = X::load(src + i + 2 * L), s3 = X::load(src + i + 3 * L);
    X::store(dst + i, vector_op<X, OP>(d0, s0));
    X::store(dst + i + L, vector_op<X, OP>(d1, s1));
    X::store(dst + i + 2 * L, vector_op<X, OP>(d2, s2));
    X::store(dst + i + 3 * L, vector_op<X, OP>(d3, s3));
  }
  for (; i + L <= count; i += L) X::store(dst + i, vector_op<X, OP>(X::load(dst + i), X::load(src + i)));
  for (; i < count; ++i) dst[i] = apply(OP, dst[i], src[i]);
}
#endif

// One slice [begin, end) on the calling thread, on the best loop for this CPU.
template <typename T>
void reduce_slice(T* dst, const T* src, int64_t count, ReduceOp op) {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) {
    switch (op) {
      case ReduceOp::kSum: return reduce_avx2<T, ReduceOp::kSum>(dst, src, count);
      case ReduceOp::kMax: return reduce_avx2<T, ReduceOp::kMax>(dst, src, count);
      case ReduceOp::kMin: return reduce_avx2<T, ReduceOp::kMin>(dst, src, count);
    }
  }
#endif
  reduce_portable(dst, src, count, op);
}

// Threads to use for `count` elements of T.
template <typename T>
int threads_for_reduction(int64_t count, Threading threading) {
  if (threading == Threading::kSingleThread) return 1;
  return threads_for(count * static_cast<int64_t>(sizeof(T)), kMinBytesForThreads);
}

// Runs body(begin, end) over [0, count) on `threads` threads, in chunks of
// about kChunkBytes handed out dynamically, with boundaries on 64-byte
// multiples. Dynamic rather than one static slice per thread: when another
// process (another MPI rank, a colleague's job) preempts one thread, the other
// takes over its remaining chunks instead of waiting for it at the join, which
// measured up to 1.5x slower at 64 MiB on the shared 2-core machine.
constexpr int64_t kChunkBytes = 256 * 1024;

template <typename T, typename Body>
void for_chunks(int64_t count, int threads, Body body) {
  if (threads <= 1) {
    body(0, count);
    return;
  }
  constexpr int64_t kLine = 64 / sizeof(T);
  const int64_t chunks = std::max<int64_t>(threads, count * static_cast<int64_t>(sizeof(T)) / kChunkBytes);
  const int64_t per_chunk = (count / chunks + kLine - 1) / kLine * kLine;
  const int64_t used = (count + per_chunk - 1) / per_chunk;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t c = 0; c < used; ++c) {
    const int64_t begin = c * per_chunk;
    body(begin, std::min(count, begin + per_chunk));
  }
}

template <typename T>
void reduce_any(T* dst, const T* src, int64_t count, ReduceOp op, Threading threading) {
  if (count <= 0) return;
  for_chunks<T>(count, threads_for_reduction<T>(count, threading), [&](int64_t begin, int64_t end) {
    reduce_slice(dst + begin, src + begin, end - begin, op);
  });
}

}  // namespace

void reduce_inplace(float* dst, const float* src, int64_t count, ReduceOp op, Threading threading) {
  reduce_any(dst, src, count, op, threading);
}
void reduce_inplace(double* dst, const double* src, int64_t count, ReduceOp op,
                    Threading threading) {
  reduce_any(dst, src, count, op, threading);
}

const char* reduce_kernel_name() { return kernel_name("avx2"); }

}  // namespace pyrt::cpu
