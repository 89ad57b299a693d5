// Run-time CPU feature detection, so one binary runs everywhere and uses
// AVX2/FMA where the processor has them.
#pragma once

namespace pyrt::cpu {

// True when the CPU (and OS) support AVX2 and FMA3. Setting the environment
// variable PYRT_DISABLE_AVX2=1 forces false, to test the portable path.
bool has_avx2_fma();

}  // namespace pyrt::cpu
