// The one include for CUDA's runtime API in csrc/cuda/.
//
// Built by nvcc (pyrt._cuda) this is <cuda_runtime.h>. Built by the host C++
// compiler with PYRT_SIMT_EMULATION (pyrt._cuda_emulator) it is the SIMT
// emulator in csrc/cuda/emulator/simt.h, which runs the very same kernel
// source on the CPU: every CUDA thread a fiber, __syncthreads a barrier,
// shuffles exchanged per warp. That is how the kernels' index math is tested
// on machines without a GPU (tests/cuda/).
//
// Kernels are launched with PYRT_LAUNCH(kernel, grid, block, stream, args...)
// rather than kernel<<<grid, block, 0, stream>>>(args...), so the launcher
// (grid arithmetic included) is emulated too.
#pragma once

#ifdef PYRT_SIMT_EMULATION
#include "cuda/emulator/simt.h"
#define PYRT_LAUNCH(kernel, grid, block, stream, ...) \
  ::pyrt::simt::launch((grid), (block), (kernel), __VA_ARGS__)
#else
#include <cuda_runtime.h>
#define PYRT_LAUNCH(kernel, grid, block, stream, ...) \
  kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

// Full unrolling keeps register arrays in registers on the device; the host
// compiler (emulation, and nvcc's host pass over __host__ __device__ code)
// does not know the pragma.
#ifdef __CUDA_ARCH__
#define PYRT_UNROLL _Pragma("unroll")
#else
#define PYRT_UNROLL
#endif
