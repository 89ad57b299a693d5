// C = alpha * (A @ B) + beta * C in float32 on the GPU, for operands of any
// element strides; pyrt.kernels.matmul on cupy arrays lands here.
//
//   a is (m, k), strides (rsa, csa)    b is (k, n), strides (rsb, csb)
//   c is (m, n), strides (rsc, csc)    device pointers; strides in elements
//
// Built into pyrt._cuda by CMakeLists.txt; checked against numpy by
// `pytest tests/cuda/test_cuda_sgemm.py` (skipped without cupy and a GPU).
//
// Tiling. A block of 256 threads owns a 128 x 128 tile of C and walks k in
// steps of 8:
//
//   for k0 in 0, 8, 16, ... < k:
//     A[row0 : row0+128, k0 : k0+8]  -> shared as[8][128]   (both k-major)
//     B[k0 : k0+8, col0 : col0+128]  -> shared bs[8][128]
//     every thread: acc[8][8] += outer product of its 8 rows of as[kk]
//                                and its 8 columns of bs[kk], kk = 0..7
//   every thread: C[its 8 rows, its 8 columns] = alpha * acc + beta * C
//
// Why: an 8 x 8 register accumulator turns 16 shared-memory reads into 64
// FMAs per kk, so the inner loop runs from registers rather than at the speed
// of shared memory; a 128 x 128 tile reuses every element brought from global
// memory 128 times; kBlockK = 8 keeps shared memory at 8.4 KB per block, and
// __launch_bounds__ caps registers at 128 a thread (no spills), so two blocks
// share an SM and hide each other's latency. The next tile's
// global loads are issued into registers before the current tile's FMAs, so
// their latency overlaps the math.
//
// Layout details that matter for speed:
// - Shared tiles are k-major (as[kk][row]) so a thread reads its rows with
//   float4 loads. A thread's 8 rows are two runs of 4, 64 apart (4*ty .. 4*ty+3
//   and 64+4*ty .. 64+4*ty+3), likewise its columns, so a warp's float4 reads
//   cover consecutive addresses without bank conflicts.
// - Global loads walk whichever dimension of an operand has the smaller stride
//   (k for a row-major A, m for a transposed A), so a warp's loads coalesce for
//   any transpose; shared rows are padded by 4 floats so the transposing store
//   into shared memory is free of bank conflicts as well.
// - Elements past the edge of A or B load as 0 and outputs past the edge of C
//   are not stored, so any m, n, k works; offsets are 64-bit, so any stride.
//
// The phases of a tile step are __host__ __device__ functions that take the
// thread index, so the index math can be run and checked on a CPU one
// simulated thread at a time; the kernel only strings them together between
// barriers.
#include "cuda/gemm.h"

#include <algorithm>
#include <climits>

