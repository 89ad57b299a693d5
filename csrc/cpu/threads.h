// How many OpenMP threads a kernel may fork: one rule for every kernel.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

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

}  // namespace pyrt::cpu
