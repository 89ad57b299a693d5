// A SIMT emulator: the CUDA source of csrc/cuda/ compiled by the host C++
// compiler and run on the CPU, one fiber per CUDA thread.
//
// Included through csrc/cuda/runtime.h when PYRT_SIMT_EMULATION is defined
// (the pyrt._cuda_emulator module); never together with <cuda_runtime.h>.
// It provides the part of CUDA the kernels use: the execution-space keywords,
// the built-in index variables, vector types, __syncthreads, the warp
// shuffles and votes, __dp4a, atomics, and the runtime calls the bindings
// make. Semantics that matter for finding indexing bugs are kept:
//
//   - Every thread of a block is a fiber (ucontext) with its own stack, so
//     registers and local arrays are per thread; __shared__ variables are
//     function statics, one copy shared by the block. Blocks run one after the
//     other, so one copy is all a kernel ever sees.
//   - __syncthreads() waits until every thread of the block that has not
//     exited arrives (exited threads count as arrived, as on Volta and later).
//     Threads that wait for each other forever (a barrier some threads never
//     reach while others wait) are reported as a deadlock: the launch fails
//     with cudaErrorLaunchFailure and the message names the block.
//   - Warp shuffles and votes exchange values between the lanes named in the
//     mask, all of which must arrive at the same call, as on the device.
//   - Launches check the configuration like the driver (at most 1024 threads
//     per block, a non-empty grid) and are synchronous; streams are ignored.
//
// What it cannot show: timing, memory coalescing and bank conflicts, races
// between threads that only the device's real concurrency would expose (the
// scheduler is deterministic), and PTX-level behaviour (inline asm needs a
// host path under #ifndef __CUDA_ARCH__).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

#ifdef __CUDACC__
#error "simt.h is the host emulation of CUDA; nvcc builds use <cuda_runtime.h>"
#endif

// --- execution-space and memory keywords -------------------------------------------------
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one copy per block: blocks run one at a time
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

// --- vector types and built-in variables -------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(4) char4 {
  signed char x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

// The scheduler sets these before it resumes a thread's fiber.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

// --- runtime API --------------------------------------------------------------------------
using cudaStream_t = struct CUstream_st*;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t stream);

namespace pyrt::simt {

// Waits, from inside a fiber, until the block's other threads arrive.
void syncthreads();
// Lane `lane`'s copy of an 8-byte slot after every lane in `mask` deposited its own;
// `deposit` is this lane's value. Returns what `source` deposited.
uint64_t warp_exchange(unsigned mask, uint64_t deposit, int source);
// Lane index of the running fiber within its warp.
int lane_id();
// The message of the last failed launch (a deadlock names the block).
const char* last_error_detail();

// Runs body() once per thread of every block of the grid; returns the launch status.
cudaError_t launch_grid(dim3 grid, dim3 block, const std::function<void()>& body);

// kernel<<<grid, block>>>(args...): parameters are copied by value, as CUDA does.
template <class... Params, class... Args>
cudaError_t launch(dim3 grid, dim3 block, void (*kernel)(Params...), Args&&... args) {
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  return launch_grid(grid, block, [&] { std::apply(kernel, params); });
}

template <class T>
T shuffle(unsigned mask, T value, int source) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>,
                "the emulator shuffles values of at most 8 bytes");
  uint64_t slot = 0;
  std::memcpy(&slot, &value, sizeof(T));
  slot = warp_exchange(mask, slot, source);
  T out;
  std::memcpy(&out, &slot, sizeof(T));
  return out;
}

}  // namespace pyrt::simt

// --- device functions ---------------------------------------------------------------------
inline void __syncthreads() { pyrt::simt::syncthreads(); }

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  pyrt::simt::warp_exchange(mask, 0, pyrt::simt::lane_id());
}

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  const int lane = pyrt::simt::lane_id();
  return pyrt::simt::shuffle(mask, var, (lane / width) * width + (src_lane % width));
}

template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  const int lane = pyrt::simt::lane_id();
  const int source = lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return pyrt::simt::shuffle(mask, var, source);
}

template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  const int lane = pyrt::simt::lane_id();
  const int source = lane % width >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return pyrt::simt::shuffle(mask, var, source);
}

template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  const int lane = pyrt::simt::lane_id();
  const int source = lane ^ lane_mask;
  return pyrt::simt::shuffle(mask, var, (source / width == lane / width) ? source : lane);
}

// Bit i set when lane i (in mask) passed a non-zero predicate.
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  unsigned ballot = 0;
  const int lane = pyrt::simt::lane_id();
  for (int source = 0; source < warpSize; ++source) {
    if (!(mask >> source & 1u)) continue;
    // Every lane in the mask takes part in each exchange, so all see all bits.
    const int bit = pyrt::simt::shuffle(mask, predicate != 0 ? 1 : 0, source);
    ballot |= static_cast<unsigned>(bit) << source;
  }
  (void)lane;
  return ballot;
}

inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) == __ballot_sync(mask, 1);
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// Four signed 8-bit products summed into a 32-bit accumulator, as the dp4a instruction.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i) {
    const auto ai = static_cast<int8_t>(static_cast<uint32_t>(a) >> (8 * i));
    const auto bi = static_cast<int8_t>(static_cast<uint32_t>(b) >> (8 * i));
    c += static_cast<int>(ai) * static_cast<int>(bi);
  }
  return c;
}

template <class T>
T __ldg(const T* p) {
  return *p;
}

// One fiber runs at a time, so a read-modify-write is atomic by construction.
template <class T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <class T>
T atomicMax(T* address, T value) {
  const T old = *address;
  *address = old < value ? value : old;
  return old;
}
template <class T>
T atomicMin(T* address, T value) {
  const T old = *address;
  *address = value < old ? value : old;
  return old;
}
inline int atomicCAS(int* address, int compare, int value) {
  const int old = *address;
  if (old == compare) *address = value;
  return old;
}

inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}
inline int __float_as_int(float f) {
  int x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