namespace pyrt::cuda {
namespace {

constexpr int kBlockM = 128;  // rows of C per block
constexpr int kBlockN = 128;  // columns of C per block
constexpr int kBlockK = 8;    // depth of one shared-memory tile
constexpr int kThreadM = 8;   // rows of C per thread
constexpr int kThreadN = 8;   // columns of C per thread
constexpr int kThreadsN = kBlockN / kThreadN;                  // 16
constexpr int kThreads = (kBlockM / kThreadM) * kThreadsN;     // 256
constexpr int kLoadsPerThread = kBlockM * kBlockK / kThreads;  // 4 of A and 4 of B
constexpr int kSmemPad = 4;  // keeps rows 16-byte aligned and shifts banks by 4
static_assert(kBlockM == kBlockN, "A and B tiles share one loader and one shared layout");
static_assert(kThreadM == 8 && kThreadN == 8, "fragments are two float4 runs");
static_assert(kThreads % kBlockK == 0 && kThreads % kBlockM == 0, "loads tile evenly");

// A shared tile, k-major: tile[kk][r] is element (r, kk) of a 128 x 8 slice of
// A, or of B^T.
using SharedTile = float[kBlockK][kBlockM + kSmemPad];

// One thread's share of copying a 128 x 8 tile of an operand X, which is
// (rows, k) with element strides (rs, ks), into a SharedTile. A is loaded as
// X = A; B as X = B^T: rows = n, strides (csb, rsb). The thread's elements are
// in-tile (r + i*dr, kk + i*dk) for i < kLoadsPerThread.
struct TileLoader {
  const float* next;  // element (row0 + r, k0 + kk) of the tile to load next
  int64_t step;       // pointer distance between this thread's elements
  int64_t advance;    // pointer distance from one k tile to the next
  int64_t rows_left;  // rows of X from row0 on
  int r, dr, kk, dk;
};

__host__ __device__ inline TileLoader make_loader(const float* x, int64_t rows, int64_t rs,
                                                  int64_t ks, int64_t row0, int tid) {
  TileLoader l;
  const bool along_k = (ks < 0 ? -ks : ks) < (rs < 0 ? -rs : rs);
  if (along_k) {  // 8 neighbouring threads read one row's 8 k values
    l.kk = tid % kBlockK;
    l.r = tid / kBlockK;
    l.dk = 0;
    l.dr = kThreads / kBlockK;
  } else {  // 128 neighbouring threads read one k's 128 rows
    l.r = tid % kBlockM;
    l.kk = tid / kBlockM;
    l.dr = 0;
    l.dk = kThreads / kBlockM;
  }
  l.next = x + (row0 + l.r) * rs + l.kk * ks;  // dereferenced only when inside X
  l.step = l.dr * rs + l.dk * ks;
  l.advance = kBlockK * ks;
  l.rows_left = rows - row0;
  return l;
}

__host__ __device__ inline float load_readonly(const float* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}

// Global memory -> registers for the tile at k0; zero outside X.
__host__ __device__ inline void load_tile(TileLoader& l, int64_t k0, int64_t k,
                                          float (&regs)[kLoadsPerThread]) {
PYRT_UNROLL
  for (int i = 0; i < kLoadsPerThread; ++i) {
    const bool inside = l.r + i * l.dr < l.rows_left && k0 + l.kk + i * l.dk < k;
    regs[i] = inside ? load_readonly(l.next + i * l.step) : 0.0f;
  }
  l.next += l.advance;
}

// Registers -> shared memory, transposing to k-major.
__host__ __device__ inline void store_tile(const TileLoader& l,
                                           const float (&regs)[kLoadsPerThread],
                                           SharedTile& tile) {
PYRT_UNROLL
  for (int i = 0; i < kLoadsPerThread; ++i) {
    tile[l.kk + i * l.dk][l.r + i * l.dr] = regs[i];
  }
}

// The thread's i-th row (or column) inside the tile: two runs of 4, half a
// tile apart. `fragment` below reads exactly these with two float4 loads.
__host__ __device__ inline int thread_offset(int t, int i) {
  return (i / 4) * (kBlockM / 2) + t * 4 + i % 4;
}

__host__ __device__ inline void fragment(const float* tile_row, int t, float (&out)[8]) {
  const float4 lo = *reinterpret_cast<const float4*>(tile_row + t * 4);
  const float4 hi = *reinterpret_cast<const float4*>(tile_row + kBlockM / 2 + t * 4);
  out[0] = lo.x, out[1] = lo.y, out[2] = lo.z, out[3] = lo.w;
  out[4] = hi.x, out[5] = hi.y, out[6] = hi.z, out[7] = hi.w;
}

// acc += (this thread's rows of as) x (this thread's columns of bs) over the tile.
__host__ __device__ inline void multiply_tile(const SharedTile& as, const SharedTile& bs, int ty,
                                              int tx, float (&acc)[kThreadM][kThreadN]) {
PYRT_UNROLL
  for (int kk = 0; kk < kBlockK; ++kk) {
    float a[kThreadM], b[kThreadN];
    fragment(as[kk], ty, a);
    fragment(bs[kk], tx, b);
PYRT_UNROLL
    for (int i = 0; i < kThreadM; ++i) {
PYRT_UNROLL
      for (int j = 0; j < kThreadN; ++j) {
        acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
  }
}

struct GemmParams {
  int64_t m, n, k;
  float alpha, beta;
  const float* a;
  int64_t rsa, csa;
  const float* b;
  int64_t rsb, csb;
  float* c;
  int64_t rsc, csc;
  int64_t tiles_n;  // tiles across n; block b owns tile (b / tiles_n, b % tiles_n)
};

// C[its rows, its columns] = alpha * acc + beta * C, inside C only; C is not
// read when beta == 0.
__host__ __device__ inline void store_c(const GemmParams& p, int64_t row0, int64_t col0, int ty,
                                        int tx, const float (&acc)[kThreadM][kThreadN]) {
PYRT_UNROLL
  for (int i = 0; i < kThreadM; ++i) {
    const int64_t row = row0 + thread_offset(ty, i);
    if (row >= p.m) continue;
PYRT_UNROLL
    for (int j = 0; j < kThreadN; ++j) {
      const int64_t col = col0 + thread_offset(tx, j);
      if (col >= p.n) continue;
      float* out = p.c + row * p.rsc + col * p.csc;
      const float value = p.alpha * acc[i][j];
      *out = p.beta == 0.0f ? value : fmaf(p.beta, *out, value);
    }
  }
}

// At most 128 registers a thread, so two blocks (16 warps) fit on an SM.
__global__ void __launch_bounds__(kThreads, 2) sgemm_tiled(const GemmParams p) {
  __shared__ __align__(16) SharedTile as;
  __shared__ __align__(16) SharedTile bs;
  const int tid = static_cast<int>(threadIdx.x);
  const int ty = tid / kThreadsN;
  const int tx = tid % kThreadsN;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x / p.tiles_n) * kBlockM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x % p.tiles_n) * kBlockN;

  TileLoader a_loader = make_loader(p.a, p.m, p.rsa, p.csa, row0, tid);
  TileLoader b_loader = make_loader(p.b, p.n, p.csb, p.rsb, col0, tid);  // as B^T
  float a_regs[kLoadsPerThread], b_regs[kLoadsPerThread];
  float acc[kThreadM][kThreadN] = {};

  load_tile(a_loader, 0, p.k, a_regs);
  load_tile(b_loader, 0, p.k, b_regs);
  for (int64_t k0 = 0; k0 < p.k; k0 += kBlockK) {
    store_tile(a_loader, a_regs, as);
    store_tile(b_loader, b_regs, bs);
    __syncthreads();
    if (k0 + kBlockK < p.k) {  // in flight while the FMAs below run
      load_tile(a_loader, k0 + kBlockK, p.k, a_regs);
      load_tile(b_loader, k0 + kBlockK, p.k, b_regs);
    }
    multiply_tile(as, bs, ty, tx, acc);
    __syncthreads();  // everyone is done reading before the next store
  }
  store_c(p, row0, col0, ty, tx, acc);
}

// c = beta * c, for alpha == 0 or k == 0, where A and B need not be read.
__global__ void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t rsc, int64_t csc) {
  const int64_t total = m * n;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += stride) {
    float* out = c + (idx / n) * rsc + (idx % n) * csc;
    *out = beta == 0.0f ? 0.0f : beta * *out;
  }
}

