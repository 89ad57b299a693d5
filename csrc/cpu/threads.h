// What every CPU kernel shares: how many OpenMP threads it may fork, its
// per-thread scratch buffers, and the name of the loop it picked for this CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/cpu_features.h"

namespace pyrt::cpu {

// All of OpenMP's threads (pyrt.set_num_threads), or 1 when called from inside
// a parallel region: a kernel run by an already-threaded caller must not fork
// a nested team that fights its siblings for the same cores.
inline int max_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

// max_threads() once there are at least `min_work` units of work, else 1:
// below that, forking costs as much as the threads save.
inline int threads_for(int64_t work, int64_t min_work) { return work >= min_work ? max_threads() : 1; }

// At least `bytes` (rounded up to whole cache lines) aligned to 64 bytes, freed
// with std::free: packed panels start on a cache line, so each packed k step
// (SGEMM) or k group (int8 GEMM) of a micro-panel is exactly one line.
inline void* aligned_bytes(size_t bytes) {
  const size_t lines = (bytes + 63) / 64;
  void* p = std::aligned_alloc(64, (lines > 0 ? lines : 1) * 64);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

// Per-thread scratch (declare it thread_local), grown on demand and kept for
// the thread's life: training and inference call the same shapes thousands of
// times, and a fresh allocation per call would pay for new pages every time.
template <typename T>
class ThreadBuffer {
 public:
  ThreadBuffer() = default;
  ThreadBuffer(const ThreadBuffer&) = delete;
  ThreadBuffer& operator=(const ThreadBuffer&) = delete;
  ~ThreadBuffer() { std::free(data_); }

  // Room for `count` elements of T; the contents are not kept when it grows.
  T* get(int64_t count) {
    if (count > capacity_) {
      std::free(data_);
      data_ = nullptr;  // stays consistent if the allocation below throws
      capacity_ = 0;
      data_ = static_cast<T*>(aligned_bytes(static_cast<size_t>(count) * sizeof(T)));
      capacity_ = count;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  int64_t capacity_ = 0;
};

// The name a kernel reports for the loop it runs: `avx2_name` where the CPU
// has AVX2 and FMA (the condition every kernel dispatches on), else "portable".
inline const char* kernel_name(const char* avx2_name) {
#ifdef PYRT_HAVE_X86
  if (has_avx2_fma()) return avx2_name;
#else
  (void)avx2_name;
#endif
  return "portable";
}

}  // namespace pyrt::cpu
