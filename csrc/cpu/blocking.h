// Integer helpers for cache blocking, shared by the GEMM kernels.
#pragma once

#include <algorithm>
#include <cstdint>

namespace pyrt::cpu {

inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }
inline int64_t round_up(int64_t x, int64_t y) { return ceil_div(x, y) * y; }

// Block size for a loop of length `len` with at most `max_block` per block,
// rounded up to a multiple of `unit`: equal blocks instead of a ragged tail
// (k = 784 runs as 4 x 196, not 3 x 256 + 16).
inline int64_t balanced_block(int64_t len, int64_t max_block, int64_t unit) {
  const int64_t blocks = ceil_div(len, max_block);
  return std::min(max_block, round_up(ceil_div(len, blocks), unit));
}

}  // namespace pyrt::cpu
