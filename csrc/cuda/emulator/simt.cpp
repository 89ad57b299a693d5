// The scheduler behind simt.h: runs a CUDA grid on the CPU, block after block,
// each block's threads as fibers (POSIX ucontext) switched cooperatively.
//
// A fiber runs until it waits (at __syncthreads or a warp exchange) or
// returns; the scheduler then resumes the next one, round robin. A barrier is
// released when the last live participant arrives; waiting fibers spin on the
// barrier's generation counter, yielding each time they find it unchanged. A
// full round in which no fiber arrives anywhere, is released or exits means
// the live threads wait for each other forever: a deadlock, reported instead
// of hanging. One OS thread runs a whole launch, so the built-in variables are
// thread_local and a launch from another Python thread does not interfere.
#include <ucontext.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/emulator/simt.h"

namespace pyrt::simt {
namespace {

constexpr size_t kStackBytes = 64 * 1024;  // per thread: kernels keep small register arrays

struct Warp {
  unsigned live = 0;       // lanes that have not exited
  unsigned expected = 0;   // the mask of the exchange in progress
  int arrived = 0;
  uint64_t generation = 0;
  uint64_t slots[2][32] = {};  // double-buffered by generation: a lane that runs ahead
                               // to the next exchange writes the other half
};

struct Fiber {
  ucontext_t context;
  uint3 index;
  bool done = false;
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  ucontext_t scheduler;
  const std::function<void()>* body = nullptr;
  int current = 0;
  int live = 0;
  int arrived = 0;          // at __syncthreads
  uint64_t generation = 0;  // of __syncthreads
  bool progress = false;
  std::exception_ptr error;
};

thread_local Block* running = nullptr;
thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string error_detail;

void yield() { swapcontext(&running->fibers[running->current].context, &running->scheduler); }

void release_warp_if_complete(Warp& warp) {
  if (warp.arrived > 0 && warp.arrived >= __builtin_popcount(warp.expected & warp.live)) {
    warp.arrived = 0;
    ++warp.generation;
  }
}

void fiber_main() {
  Block& block = *running;
  try {
    (*block.body)();
  } catch (...) {
    if (!block.error) block.error = std::current_exception();
  }
  const int tid = block.current;
  block.fibers[tid].done = true;
  block.progress = true;
  --block.live;
  if (block.arrived > 0 && block.arrived == block.live) {  // exited threads count as arrived
    block.arrived = 0;
    ++block.generation;
  }
  Warp& warp = block.warps[tid / warpSize];
  warp.live &= ~(1u << (tid % warpSize));
  release_warp_if_complete(warp);
  // Returning resumes the scheduler through uc_link.
}

uint3 unflatten(int tid, dim3 shape) {
  const unsigned t = static_cast<unsigned>(tid);
  return {t % shape.x, t / shape.x % shape.y, t / (shape.x * shape.y)};
}

// Runs one block to completion; false (with error_detail set) on a deadlock.
bool run_block(Block& block, dim3 shape, std::vector<std::unique_ptr<char[]>>& stacks) {
  const int threads = static_cast<int>(shape.x * shape.y * shape.z);
  block.fibers.assign(threads, Fiber{});
  block.warps.assign((threads + warpSize - 1) / warpSize, Warp{});
  for (int tid = 0; tid < threads; ++tid) {
    block.warps[tid / warpSize].live |= 1u << (tid % warpSize);
  }
  block.live = threads;
  block.arrived = 0;
  for (int tid = 0; tid < threads; ++tid) {
    Fiber& fiber = block.fibers[tid];
    fiber.index = unflatten(tid, shape);
    getcontext(&fiber.context);
    fiber.context.uc_stack.ss_sp = stacks[tid].get();
    fiber.context.uc_stack.ss_size = kStackBytes;
    fiber.context.uc_link = &block.scheduler;
    makecontext(&fiber.context, fiber_main, 0);
  }
  while (block.live > 0) {
    block.progress = false;
    for (int tid = 0; tid < threads; ++tid) {
      if (block.fibers[tid].done) continue;
      block.current = tid;
      threadIdx = block.fibers[tid].index;
      swapcontext(&block.scheduler, &block.fibers[tid].context);
    }
    if (!block.progress && block.live > 0) {
      error_detail = "deadlock in block (" + std::to_string(blockIdx.x) + ", " +
                     std::to_string(blockIdx.y) + ", " + std::to_string(blockIdx.z) + "): " +
                     std::to_string(block.live) + " live threads wait for each other at " +
                     (block.arrived > 0 ? "__syncthreads (" + std::to_string(block.arrived) +
                                              " arrived)"
                                        : std::string("a warp exchange"));
      return false;
    }
  }
  return true;
}

bool valid_configuration(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  return grid.x > 0 && grid.y > 0 && grid.z > 0 && grid.x <= 0x7fffffffu && grid.y <= 65535 &&
         grid.z <= 65535 && threads > 0 && threads <= 1024 && block.z <= 64;
}

}  // namespace

void syncthreads() {
  Block& block = *running;
  const uint64_t generation = block.generation;
  block.progress = true;
  if (++block.arrived == block.live) {
    block.arrived = 0;
    ++block.generation;
    return;
  }
  while (block.generation == generation) yield();
}

int lane_id() { return running->current % warpSize; }

uint64_t warp_exchange(unsigned mask, uint64_t deposit, int source) {
  Block& block = *running;
  const int lane = lane_id();
  Warp& warp = block.warps[block.current / warpSize];
  const unsigned participants = mask & warp.live;
  if (!(participants >> lane & 1u)) {
    throw std::logic_error("warp exchange: lane " + std::to_string(lane) +
                           " called a shuffle or __syncwarp whose mask excludes it");
  }
  const uint64_t generation = warp.generation;
  uint64_t* slots = warp.slots[generation & 1];
  slots[lane] = deposit;
  if (warp.arrived == 0) {
    warp.expected = participants;
  } else if (warp.expected != participants) {
    throw std::logic_error("warp exchange: lanes of one warp passed different masks");
  }
  block.progress = true;
  ++warp.arrived;
  release_warp_if_complete(warp);
  while (warp.generation == generation) yield();
  // Reading an inactive lane is undefined on the device; the emulator returns
  // the caller's own value.
  return (participants >> source & 1u) ? slots[source] : deposit;
}

const char* last_error_detail() { return error_detail.c_str(); }

cudaError_t launch_grid(dim3 grid, dim3 shape, const std::function<void()>& body) {
  if (!valid_configuration(grid, shape)) {
    last_error = cudaErrorInvalidConfiguration;
    return last_error;
  }
  const int threads = static_cast<int>(shape.x * shape.y * shape.z);
  std::vector<std::unique_ptr<char[]>> stacks(threads);
  for (auto& stack : stacks) stack = std::make_unique<char[]>(kStackBytes);
  Block block;
  block.body = &body;
  Block* outer = running;
  running = &block;
  gridDim = grid;
  blockDim = shape;
  cudaError_t status = cudaSuccess;
  for (unsigned z = 0; z < grid.z && status == cudaSuccess; ++z) {
    for (unsigned y = 0; y < grid.y && status == cudaSuccess; ++y) {
      for (unsigned x = 0; x < grid.x && status == cudaSuccess; ++x) {
        blockIdx = {x, y, z};
        if (!run_block(block, shape, stacks) || block.error) status = cudaErrorLaunchFailure;
      }
    }
  }
  running = outer;
  if (block.error) {
    try {
      std::rethrow_exception(block.error);
    } catch (const std::exception& e) {
      error_detail = e.what();
    }
  }
  if (status != cudaSuccess) last_error = status;
  return status;
}

}  // namespace pyrt::simt

// --- runtime API ----------------------------------------------------------------------------
const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return pyrt::simt::last_error_detail();
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  const cudaError_t err = pyrt::simt::last_error;
  pyrt::simt::last_error = cudaSuccess;
  return err;
}

cudaError_t cudaPeekAtLastError() { return pyrt::simt::last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;  // the CPU, emulating one device
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }  // launches are synchronous

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
