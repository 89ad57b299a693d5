// dst = op(dst, src) element-wise on the GPU, for the collectives on device
// buffers; pyrt.kernels.reduce_inplace on cupy arrays lands here.
//
//   dst (count,), src (count,): device pointers, identical or disjoint
//
// Built into pyrt._cuda (nvcc) and pyrt._cuda_emulator (the same source on the
// CPU); checked against numpy by tests/cuda/test_cuda_reduce.py.
//
// Shape of the work. The operation is one load of each operand and one store
// per element, so it is bound by memory bandwidth and the kernel's only job is
// to keep the loads wide and the GPU full:
//   - 16-byte vectors (4 float/int32, 2 double/int64): the widest load a
//     thread can issue, so a warp moves 512 contiguous bytes per instruction.
//     A ring all-reduce's segments start at arbitrary element offsets, so a
//     vector body needs dst and src at the same offset from a 16-byte boundary;
//     the elements before dst's first boundary (the head) and after the last
//     whole vector (the tail) go one by one. Unequal offsets go one by one.
//   - A grid-stride loop over a grid capped at kMaxBlocks blocks: enough
//     threads to fill every SM of an H100/H200 several times over while each
//     thread handles several vectors of a large buffer, so launch cost does not
//     grow with the size.
// src is read through ordinary loads (not __ldg): it may be dst itself, and
// the read-only cache must not hold data the kernel writes.
#include "cuda/reduce.h"

#include <type_traits>

namespace pyrt::cuda {
namespace {

constexpr int kVectorBytes = 16;
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 2048;

// A 16-byte vector of T; the alignment lets nvcc emit one 128-bit load/store.
template <class T>
struct alignas(kVectorBytes) Pack {
  T v[kVectorBytes / sizeof(T)];
};

template <ReduceOp kOp>
struct Combine {
  template <class T>
  __host__ __device__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      // Unsigned arithmetic wraps instead of overflowing (undefined for signed), as numpy's does.
      using U = std::make_unsigned_t<T>;
      if constexpr (kOp == ReduceOp::kSum) return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
      if constexpr (kOp == ReduceOp::kProd) return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
      if constexpr (kOp == ReduceOp::kMax) return a > b ? a : b;
      if constexpr (kOp == ReduceOp::kMin) return a < b ? a : b;
    } else {
      if constexpr (kOp == ReduceOp::kSum) return a + b;
      if constexpr (kOp == ReduceOp::kProd) return a * b;
      // A NaN in a wins through `a != a`; a NaN in b through the failed comparison.
      if constexpr (kOp == ReduceOp::kMax) return (a != a || a > b) ? a : b;
      if constexpr (kOp == ReduceOp::kMin) return (a != a || a < b) ? a : b;
    }
    return a;  // unreachable: every op is handled above
  }
};

// dst[i] = f(dst[i], src[i]) for i < count: plan.packs vectors from element
// plan.head on, the other elements (head and tail) one by one.
template <class T, class F>
__global__ void __launch_bounds__(kThreads) elementwise(T* dst, const T* src, int64_t count,
                                                         ReducePlan plan, F f) {
  constexpr int kLanes = kVectorBytes / sizeof(T);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;

  Pack<T>* dst_v = reinterpret_cast<Pack<T>*>(dst + plan.head);
  const Pack<T>* src_v = reinterpret_cast<const Pack<T>*>(src + plan.head);
  for (int64_t i = first; i < plan.packs; i += stride) {
    Pack<T> a = dst_v[i];
    const Pack<T> b = src_v[i];
PYRT_UNROLL
    for (int e = 0; e < kLanes; ++e) a.v[e] = f(a.v[e], b.v[e]);
    dst_v[i] = a;
  }

  const int64_t tail = plan.head + plan.packs * kLanes;  // first element after the vectors
  const int64_t loose = plan.head + (count - tail);      // elements done one by one
  for (int64_t i = first; i < loose; i += stride) {
    const int64_t j = i < plan.head ? i : tail + (i - plan.head);
    dst[j] = f(dst[j], src[j]);
  }
}

int64_t ceil_div(int64_t x, int64_t y) { return x / y + (x % y != 0); }

template <class T, class F>
cudaError_t launch(T* dst, const T* src, int64_t count, F f, cudaStream_t stream) {
  if (count < 0) return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  const ReducePlan plan = reduce_plan(dst, src, count, sizeof(T));
  const int64_t work = plan.packs + (count - plan.packs * static_cast<int64_t>(kVectorBytes / sizeof(T)));
  const int64_t blocks = ceil_div(work, kThreads) < kMaxBlocks ? ceil_div(work, kThreads) : kMaxBlocks;
  void (*kernel)(T*, const T*, int64_t, ReducePlan, F) = elementwise<T, F>;
  PYRT_LAUNCH(kernel, static_cast<unsigned>(blocks), kThreads, stream, dst, src, count, plan, f);
  return cudaGetLastError();
}

template <class T>
cudaError_t reduce_any(T* dst, const T* src, int64_t count, ReduceOp op, cudaStream_t stream) {
  switch (op) {
    case ReduceOp::kSum: return launch(dst, src, count, Combine<ReduceOp::kSum>{}, stream);
    case ReduceOp::kProd: return launch(dst, src, count, Combine<ReduceOp::kProd>{}, stream);
    case ReduceOp::kMax: return launch(dst, src, count, Combine<ReduceOp::kMax>{}, stream);
    case ReduceOp::kMin: return launch(dst, src, count, Combine<ReduceOp::kMin>{}, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

ReducePlan reduce_plan(const void* dst, const void* src, int64_t count, int64_t itemsize) {
  const auto d = reinterpret_cast<uintptr_t>(dst);
  const auto s = reinterpret_cast<uintptr_t>(src);
  if (count <= 0 || d % kVectorBytes != s % kVectorBytes || d % itemsize != 0) return {count, 0};
  int64_t head = static_cast<int64_t>((kVectorBytes - d % kVectorBytes) % kVectorBytes) / itemsize;
  if (head > count) head = count;
  return {head, (count - head) / (kVectorBytes / itemsize)};
}

cudaError_t reduce_inplace(float* dst, const float* src, int64_t count, ReduceOp op, cudaStream_t stream) {
  return reduce_any(dst, src, count, op, stream);
}
cudaError_t reduce_inplace(double* dst, const double* src, int64_t count, ReduceOp op, cudaStream_t stream) {
  return reduce_any(dst, src, count, op, stream);
}
cudaError_t reduce_inplace(int32_t* dst, const int32_t* src, int64_t count, ReduceOp op,
                           cudaStream_t stream) {
  return reduce_any(dst, src, count, op, stream);
}
cudaError_t reduce_inplace(int64_t* dst, const int64_t* src, int64_t count, ReduceOp op,
                           cudaStream_t stream) {
  return reduce_any(dst, src, count, op, stream);
}

}  // namespace pyrt::cuda
