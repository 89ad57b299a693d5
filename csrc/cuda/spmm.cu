// C = alpha * (A @ B) + beta * C for a CSR matrix A and dense B, C in float32
// on the GPU; pyrt.kernels.spmm / CSRPattern.matmul on cupy arrays land here,
// and so does pyrt.sparse.SparseLinear on "cuda".
//
//   A is (m, k) CSR: indptr (m+1,) int32, indices (nnz,) int32, values (nnz,)
//   b is (k, n), row stride ldb, unit column stride
//   c is (m, n), row stride ldc, unit column stride    device pointers
//
// Built into pyrt._cuda (nvcc) and pyrt._cuda_emulator (the same source on the
// CPU); checked against a dense numpy product by tests/cuda/test_cuda_spmm.py.
//
// Mapping. One warp owns one row of A and one slab of columns of B and C:
//
//   for each run of 32 nonzeros of the row:
//     lane l loads nonzero l of the run (its column and value: one coalesced
//       32-wide load of indices and one of values, instead of 32 lanes each
//       reading the same address)
//     for j in the run:                     (j is the same on every lane)
//       column, value = __shfl_sync from lane j
//       acc[lane's columns] += value * B[column, lane's columns]
//   C[row, lane's columns] = alpha * acc + beta * C
//
// Why a warp per row: a pruned layer's rows hold hundreds of nonzeros (4096
// columns at 90% zeros: ~410), each of which streams a whole row segment of B
// (n floats) while A contributes 8 bytes; the cost is reading B, so lanes
// spread across B's columns make each nonzero one contiguous 512-byte (or
// 1 KB) warp load, fully coalesced, and need no reduction between lanes. The
// row's nonzeros are loaded cooperatively and broadcast by shuffles so A is
// read once per warp, coalesced, and never through 32 redundant loads.
//
// Column slabs. With n % 4 == 0 and b, c and their row strides 16-byte
// aligned, a lane loads float4s (one 128-bit load per lane per nonzero: the
// fewest load instructions for the bytes moved). A warp's slab is 256 columns
// (two float4 a lane) when n > 128, so each broadcast nonzero (two shuffles
// and an address) feeds 8 FMAs instead of 4; 128 columns (one float4) when
// n <= 128, so narrow products do not leave half of every warp idle. Any other
// n or alignment takes the scalar path: lane l covers columns l, l+32, l+64,
// l+96 of a 128-column slab, so each of its four loads is still a coalesced
// 128-byte warp access. Wider products get more warps per row (one per slab),
// each re-reading the row's nonzeros, which cost 8 bytes against 512+ of B.
//
// Edges: warps past the last row exit whole (so every shuffle still has all
// 32 lanes); lanes past n skip their loads and stores; a row with no nonzeros
// stores beta * C (or zeros). Offsets into b and c are 64-bit, so any size.
#include "cuda/spmm.h"

#include <climits>
#include <cstring>

namespace pyrt::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;                  // 128 threads: small blocks keep the tail short
constexpr int kThreads = kWarpsPerBlock * kWarp;
constexpr int kVecWidth = 4;                       // floats per float4
constexpr int kScalarPerLane = 4;                  // scalar path: columns per lane
constexpr int kScalarSlab = kWarp * kScalarPerLane;  // 128 columns
constexpr unsigned kFullMask = 0xffffffffu;

// The nonzeros of a row are broadcast from registers in runs of 32; unrolling
// by 4 lets the device issue four independent B loads before the first FMA
// needs its data. The host compiler (emulation) does not know the pragma.
#ifdef __CUDA_ARCH__
#define PYRT_SPMM_UNROLL _Pragma("unroll 4")
#else
#define PYRT_SPMM_UNROLL
#endif

struct SpmmParams {
  int64_t m, n;
  float alpha, beta;
  const int32_t* indptr;   // (m+1,)
  const int32_t* indices;  // (nnz,)
  const float* values;     // (nnz,)
  const float* b;          // (k, n), row stride ldb
  int64_t ldb;
  float* c;                // (m, n), row stride ldc
  int64_t ldc;
  int64_t slabs;           // column slabs per row; warp w owns row w / slabs, slab w % slabs
};

