// Element-wise in-place reductions on an NVIDIA GPU for the collectives: the
// "combine my segment with the one I just received" step of an all-reduce on
// device buffers, and the scale that turns a sum into an average.
//
// The contract is pyrt::cpu::reduce_inplace's (csrc/cpu/reduce.h), widened
// to the dtypes and ops the collectives name: float32, float64, int32, int64
// with sum, prod, max, min.
#pragma once

#include "cuda/runtime.h"

#include <cstdint>

namespace pyrt::cuda {

enum class ReduceOp { kSum, kProd, kMax, kMin };

// dst and src are (count,) device arrays of the current device, either
// identical or non-overlapping; dst[i] = op(dst[i], src[i]), queued on stream.
// max/min follow numpy's np.maximum/np.minimum: when either operand is NaN the
// result is NaN; between +0.0 and -0.0 either may be returned. Integer sum and
// prod wrap modulo 2^32 / 2^64, as numpy's do.
// Any alignment: when dst and src sit at the same offset from a 16-byte
// boundary the bulk moves in 16-byte vectors, otherwise element by element.
// Never throws: returns the launch status (cudaErrorInvalidValue for count < 0).
cudaError_t reduce_inplace(float* dst, const float* src, int64_t count, ReduceOp op, cudaStream_t stream);
cudaError_t reduce_inplace(double* dst, const double* src, int64_t count, ReduceOp op, cudaStream_t stream);
cudaError_t reduce_inplace(int32_t* dst, const int32_t* src, int64_t count, ReduceOp op,
                           cudaStream_t stream);
cudaError_t reduce_inplace(int64_t* dst, const int64_t* src, int64_t count, ReduceOp op,
                           cudaStream_t stream);

// How the kernels split (dst, src, count) of elements of `itemsize` bytes:
// `head` leading elements one by one (until dst is 16-byte aligned), `packs`
// 16-byte vectors, then the rest one by one. head == count and packs == 0 when
// dst and src are not equally misaligned. Exposed for the tests.
struct ReducePlan {
  int64_t head;
  int64_t packs;
};
ReducePlan reduce_plan(const void* dst, const void* src, int64_t count, int64_t itemsize);

}  // namespace pyrt::cuda
