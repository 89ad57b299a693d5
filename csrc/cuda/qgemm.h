// Int8 GEMM and the activation quantizer of dynamic quantization, on an NVIDIA GPU.
//
// The same math as pyrt::cpu::int8_gemm / quantize_u8 (csrc/cpu/qgemm.h), on
// device memory: equal int32 sums, the same float32 epilogue and the same
// quantization parameters, so a quantized layer gives the same outputs on the
// GPU as on the CPU. See qgemm.cu for the tiling and the tensor-core
// fragments.
#pragma once

#include "cpu/qgemm.h"  // kActivationQmax, kInt8GemmMaxK: one definition for both backends
#include "cuda/runtime.h"

#include <cstdint>

namespace pyrt::cuda {

using pyrt::cpu::kActivationQmax;
using pyrt::cpu::kInt8GemmMaxK;

// Activation quantization parameters as quantize_u8 leaves them in device
// memory, where int8_gemm can read them without a round trip to the host.
struct QuantParams {
  float scale;         // x ~= scale * (q - zero_point); NaN when x held NaN or infinity
  int32_t zero_point;  // in [0, kActivationQmax]
  float inv_scale;     // float32 1 / scale, what the codes were computed with
  int32_t finite;      // 1 when every element of x was finite, else 0
};

// Blocks of quantize_u8's min/max pass at most; each leaves (min, max, finite)
// in the workspace for the pass that chooses the parameters.
constexpr int kQuantizeMaxBlocks = 256;
// int32 words of quantize_u8's workspace: the QuantParams, then 3 words per block.
constexpr int64_t kQuantizeWorkspaceWords = 4 + 3 * kQuantizeMaxBlocks;

// row_sums[j] = sum_p w[j, p]: w is (n, k) int8 with row stride ldw (unit
// column stride), row_sums is (n,) int32. Computed once per weight, for the
// zero-point term of int8_gemm.
cudaError_t int8_row_sums(int64_t n, int64_t k, const int8_t* w, int64_t ldw, int32_t* row_sums,
                          cudaStream_t stream);

// Dynamic per-tensor quantization of x (m, k) float32 with element strides
// (rsx, csx) into out (m, k) uint8 with row stride rso (unit column stride),
// values in [0, kActivationQmax]. workspace holds kQuantizeWorkspaceWords
// int32; on return (in stream order) its first 16 bytes are the QuantParams,
// chosen exactly as the CPU's (PyTorch's ChooseQuantizationParams with
// reduce_range). Non-finite x is not an error here (that would need a
// synchronization): it leaves finite = 0 and scale = NaN, so int8_gemm with
// these parameters outputs NaN; the caller reads `finite` when it may wait.
cudaError_t quantize_u8(int64_t m, int64_t k, const float* x, int64_t rsx, int64_t csx,
                        uint8_t* out, int64_t rso, int32_t* workspace, cudaStream_t stream);

// out[i, j] = a_scale * w_scale[j] * sum_p (a[i, p] - a_zero_point) * w[j, p] + bias[j]
//
// a is (m, k) uint8 with row stride lda; w is (n, k) int8 (nn.Linear's
// layout, symmetric) with row stride ldw; w_row_sums is int8_row_sums(w),
// (n,) int32; w_scale is (n,) float32; bias is (n,) float32 or null; out is
// (m, n) float32 with row stride ldo and must not alias a. Unit column
// strides throughout. When a_params is not null, a_scale and a_zero_point are
// read from it on the device (quantize_u8's output) and the two arguments
// are ignored.
//
// Activations must lie in [0, kActivationQmax], as on the CPU (the kernel
// itself multiplies them as unsigned bytes, exact for any uint8, but the
// overflow bound kInt8GemmMaxK assumes 7-bit codes); the caller checks.
// Returns cudaErrorInvalidValue for negative sizes, k > kInt8GemmMaxK, a zero
// point outside [0, kActivationQmax], or a grid too large to launch; else the
// launch status.
cudaError_t int8_gemm(int64_t m, int64_t n, int64_t k, const uint8_t* a, int64_t lda, float a_scale,
                      int32_t a_zero_point, const QuantParams* a_params, const int8_t* w,
                      int64_t ldw, const int32_t* w_row_sums, const float* w_scale,
                      const float* bias, float* out, int64_t ldo, cudaStream_t stream);

}  // namespace pyrt::cuda