__host__ __device__ inline float4 load_float4(const float* p) {
#ifdef __CUDA_ARCH__
  return __ldg(reinterpret_cast<const float4*>(p));
#else
  return *reinterpret_cast<const float4*>(p);
#endif
}

__host__ __device__ inline float load_float(const float* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}

__host__ __device__ inline int load_index(const int32_t* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}

// The warp's row and first column; false when the warp is past the last row.
__host__ __device__ inline bool warp_task(const SpmmParams& p, int64_t slab_width, int64_t* row,
                                          int64_t* col0) {
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  *row = warp / p.slabs;
  *col0 = (warp % p.slabs) * slab_width;
  return *row < p.m;
}

// Lane `lane` holds nonzero base + lane of the current run (0 past the run's end).
struct Run {
  int column;
  float value;
};

__host__ __device__ inline Run load_run(const SpmmParams& p, int base, int count, int lane) {
  Run r{0, 0.0f};
  if (lane < count) {
    r.column = load_index(p.indices + base + lane);
    r.value = load_float(p.values + base + lane);
  }
  return r;
}

// out = alpha * acc + beta * out; out is not read when beta == 0.
__host__ __device__ inline float epilogue(float acc, float alpha, float beta, const float* out) {
  return beta == 0.0f ? alpha * acc : fmaf(beta, *out, alpha * acc);
}

