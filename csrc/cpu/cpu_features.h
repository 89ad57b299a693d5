// Run-time CPU feature detection, so one binary runs everywhere and uses
// AVX2/FMA where the processor has them.
#pragma once

// The x86 intrinsics, for every kernel file: the AVX2 code in them is compiled
// per function with target("avx2,fma") and only called when has_avx2_fma().
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PYRT_HAVE_X86 1
#endif

namespace pyrt::cpu {

// True when the CPU (and OS) support AVX2 and FMA3. Setting the environment
// variable PYRT_DISABLE_AVX2=1 forces false, to test the portable path.
bool has_avx2_fma();

}  // namespace pyrt::cpu
