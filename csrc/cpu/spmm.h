// Sparse (CSR) times dense matrix product for the CPU, for pruned weights
// times activations: C = alpha * (A @ B) + beta * C.
//
// A is stored in CSR form: row i holds values[indptr[i] .. indptr[i+1]) at
// columns indices[indptr[i] .. indptr[i+1]). Index arrays are int64, as in
// torch's CSR tensors, so one type serves every size (indptr of a large
// embedding passes 2^31) and torch's arrays pass without a conversion copy.
// int32 indices would cut A's stream from 12 to 8 bytes per nonzero, but each
// nonzero also reads 96 floats of B; an int32 build measured no clear
// difference (256 x 4096 at 90%, 1 thread: 3.96-4.85 ms int64, 4.08-4.40 ms
// int32; full-size runs on the shared machine were too noisy to separate).
#pragma once

#include <cstdint>
#include <string>

namespace pyrt::cpu {

// a is (m, k) CSR: indptr (m+1,), indices (nnz,), values (nnz,), where
// nnz = indptr[m] - indptr[0] (indptr[0] need not be 0, so a row slice of a
// bigger CSR matrix works). b is (k, n) with row stride ldb >= n and unit
// column stride; c is (m, n) with row stride ldc >= n and unit column stride,
// and must not alias b or the CSR arrays.
// beta == 0 overwrites c without reading it (so c may hold NaNs or garbage);
// beta == 1 accumulates into c. The CSR arrays are assumed valid (see
// validate_csr); column indices need not be sorted for correctness, only for
// speed.
void spmm_csr(int64_t m, int64_t n, int64_t k, float alpha,
              const int64_t* indptr, const int64_t* indices, const float* values,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Checks the structure of an (m, k) CSR matrix in one pass over indptr and
// indices: indptr[0] == 0, indptr non-decreasing, indptr[m] == nnz, every
// column index in [0, k), and column indices strictly increasing within each
// row (sorted, no duplicates). Returns "" when valid, otherwise a description
// naming the first offending position and values, for the binding to raise.
std::string validate_csr(int64_t m, int64_t k, const int64_t* indptr, int64_t indptr_len,
                         const int64_t* indices, int64_t nnz);

// Name of the row kernel spmm_csr dispatches to on this CPU ("avx2_fma" or
// "portable"), for benchmarks and bug reports.
const char* spmm_kernel_name();

}  // namespace pyrt::cpu
