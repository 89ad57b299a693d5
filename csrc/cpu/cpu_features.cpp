#include "cpu/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace pyrt::cpu {

namespace {

bool detect_avx2_fma() {
  const char* disable = std::getenv("PYRT_DISABLE_AVX2");
  if (disable != nullptr && std::strcmp(disable, "0") != 0 && disable[0] != '\0') {
    return false;
  }
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

bool has_avx2_fma() {
  // Detected once: the answer cannot change while the process runs.
  static const bool supported = detect_avx2_fma();
  return supported;
}

}  // namespace pyrt::cpu
