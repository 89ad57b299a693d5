// Single-precision GEMM for the CPU: C = alpha * (A @ B) + beta * C.
//
// Every operand is described by a base pointer and two element strides
// (row stride, column stride), as in BLIS. A transposed operand is just a
// swapped pair of strides, a sliced or non-contiguous numpy view is just other
// strides, so no caller ever copies before calling; the packing routines read
// any layout into the contiguous panels the micro-kernel wants.
#pragma once

#include <cstdint>

namespace pyrt::cpu {

// a is (m, k) with strides (rsa, csa); b is (k, n) with strides (rsb, csb);
// c is (m, n) with strides (rsc, csc) and must not alias a or b.
// beta == 0 overwrites c without reading it (so c may hold NaNs or garbage).
void sgemm(int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t rsa, int64_t csa,
           const float* b, int64_t rsb, int64_t csb,
           float beta, float* c, int64_t rsc, int64_t csc);

// Name of the micro-kernel sgemm dispatches to on this CPU ("avx2_fma_6x16"
// or "portable"), for benchmarks and bug reports.
const char* sgemm_kernel_name();

}  // namespace pyrt::cpu
