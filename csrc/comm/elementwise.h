// What the ring and the shared-memory all-reduce share: the element types and
// reduce ops they name, and the element-wise step that combines two ranks'
// values, so both reduce (and average) by one rule.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "cpu/reduce.h"

namespace pyrt::comm {

// The ring reduces Float32/Float64 by Sum, Avg, Max and Min; shared memory all
// four dtypes by every op.
enum class Dtype : int { Float32 = 0, Float64 = 1, Int32 = 2, Int64 = 3 };
// Avg is Sum followed by one division by the group size in the array's dtype
// (floor division for integers): the rule every pyrt all-reduce algorithm
// shares (pyrt/distributed/averaging.py), so every algorithm's Avg equals its
// Sum / p bit for bit.
enum class Op : int { Sum = 0, Avg = 1, Max = 2, Min = 3, Product = 4 };

inline int64_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::Float32:
    case Dtype::Int32:
      return 4;
    case Dtype::Float64:
    case Dtype::Int64:
      return 8;
  }
  throw std::invalid_argument("all-reduce: unknown dtype");
}

// Calls f(T*) (a null pointer: only its type matters) with the dtype's element type.
template <typename F>
void with_type(Dtype dtype, F&& f) {
  switch (dtype) {
    case Dtype::Float32:
      return f(static_cast<float*>(nullptr));
    case Dtype::Float64:
      return f(static_cast<double*>(nullptr));
    case Dtype::Int32:
      return f(static_cast<int32_t*>(nullptr));
    case Dtype::Int64:
      return f(static_cast<int64_t*>(nullptr));
  }
}

// dst[i] = op(dst[i], src[i]) for dst, src: (n,); Avg combines as Sum (divide()
// finishes it). Floats take the vectorized kernel single-threaded: the other
// ranks reduce the other slices (shared memory), or the transfer of the next
// segment overlaps this one (the ring).
template <typename T>
void combine(T* dst, const T* src, int64_t n, Op op) {
  if constexpr (std::is_floating_point_v<T>) {
    if (op != Op::Product) {
      const auto kernel_op = op == Op::Max   ? cpu::ReduceOp::kMax
                             : op == Op::Min ? cpu::ReduceOp::kMin
                                             : cpu::ReduceOp::kSum;
      cpu::reduce_inplace(dst, src, n, kernel_op, cpu::Threading::kSingleThread);
      return;
    }
    for (int64_t i = 0; i < n; ++i) dst[i] *= src[i];
  } else {
    // Integers wrap on overflow, as numpy's do: add and multiply as unsigned.
    using U = std::make_unsigned_t<T>;
    switch (op) {
      case Op::Sum:
      case Op::Avg:
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(static_cast<U>(dst[i]) + static_cast<U>(src[i]));
        break;
      case Op::Product:
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(static_cast<U>(dst[i]) * static_cast<U>(src[i]));
        break;
      case Op::Max:
        for (int64_t i = 0; i < n; ++i) dst[i] = std::max(dst[i], src[i]);
        break;
      case Op::Min:
        for (int64_t i = 0; i < n; ++i) dst[i] = std::min(dst[i], src[i]);
        break;
    }
  }
}

// AVG's rule on x: (n,) holding a sum over p ranks. Floats are divided by p as
// a T: correctly rounded, unlike a multiplication by 1/p, and bit-equal to the
// Python paths' `x /= dtype(p)` (no -ffast-math here, which could turn it into
// one). Integers are floor-divided, like numpy's `//=`.
template <typename T>
void divide(T* x, int64_t n, int64_t p) {
  const T divisor = static_cast<T>(p);
  if constexpr (std::is_floating_point_v<T>) {
    for (int64_t i = 0; i < n; ++i) x[i] /= divisor;
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const T q = x[i] / divisor;
      x[i] = (x[i] % divisor != 0 && x[i] < 0) ? q - 1 : q;
    }
  }
}

}  // namespace pyrt::comm