int64_t ceil_div(int64_t x, int64_t y) { return x / y + (x % y != 0); }

}  // namespace

cudaError_t sgemm(int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t rsa, int64_t csa,
                  const float* b, int64_t rsb, int64_t csb,
                  float beta, float* c, int64_t rsc, int64_t csc,
                  cudaStream_t stream) {
  if (m < 0 || n < 0 || k < 0) return cudaErrorInvalidValue;
  if (m == 0 || n == 0) return cudaSuccess;

  if (alpha == 0.0f || k == 0) {
    if (beta == 1.0f) return cudaSuccess;
    constexpr int kScaleThreads = 256;
    const int64_t blocks = std::min<int64_t>(ceil_div(m * n, kScaleThreads), 65536);
    PYRT_LAUNCH(scale_c, static_cast<unsigned>(blocks), kScaleThreads, stream, m, n, beta, c, rsc, csc);
    return cudaGetLastError();
  }

  const int64_t tiles_m = ceil_div(m, kBlockM);
  const int64_t tiles_n = ceil_div(n, kBlockN);
  if (tiles_m > INT_MAX / tiles_n) return cudaErrorInvalidValue;  // gridDim.x limit
  const GemmParams p{m, n, k, alpha, beta, a, rsa, csa, b, rsb, csb, c, rsc, csc, tiles_n};
  PYRT_LAUNCH(sgemm_tiled, static_cast<unsigned>(tiles_m * tiles_n), kThreads, stream, p);
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
