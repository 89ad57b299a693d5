// Sparse (CSR) times dense matrix product on an NVIDIA GPU, for pruned
// weights times activations: C = alpha * (A @ B) + beta * C.
//
// The same contract as pyrt::cpu::spmm_csr (csrc/cpu/spmm.h) on device
// memory, except that the index arrays are int32: on the GPU every nonzero's
// index is read by a whole warp's worth of bandwidth budget, and halving it is
// free once Python checks that nnz and k fit (pyrt.kernels.CSRPattern converts
// once when it builds the device copy of a pattern).
#pragma once

#include "cuda/runtime.h"

#include <cstdint>

namespace pyrt::cuda {

// a is (m, k) CSR: indptr (m+1,), indices (nnz,), values (nnz,), where row i
// holds values[indptr[i] .. indptr[i+1]) at columns indices[indptr[i] ..
// indptr[i+1]) (indptr values are offsets into indices/values, so a row slice
// of a bigger matrix works with indptr[0] != 0). b is (k, n) with row stride
// ldb >= n and unit column stride; c is (m, n) with row stride ldc >= n and
// unit column stride, and must not alias b or the CSR arrays. All pointers
// are device pointers of the current device; the work is queued on `stream`.
// The CSR arrays are assumed valid (pyrt.kernels validates them on the host).
//
// beta == 0 overwrites c without reading it (so c may hold NaNs or garbage).
// m == 0 or n == 0 launches nothing.
//
// Never throws: returns the launch status, cudaErrorInvalidValue for negative
// sizes or a grid too large to launch.
cudaError_t spmm_csr(int64_t m, int64_t n, int64_t k, float alpha,
                     const int32_t* indptr, const int32_t* indices, const float* values,
                     const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                     cudaStream_t stream);

// How spmm_csr covers the columns of b and c for these arguments:
//   "vec4x2": each lane loads two float4 of a B row (a warp spans 256 columns),
//   "vec4":   one float4 per lane (128 columns), for n <= 128,
//   "scalar": four floats per lane, 32 apart (128 columns), when n % 4 != 0 or
//             b, c or their row strides are not 16-byte aligned.
// Exposed so the tests can assert which path a case exercises.
const char* spmm_path(int64_t n, const float* b, int64_t ldb, const float* c, int64_t ldc);

}  // namespace pyrt::cuda
