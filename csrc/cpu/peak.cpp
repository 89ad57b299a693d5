// Peak-throughput probes: each thread runs independent chains of the
// instruction the kernel's inner loop is built from, with no memory traffic,
// long enough (tens of milliseconds) to reach a steady clock.
//
// 12 accumulator chains per thread cover the FMA latency (4 cycles) times the
// two FMA pipes of Zen 3 with room to spare, exactly like the 6x16 SGEMM tile.
#include "cpu/peak.h"

#include <chrono>
#include <cstdint>

#include <omp.h>

#include "cpu/cpu_features.h"

namespace pyrt::cpu {

namespace {

constexpr int64_t kIterations = 4'000'000;

#ifdef PYRT_HAVE_X86
__attribute__((target("avx2,fma"))) float fma_chains(int64_t iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f);
  const __m256 b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 sum = acc[0];
  for (int i = 1; i < 12; ++i) sum = _mm256_add_ps(sum, acc[i]);
  return _mm256_cvtss_f32(sum);  // returned so the compiler keeps the loop
}

__attribute__((target("avx2,fma"))) int int8_chains(int64_t iterations) {
  __m256i acc[8], a[8];
  for (int i = 0; i < 8; ++i) {
    acc[i] = _mm256_set1_epi32(i);
    a[i] = _mm256_set1_epi8(static_cast<char>(3 + i));
  }
  const __m256i b = _mm256_set1_epi8(-2);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < 8; ++i) {
      // The operands are loop-invariant; this empty asm claims to change them
      // so the compiler can neither hoist nor merge the multiplies.
      asm volatile("" : "+x"(a[i]));
      // 32 u8 x s8 products -> 16 s16 pair sums -> 8 s32 sums: 64 ops.
      const __m256i pairs = _mm256_maddubs_epi16(a[i], b);
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(pairs, ones));
    }
  }
  __m256i sum = acc[0];
  for (int i = 1; i < 8; ++i) sum = _mm256_add_epi32(sum, acc[i]);
  return _mm256_extract_epi32(sum, 0);
}
#endif

template <typename Body>
double ops_per_second(double ops_per_thread, Body body) {
  volatile double sink = 0;
  body(kIterations / 20);  // warm up: wake the threads and let the clock settle
  const auto start = std::chrono::steady_clock::now();
  int threads = 1;
#pragma omp parallel reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    sink += body(kIterations);
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return ops_per_thread * threads / elapsed.count();
}

}  // namespace

double measure_fp32_peak_gflops() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) {
    // 12 chains x 8 lanes x 2 flops per iteration.
    return ops_per_second(kIterations * 12.0 * 8 * 2, fma_chains) / 1e9;
  }
#endif
  return 0.0;
}

double measure_int8_peak_gops() {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) {
    return ops_per_second(kIterations * 8.0 * 64, int8_chains) / 1e9;
  }
#endif
  return 0.0;
}

}  // namespace pyrt::cpu
