// Single-precision GEMM on an NVIDIA GPU: C = alpha * (A @ B) + beta * C.
//
// The same contract as pyrt::cpu::sgemm (csrc/cpu/gemm.h), on device memory:
// every operand is a base pointer plus two element strides (row stride,
// column stride), as in BLIS, so a transposed or sliced cupy view is passed as
// is, never copied.
#pragma once

#include "cuda/runtime.h"

#include <cstdint>

namespace pyrt::cuda {

// a is (m, k) with strides (rsa, csa); b is (k, n) with strides (rsb, csb);
// c is (m, n) with strides (rsc, csc) and must not alias a or b. All three are
// device pointers of the current device; the work is queued on `stream`.
//
// beta == 0 overwrites c without reading it (so c may hold NaNs or garbage);
// alpha == 0 or k == 0 leaves a and b unread and computes c = beta * c.
// m == 0 or n == 0 launches nothing.
//
// Never throws: returns the launch status (cudaGetLastError after the launch),
// cudaErrorInvalidValue for negative sizes or a grid too large to launch.
// Errors in the kernel itself surface later, at the next synchronization.
cudaError_t sgemm(int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t rsa, int64_t csa,
                  const float* b, int64_t rsb, int64_t csb,
                  float beta, float* c, int64_t rsc, int64_t csc,
                  cudaStream_t stream);

}  // namespace pyrt::cuda
