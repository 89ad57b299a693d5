// Int8 GEMM for dynamically quantized Linear layers, and the activation
// quantizer that feeds it. See qgemm.cpp for the math, the packed layout and
// why activations are 7-bit.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyrt::cpu {

// Activations are quantized to [0, kActivationQmax]: 7 bits, so that
// vpmaddubsw can never saturate (PyTorch/FBGEMM's reduce_range).
constexpr int32_t kActivationQmax = 127;

// Largest k whose int32 accumulators cannot overflow: k * 127 * 128 < 2^31.
constexpr int64_t kInt8GemmMaxK = 132104;

// Int8 weights of a Linear layer, (n, k) like nn.Linear.weight, packed once
// (at quantization time) into the panels the micro-kernel reads, together
// with their row sums. Symmetric: the weight zero point is 0.
class PackedInt8Weight {
 public:
  // w is (n, k) int8 with strides (rsw, csw) in elements. Throws
  // std::invalid_argument for negative sizes or k > kInt8GemmMaxK.
  PackedInt8Weight(const int8_t* w, int64_t n, int64_t k, int64_t rsw, int64_t csw);
  ~PackedInt8Weight();
  PackedInt8Weight(const PackedInt8Weight&) = delete;
  PackedInt8Weight& operator=(const PackedInt8Weight&) = delete;

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  // Bytes held (panels plus row sums), for memory reports.
  size_t nbytes() const;
  // The packed panels and the (n rounded up to the panel width) row sums
  // sum_k w[n, k]; padding columns are zero. For the kernel and the tests.
  const int8_t* panels() const { return panels_; }
  const int32_t* row_sums() const { return row_sums_; }
  // w[n, k] read back from the packed layout (tests, debugging).
  int8_t at(int64_t row, int64_t col) const;

 private:
  int64_t n_ = 0;
  int64_t k_ = 0;
  int8_t* panels_ = nullptr;     // 64-byte aligned
  int32_t* row_sums_ = nullptr;  // 64-byte aligned
};

// Dynamic per-tensor quantization of x (m, k) with strides (rsx, csx) into
// out (m, k) uint8 with row stride rso (unit column stride), values in
// [0, kActivationQmax]; writes the chosen scale and zero point, so that
// x ~= scale * (out - zero_point). The parameters follow PyTorch's
// ChooseQuantizationParams with reduce_range (see qgemm.cpp). Throws
// std::invalid_argument if x holds NaN or infinity.
void quantize_u8(const float* x, int64_t m, int64_t k, int64_t rsx, int64_t csx, uint8_t* out,
                 int64_t rso, float* scale, int32_t* zero_point);

// out[i, j] = a_scale * w_scale[j] * sum_p (a[i, p] - a_zero_point) * w[j, p] + bias[j]
// a is (m, k) uint8 in [0, kActivationQmax] with row stride lda (unit column
// stride), w is packed (n, k), w_scale is (n,), bias is (n,) or nullptr, out
// is (m, n) float32 with row stride ldo (unit column stride) and must not
// alias a. Throws std::invalid_argument if a holds a value above
// kActivationQmax or a_zero_point is outside [0, kActivationQmax].
void int8_gemm(int64_t m, const uint8_t* a, int64_t lda, float a_scale, int32_t a_zero_point,
               const PackedInt8Weight& w, const float* w_scale, const float* bias, float* out,
               int64_t ldo);

// Name of the micro-kernel int8_gemm dispatches to on this CPU
// ("avx2_4x16" or "portable"), for benchmarks and bug reports.
const char* int8_gemm_kernel_name();

}  // namespace pyrt::cpu
