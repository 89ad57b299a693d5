// Kernels that check the SIMT emulator itself (tests/cuda/test_simt_emulator.py):
// that barriers order shared-memory traffic, that shuffles and votes move the
// right lanes' values, and that a barrier only some threads reach is reported
// as a deadlock instead of hanging. Bound only into pyrt._cuda_emulator.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/runtime.h"

namespace py = pybind11;

namespace {

// out[b * n + t] = sum of in[b * n .. b * n + n) for every thread t: a shared-memory tree
// reduction, which needs every barrier to be in place.
__global__ void block_sum(const float* in, float* out, int n) {
  __shared__ float partial[1024];
  const int t = static_cast<int>(threadIdx.x);
  partial[t] = in[blockIdx.x * n + t];
  __syncthreads();
  for (int half = n / 2; half > 0; half /= 2) {
    if (t < half) partial[t] += partial[t + half];
    __syncthreads();
  }
  out[blockIdx.x * n + t] = partial[0];
}

// Per lane: the warp sum by __shfl_down_sync + broadcast from lane 0, __shfl_xor_sync's
// butterfly sum, __shfl_up_sync's value, and the ballot of odd values.
__global__ void warp_ops(const int* in, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  const int value = in[t];
  int down = value;
  for (int offset = 16; offset > 0; offset /= 2) down += __shfl_down_sync(0xffffffffu, down, offset);
  int butterfly = value;
  for (int mask = 1; mask < 32; mask *= 2) butterfly += __shfl_xor_sync(0xffffffffu, butterfly, mask);
  out[4 * t + 0] = __shfl_sync(0xffffffffu, down, 0);
  out[4 * t + 1] = butterfly;
  out[4 * t + 2] = __shfl_up_sync(0xffffffffu, value, 1);
  out[4 * t + 3] = static_cast<int>(__ballot_sync(0xffffffffu, value & 1));
}

// Thread 0 returns early while the others meet at a barrier it skipped: legal on the device,
// since exited threads count as arrived. With `deadlock`, thread 1 then waits at a barrier
// while lanes 2..31 wait at a warp exchange that includes lane 1: neither can finish.
__global__ void divergent_barriers(int* out, int deadlock) {
  const int t = static_cast<int>(threadIdx.x);
  if (t == 0) return;
  __syncthreads();
  out[t] = 1;
  if (!deadlock) return;
  if (t == 1) {
    __syncthreads();
  } else {
    __syncwarp(0xfffffffeu);
  }
}

// As a launcher does: the launch's status is read (and cleared) by cudaGetLastError, so a
// failed launch does not stay pending for the next caller.
void check_launch() {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err));
  }
}

}  // namespace

void register_selftests(py::module_& m) {
  m.def("selftest_block_sum", [](py::array_t<float, py::array::c_style> in) {
    const int blocks = static_cast<int>(in.shape(0)), n = static_cast<int>(in.shape(1));
    py::array_t<float> out({blocks, n});
    PYRT_LAUNCH(block_sum, blocks, n, nullptr, in.data(), out.mutable_data(), n);
    check_launch();
    return out;
  });
  m.def("selftest_warp_ops", [](py::array_t<int, py::array::c_style> in) {
    py::array_t<int> out({32, 4});
    PYRT_LAUNCH(warp_ops, 1, 32, nullptr, in.data(), out.mutable_data());
    check_launch();
    return out;
  });
  m.def("selftest_divergent_barriers", [](int threads, bool deadlock) {
    py::array_t<int> out(threads);
    std::fill(out.mutable_data(), out.mutable_data() + threads, 0);
    PYRT_LAUNCH(divergent_barriers, 1, threads, nullptr, out.mutable_data(), deadlock ? 1 : 0);
    check_launch();
    return out;
  });
}