// Vector path: lane `lane` covers columns col0 + 128*v + 4*lane .. +3 for v < kVecs.
template <int kVecs>
__global__ void __launch_bounds__(kThreads) spmm_rows_vec4(const SpmmParams p) {
  constexpr int64_t kSlab = static_cast<int64_t>(kWarp) * kVecWidth * kVecs;
  int64_t row, col0;
  if (!warp_task(p, kSlab, &row, &col0)) return;  // the whole warp: row is warp-uniform
  const int lane = static_cast<int>(threadIdx.x % kWarp);

  bool inside[kVecs];  // n % 4 == 0, so a float4 is wholly inside or wholly outside
  float4 acc[kVecs];
PYRT_UNROLL
  for (int v = 0; v < kVecs; ++v) {
    inside[v] = col0 + v * kWarp * kVecWidth + lane * kVecWidth < p.n;
    acc[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  const float* b_lane = p.b + col0 + lane * kVecWidth;  // dereferenced only when inside

  const int begin = p.indptr[row];
  const int end = p.indptr[row + 1];
  for (int base = begin; base < end; base += kWarp) {
    const int count = end - base < kWarp ? end - base : kWarp;  // warp-uniform
    const Run run = load_run(p, base, count, lane);
PYRT_SPMM_UNROLL
    for (int j = 0; j < count; ++j) {
      const int column = __shfl_sync(kFullMask, run.column, j);
      const float value = __shfl_sync(kFullMask, run.value, j);
      const float* b_row = b_lane + static_cast<int64_t>(column) * p.ldb;
PYRT_UNROLL
      for (int v = 0; v < kVecs; ++v) {
        if (!inside[v]) continue;
        const float4 x = load_float4(b_row + v * kWarp * kVecWidth);
        acc[v].x = fmaf(value, x.x, acc[v].x);
        acc[v].y = fmaf(value, x.y, acc[v].y);
        acc[v].z = fmaf(value, x.z, acc[v].z);
        acc[v].w = fmaf(value, x.w, acc[v].w);
      }
    }
  }

  float* c_lane = p.c + row * p.ldc + col0 + lane * kVecWidth;
PYRT_UNROLL
  for (int v = 0; v < kVecs; ++v) {
    if (!inside[v]) continue;
    float4* out = reinterpret_cast<float4*>(c_lane + v * kWarp * kVecWidth);
    float4 result;
    if (p.beta == 0.0f) {  // c may hold garbage: never read it
      result = make_float4(p.alpha * acc[v].x, p.alpha * acc[v].y, p.alpha * acc[v].z,
                           p.alpha * acc[v].w);
    } else {
      const float4 old = *out;
      result = make_float4(fmaf(p.beta, old.x, p.alpha * acc[v].x), fmaf(p.beta, old.y, p.alpha * acc[v].y),
                           fmaf(p.beta, old.z, p.alpha * acc[v].z), fmaf(p.beta, old.w, p.alpha * acc[v].w));
    }
    *out = result;
  }
}

// Scalar path: lane `lane` covers columns col0 + lane + 32*s for s < kScalarPerLane.
__global__ void __launch_bounds__(kThreads) spmm_rows_scalar(const SpmmParams p) {
  int64_t row, col0;
  if (!warp_task(p, kScalarSlab, &row, &col0)) return;  // the whole warp
  const int lane = static_cast<int>(threadIdx.x % kWarp);

  bool inside[kScalarPerLane];
  float acc[kScalarPerLane];
PYRT_UNROLL
  for (int s = 0; s < kScalarPerLane; ++s) {
    inside[s] = col0 + s * kWarp + lane < p.n;
    acc[s] = 0.0f;
  }
  const float* b_lane = p.b + col0 + lane;  // dereferenced only when inside

  const int begin = p.indptr[row];
  const int end = p.indptr[row + 1];
  for (int base = begin; base < end; base += kWarp) {
    const int count = end - base < kWarp ? end - base : kWarp;  // warp-uniform
    const Run run = load_run(p, base, count, lane);
PYRT_SPMM_UNROLL
    for (int j = 0; j < count; ++j) {
      const int column = __shfl_sync(kFullMask, run.column, j);
      const float value = __shfl_sync(kFullMask, run.value, j);
      const float* b_row = b_lane + static_cast<int64_t>(column) * p.ldb;
PYRT_UNROLL
      for (int s = 0; s < kScalarPerLane; ++s) {
        if (inside[s]) acc[s] = fmaf(value, load_float(b_row + s * kWarp), acc[s]);
      }
    }
  }

  float* c_lane = p.c + row * p.ldc + col0 + lane;
PYRT_UNROLL
  for (int s = 0; s < kScalarPerLane; ++s) {
    if (inside[s]) c_lane[s * kWarp] = epilogue(acc[s], p.alpha, p.beta, c_lane + s * kWarp);
  }
}

int64_t ceil_div(int64_t x, int64_t y) { return x / y + (x % y != 0); }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

const char* spmm_path(int64_t n, const float* b, int64_t ldb, const float* c, int64_t ldc) {
  // Every float4 a lane touches starts 4-float aligned from a 16-byte aligned row start.
  const bool vec = n % kVecWidth == 0 && ldb % kVecWidth == 0 && ldc % kVecWidth == 0 && aligned16(b) &&
                   aligned16(c);
  if (!vec) return "scalar";
  return n > kWarp * kVecWidth ? "vec4x2" : "vec4";
}

cudaError_t spmm_csr(int64_t m, int64_t n, int64_t k, float alpha,
                     const int32_t* indptr, const int32_t* indices, const float* values,
                     const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                     cudaStream_t stream) {
  if (m < 0 || n < 0 || k < 0) return cudaErrorInvalidValue;
  if (m == 0 || n == 0) return cudaSuccess;

  const char* path = spmm_path(n, b, ldb, c, ldc);
  const bool wide = std::strcmp(path, "vec4x2") == 0;
  const bool vec = std::strcmp(path, "vec4") == 0;
  const int64_t slab = wide ? 2 * kWarp * kVecWidth : vec ? kWarp * kVecWidth : kScalarSlab;
  const int64_t slabs = ceil_div(n, slab);
  if (m > (INT64_MAX / slabs)) return cudaErrorInvalidValue;
  const int64_t blocks = ceil_div(m * slabs, kWarpsPerBlock);
  if (blocks > INT_MAX) return cudaErrorInvalidValue;  // gridDim.x limit
  const SpmmParams p{m, n, alpha, beta, indptr, indices, values, b, ldb, c, ldc, slabs};
  const auto grid = static_cast<unsigned>(blocks);
  if (wide) {
    PYRT_LAUNCH(spmm_rows_vec4<2>, grid, kThreads, stream, p);
  } else if (vec) {
    PYRT_LAUNCH(spmm_rows_vec4<1>, grid, kThreads, stream, p);
  } else {
    PYRT_LAUNCH(spmm_rows_scalar, grid, kThreads, stream, p);
  }
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
